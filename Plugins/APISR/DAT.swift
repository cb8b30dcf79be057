import Foundation
import LapseNN
import LapseTensor

/// DAT (Chen et al., ICCV 2023), APISR's "DAT-small" 4× generator: alternating spatial-window and channel
/// self-attention blocks, each fused with a depthwise-conv branch through adaptive interaction gates, and SGFN.
///
/// Position biases depend only on the split size and are evaluated at load time; shift masks and the
/// internal zero padding of the spatial branch follow the input size.
public final class DATNetwork: UpscaleNetwork, @unchecked Sendable {
    /// Always "DAT".
    public let architecture = "DAT"
    /// From the pixel-shuffle convolution's output channels (×4 for APISR's release).
    public var scale: Int { config.scale }
    /// Any size works: the spatial attention pads its projections inside, like the reference.
    public let sizeMultiple = 1
    /// One full spatial window (the larger split side).
    public var minimumTile: Int { config.splitSize.max() ?? 16 }
    /// 180-channel token maps times the qkv/ffn expansions, plus per-window attention matrices; measured peak
    /// RSS grows ~73 KB per input pixel (32² → 64²).
    public let bytesPerInputPixel = 80_000

    let config: Config
    /// Channels of the transformer body.
    public var embedDim: Int { config.embedDim }
    /// Blocks per residual group.
    public var depths: [Int] { config.depths }
    /// Attention heads per residual group.
    public var heads: [Int] { config.heads }
    /// Spatial window height and width of branch 0 (branch 1 uses the transpose).
    public var splitSize: [Int] { config.splitSize }
    /// Hidden width of the SGFN feed-forward (before its gate halves it).
    public var ffnHidden: Int { config.ffnHidden }
    private let rgbMean: [Float] = [0.4488, 0.4371, 0.4040]
    private let convFirst: Conv2DLayer
    private let normBefore: NormLayer
    private let groups: [Group]
    private let norm: NormLayer
    private let convAfterBody: Conv2DLayer
    private let upsample: Conv2DLayer

    /// True when the key layout is DAT's (`before_RG` norm, alternating spatial/channel attention).
    public static func canLoad(_ keys: Set<String>) -> Bool {
        keys.contains("conv_first.weight") && keys.contains("before_RG.1.weight")
            && keys.contains("layers.0.blocks.0.attn.qkv.weight")
            && (keys.contains("layers.0.blocks.0.attn.attns.0.pos.pos_proj.weight") || keys.contains("layers.0.blocks.1.attn.temperature"))
    }

    /// Elements of shifted-window attention mask materialised at once (bounds memory on large inputs).
    public let attentionMaskBudget: Int

    /// Builds the network from an unwrapped state dict; size-dependent mask buffers in the file are ignored.
    /// `attentionMaskBudget` (mask elements per group of windows) trades memory for fewer, larger attention calls.
    public init(stateDict: [String: Tensor], attentionMaskBudget: Int = 1 << 22) throws {
        self.attentionMaskBudget = max(1, attentionMaskBudget)
        let r = WeightReader(stateDict: stateDict, transformer: "DAT")
        let cfg = try Self.inferConfig(r)
        config = cfg
        let c = cfg.embedDim
        convFirst = try Conv2DLayer(r, "conv_first.", in: cfg.inChannels, out: c, kernel: 3)
        normBefore = try NormLayer(r, "before_RG.1.", channels: c, eps: 1e-5)
        var groups: [Group] = []
        for i in 0..<cfg.depths.count {
            var blocks: [Block] = []
            for j in 0..<cfg.depths[i] {
                blocks.append(try Block(r, prefix: "layers.\(i).blocks.\(j)", group: i, index: j, heads: cfg.heads[i], config: cfg))
            }
            groups.append(Group(blocks: blocks, conv: try Conv2DLayer(r, "layers.\(i).conv.", in: c, out: c, kernel: 3)))
        }
        self.groups = groups
        norm = try NormLayer(r, "norm.", channels: c, eps: 1e-5)
        convAfterBody = try Conv2DLayer(r, "conv_after_body.", in: c, out: c, kernel: 3)
        upsample = try Conv2DLayer(r, "upsample.0.", in: c, out: cfg.scale * cfg.scale * cfg.inChannels, kernel: 3)
    }

    /// `[1, 3, H, W]` in [0, 1] → `[1, 3, sH, sW]`.
    public func forward(_ input: Tensor) throws -> Tensor {
        guard input.rank == 4, input.shape[0] == 1, input.shape[1] == config.inChannels else {
            throw TransformerUpscalerError.badInput(architecture: architecture, shape: input.shape)
        }
        let h = input.shape[2], w = input.shape[3]
        let meanTensor = Tensor(shape: [1, 3, 1, 1], data: rgbMean)
        let first = convFirst(input - meanTensor)
        var t = normBefore.layer(TransformerWindows.tokens(first))
        let geometry = Geometry(height: h, width: w, split: config.splitSize, budget: attentionMaskBudget)
        for group in groups {
            var x = t
            for block in group.blocks { x = block(x, geometry: geometry) }
            t = t + TransformerWindows.tokens(group.conv(TransformerWindows.image(x, height: h, width: w)))
        }
        t = norm.layer(t)
        let y = convAfterBody(TransformerWindows.image(t, height: h, width: w)) + first
        return pixelShuffle(upsample(y), factor: config.scale) + meanTensor
    }
}

extension DATNetwork {
    /// Input-size dependent layout of the spatial branches: padded size and the two shift masks.
    struct Geometry {
        let height: Int, width: Int
        let paddedHeight: Int, paddedWidth: Int
        /// Shift masks of branch 0 (split[0]×split[1] windows) and branch 1 (transposed windows).
        let masks: [TransformerWindows.ShiftMask]
        let budget: Int

        init(height: Int, width: Int, split: [Int], budget: Int) {
            self.budget = budget
            self.height = height
            self.width = width
            let m = split.max() ?? 1
            let ph = height + (m - height % m) % m, pw = width + (m - width % m) % m
            paddedHeight = ph
            paddedWidth = pw
            masks = (0..<2).map { b in
                let win = SpatialBranch.window(branch: b, split: split)
                return TransformerWindows.ShiftMask(height: ph, width: pw, window: win, shift: (win.0 / 2, win.1 / 2))
            }
        }
    }

    struct Group {
        let blocks: [Block]
        let conv: Conv2DLayer
    }

    /// The adaptive interaction module's two gates (1×1 conv → BN → GELU → 1×1 conv), applied to `[tokens, C]`
    /// rows: a 1×1 convolution is a linear layer per pixel, and staying in token layout saves two transposes.
    struct Gate {
        let fc1: LinearLayer, bn: BatchNormLayer, fc2: LinearLayer
        init(_ r: WeightReader, prefix: String, indices: (Int, Int, Int), in c: Int, hidden: Int, out: Int) throws {
            let conv1 = try Conv2DLayer(r, "\(prefix).\(indices.0).", in: c, out: hidden, kernel: 1)
            let conv2 = try Conv2DLayer(r, "\(prefix).\(indices.2).", in: hidden, out: out, kernel: 1)
            fc1 = LinearLayer(weight: conv1.weight.reshaped([hidden, c]), bias: conv1.bias)
            bn = try BatchNormLayer(r, "\(prefix).\(indices.1).", channels: hidden)
            fc2 = LinearLayer(weight: conv2.weight.reshaped([out, hidden]), bias: conv2.bias)
        }
        /// `[rows, C]` → `[rows, out]`.
        func callAsFunction(_ x: Tensor) -> Tensor { fc2(gelu(bn(fc1(x)))) }
    }

    /// Depthwise 3×3 conv → BN → GELU, the convolution branch beside each attention, on `[L, C]` tokens
    /// (the inference BatchNorm is folded into the convolution).
    struct DepthwiseBranch {
        let conv: TransformerWindows.DepthwiseConv3x3
        init(_ r: WeightReader, prefix: String, dim: Int) throws {
            let c = try Conv2DLayer(r, prefix + ".0.", in: dim, out: dim, kernel: 3, groups: dim)
            let bn = try BatchNormLayer(r, prefix + ".1.", channels: dim)
            let mean = bn.mean.scalars, variance = bn.variance.scalars, gamma = bn.weight.scalars, beta = bn.bias.scalars
            let scale = (0..<dim).map { gamma[$0] / (variance[$0] + 1e-5).squareRoot() }
            let shift = (0..<dim).map { beta[$0] - mean[$0] * scale[$0] }
            conv = TransformerWindows.DepthwiseConv3x3(weight: c.weight, bias: c.bias, scale: scale, shift: shift)
        }
        func callAsFunction(_ x: Tensor, height: Int, width: Int) -> Tensor { gelu(conv(x, height: height, width: width)) }
    }

    /// Dynamic position bias of one spatial branch, evaluated for its window at load time: `[1, heads, N, N]`.
    struct SpatialBranch {
        let window: (Int, Int)
        let heads: Int
        let bias: Tensor

        static func window(branch: Int, split: [Int]) -> (Int, Int) {
            branch == 0 ? (split[0], split[1]) : (split[1], split[0])
        }

        init(_ r: WeightReader, prefix: String, branch: Int, dim: Int, heads: Int, split: [Int]) throws {
            window = Self.window(branch: branch, split: split)
            self.heads = heads
            let posDim = dim / 4 / 4
            let p = prefix + ".pos"
            let proj = try LinearLayer(r, p + ".pos_proj.", in: 2, out: posDim)
            var layers: [(NormLayer, LinearLayer)] = []
            for (name, out) in [("pos1", posDim), ("pos2", posDim), ("pos3", heads)] {
                layers.append((try NormLayer(r, "\(p).\(name).0.", channels: posDim, eps: 1e-5), try LinearLayer(r, "\(p).\(name).2.", in: posDim, out: out)))
            }
            let (hs, ws) = window
            var coords: [Float] = []
            for dy in (1 - hs)..<hs { for dx in (1 - ws)..<ws { coords += [Float(dy), Float(dx)] } }
            var pos = proj(Tensor(shape: [coords.count / 2, 2], data: coords))
            for (n, l) in layers { pos = l(relu(n.layer(pos))) }                      // [(2hs−1)(2ws−1), heads]
            var index: [[Int]] = []
            for i in 0..<(hs * ws) {
                index.append((0..<(hs * ws)).map { j in
                    (i / ws - j / ws + hs - 1) * (2 * ws - 1) + (i % ws - j % ws + ws - 1)
                })
            }
            bias = TransformerWindows.gatherBias(table: pos, index: index).reshaped([1, heads, hs * ws, hs * ws])
        }
    }

    /// One DATB: norm → (spatial | channel) attention → residual, norm → SGFN → residual.
    struct Block {
        let norm1: NormLayer, norm2: NormLayer
        let qkv: LinearLayer, proj: LinearLayer
        let dwconv: DepthwiseBranch
        let channelGate: Gate, spatialGate: Gate
        let spatial: [SpatialBranch]        // empty for channel-attention blocks
        let temperature: Tensor?            // [heads, 1, 1] for channel-attention blocks
        let heads: Int
        let shifted: Bool
        let splitSize: [Int]
        let fc1: LinearLayer, fc2: LinearLayer
        let sgNorm: NormLayer, sgConv: TransformerWindows.DepthwiseConv3x3

        init(_ r: WeightReader, prefix: String, group: Int, index: Int, heads: Int, config: Config) throws {
            let c = config.embedDim
            let a = prefix + ".attn"
            norm1 = try NormLayer(r, prefix + ".norm1.", channels: c, eps: 1e-5)
            norm2 = try NormLayer(r, prefix + ".norm2.", channels: c, eps: 1e-5)
            qkv = try LinearLayer(r, a + ".qkv.", in: c, out: 3 * c, bias: .ifPresent)
            proj = try LinearLayer(r, a + ".proj.", in: c, out: c)
            dwconv = try DepthwiseBranch(r, prefix: a + ".dwconv", dim: c)
            channelGate = try Gate(r, prefix: a + ".channel_interaction", indices: (1, 2, 4), in: c, hidden: c / 8, out: c)
            spatialGate = try Gate(r, prefix: a + ".spatial_interaction", indices: (0, 1, 3), in: c, hidden: c / 16, out: 1)
            self.heads = heads
            splitSize = config.splitSize
            if index % 2 == 0 {
                guard heads % 2 == 0, (c / 2) % (heads / 2) == 0 else {
                    throw TransformerUpscalerError.unsupported(architecture: "DAT", detail: "\(heads) heads do not split \(c) channels in two branches")
                }
                spatial = try (0..<2).map {
                    try SpatialBranch(r, prefix: "\(a).attns.\($0)", branch: $0, dim: c / 2, heads: heads / 2, split: config.splitSize)
                }
                temperature = nil
            } else {
                guard c % heads == 0 else {
                    throw TransformerUpscalerError.unsupported(architecture: "DAT", detail: "\(heads) heads do not divide \(c) channels")
                }
                spatial = []
                temperature = try r(a + ".temperature", [heads, 1, 1])
            }
            // Shifted windows on blocks 2, 6, … of even groups and 0, 4, … of odd groups (DAT's schedule).
            shifted = index % 2 == 0 && (group % 2 == 0 ? (index > 0 && (index - 2) % 4 == 0) : index % 4 == 0)
            fc1 = try LinearLayer(r, prefix + ".ffn.fc1.", in: c, out: config.ffnHidden)
            sgNorm = try NormLayer(r, prefix + ".ffn.sg.norm.", channels: config.ffnHidden / 2, eps: 1e-5)
            let sg = try Conv2DLayer(r, prefix + ".ffn.sg.conv.", in: config.ffnHidden / 2, out: config.ffnHidden / 2, kernel: 3,
                                groups: config.ffnHidden / 2)
            sgConv = TransformerWindows.DepthwiseConv3x3(weight: sg.weight, bias: sg.bias)
            fc2 = try LinearLayer(r, prefix + ".ffn.fc2.", in: config.ffnHidden / 2, out: c)
        }

        func callAsFunction(_ x: Tensor, geometry g: Geometry) -> Tensor {
            let n = norm1.layer(x)
            let a = spatial.isEmpty ? channelAttention(n, g) : spatialAttention(n, g)
            let y = x + a
            return y + ffn(norm2.layer(y), g)
        }

        /// SGFN: fc1 → GELU → (x1 · dwconv(norm(x2))) → fc2.
        private func ffn(_ x: Tensor, _ g: Geometry) -> Tensor {
            let hidden = gelu(fc1(x))
            let halves = chunk(hidden, 2, axis: 1)
            let gate = sgConv(sgNorm.layer(halves[1]), height: g.height, width: g.width)
            return fc2(halves[0] * gate)
        }

        private func spatialAttention(_ x: Tensor, _ g: Geometry) -> Tensor {
            let c = x.shape[1]
            let all = qkv(x)                                                       // [L, 3C] = [H, W, 3, C]
            let v = split(all, sizes: [2 * c, c], axis: 1)[1]
            // The reference zero-pads the projections (not the input), so padded keys/values are exact zeros.
            let padded = TransformerWindows.padChannelsLast(all.reshaped([g.height, g.width, 3 * c]), height: g.height, width: g.width,
                                                   toHeight: g.paddedHeight, toWidth: g.paddedWidth)
                .reshaped([g.paddedHeight, g.paddedWidth, 3, c])
            var outs: [Tensor] = []
            for (b, branch) in spatial.enumerated() {
                var m = slice(padded, axis: 3, start: b * c / 2, end: (b + 1) * c / 2)
                let win = branch.window
                if shifted { m = roll(m, shifts: [-win.0 / 2, -win.1 / 2], axes: [0, 1]) }
                let p = TransformerWindows.partition(m, height: g.paddedHeight, width: g.paddedWidth, window: win, parts: 3, heads: branch.heads)
                let d = c / 2 / branch.heads
                let scale = 1 / Float(d).squareRoot()
                let o = TransformerWindows.windowedAttention(
                    q: TransformerWindows.part(p, 0), k: TransformerWindows.part(p, 1), v: TransformerWindows.part(p, 2),
                    bias: branch.bias, shiftMask: shifted ? g.masks[b] : nil, budget: g.budget
                ) { q, k, v, mask in attention(query: q, key: k, value: v, mask: mask, scale: scale) }
                var img = TransformerWindows.merge(o, height: g.paddedHeight, width: g.paddedWidth, window: win)
                if shifted { img = roll(img, shifts: [win.0 / 2, win.1 / 2], axes: [0, 1]) }
                outs.append(TransformerWindows.cropChannelsLast(img, fromWidth: g.paddedWidth, height: g.height, width: g.width)
                    .reshaped([g.height * g.width, c / 2]))
            }
            let attended = concat(outs, axis: 1)                                   // [L, C]
            let conv = dwconv(v, height: g.height, width: g.width)                 // [L, C]
            let channelMap = channelGate(mean(conv, axes: [0], keepDims: true))     // [1, C]
            let spatialMap = spatialGate(attended)                                  // [L, 1]
            let gatedConv = conv * sigmoid(spatialMap)
            return proj(attended * sigmoid(channelMap) + gatedConv)
        }

        private func channelAttention(_ x: Tensor, _ g: Geometry) -> Tensor {
            let c = x.shape[1], l = x.shape[0], d = c / heads
            // [L, 3, heads, d] → [3, heads, d, L]: attention runs across channels, tokens are the feature axis.
            let stacked = permute(qkv(x).reshaped([l, 3, heads, d]), [1, 2, 3, 0])
            let q = TransformerWindows.l2Normalized(TransformerWindows.part(stacked, 0)), k = TransformerWindows.l2Normalized(TransformerWindows.part(stacked, 1))
            let v = TransformerWindows.part(stacked, 2)                                    // [heads, d, L]
            let scores = softmax(matmul(q, k, transposeB: true) * temperature!, axis: -1)  // [heads, d, d]
            let attended = permute(matmul(scores, v), [2, 0, 1]).reshaped([l, c])
            // v is [heads, d, L]: channel-major, exactly the NCHW map the reference convolves.
            let conv = dwconv(TransformerWindows.tokens(v.reshaped([1, c, g.height, g.width])), height: g.height, width: g.width)
            let channelMap = channelGate(mean(attended, axes: [0], keepDims: true))  // [1, C]
            let spatialMap = spatialGate(conv)                                       // [L, 1]
            return proj(attended * sigmoid(spatialMap) + conv * sigmoid(channelMap))
        }
    }
}
