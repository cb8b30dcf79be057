import Foundation
import LapseNN
import LapseTensor

/// GRL (Li et al., CVPR 2023) as released by APISR: "tiny2" 4× generator with window + anchored-stripe attention.
///
/// Everything size-dependent (shift masks) is computed per input; the relative-position biases depend only on
/// window and stripe sizes, so they are evaluated once at load time.
public final class GRLNetwork: UpscaleNetwork, @unchecked Sendable {
    /// Always "GRL".
    public let architecture = "GRL"
    /// APISR's GRL is a ×4 generator (the "nearest+conv" tail upsamples twice by 2).
    public let scale = 4
    /// Any size works: the network reflect-pads to a multiple of its window inside, like the reference.
    public let sizeMultiple = 1
    /// One attention window; smaller tiles would be mostly padding.
    public var minimumTile: Int { config.windowSize }
    /// 4×-resolution 64-channel maps dominate; measured peak RSS grows ~20 KB per input pixel (64² → 128²).
    public let bytesPerInputPixel = 24_000

    let config: Config
    /// Channels of the transformer body.
    public var embedDim: Int { config.embedDim }
    /// Blocks per stage.
    public var depths: [Int] { config.depths }
    /// Heads of the window and stripe attentions per stage.
    public var heads: (window: [Int], stripe: [Int]) { (config.headsWindow, config.headsStripe) }
    /// Side of the square attention windows.
    public var windowSize: Int { config.windowSize }
    /// Stripe height and width (horizontal stripes; vertical ones are transposed).
    public var stripeSize: [Int] { config.stripeSize }
    /// How much the anchor map is pooled.
    public var anchorDownFactor: Int { config.anchorDownFactor }
    private let rgbMean: [Float] = [0.4488, 0.4371, 0.4040]
    private let convFirst: Conv2DLayer
    private let normStart: NormLayer
    private let stages: [Stage]
    private let normEnd: NormLayer
    private let convAfterBody: Conv2DLayer
    private let convBeforeUpsample: Conv2DLayer
    private let convUp1: Conv2DLayer
    private let convUp2: Conv2DLayer
    private let convHR: Conv2DLayer
    private let convLast: Conv2DLayer

    /// True when the key layout is GRL's (`norm_start`, window/stripe attention transforms).
    public static func canLoad(_ keys: Set<String>) -> Bool {
        keys.contains("conv_first.weight") && keys.contains("norm_start.weight") && keys.contains("norm_end.weight")
            && keys.contains("layers.0.blocks.0.attn.window_attn.attn_transform.logit_scale")
            && keys.contains("layers.0.blocks.0.attn.stripe_attn.attn_transform1.logit_scale")
    }

    /// Elements of shifted-window attention mask materialised at once (bounds memory on large inputs).
    public let attentionMaskBudget: Int

    /// Builds the network from an unwrapped state dict; the 13 size-dependent buffers of the release are ignored.
    /// `attentionMaskBudget` (mask elements per group of windows) trades memory for fewer, larger attention calls.
    public init(stateDict: [String: Tensor], attentionMaskBudget: Int = 1 << 22) throws {
        self.attentionMaskBudget = max(1, attentionMaskBudget)
        let r = WeightReader(stateDict: stateDict, transformer: "GRL")
        let cfg = try Self.inferConfig(r)
        config = cfg
        let c = cfg.embedDim
        convFirst = try Conv2DLayer(r, "conv_first.", in: cfg.inChannels, out: c, kernel: 3)
        normStart = try NormLayer(r, "norm_start.", channels: c, eps: 1e-5)
        var stages: [Stage] = []
        for i in 0..<cfg.depths.count {
            var blocks: [Block] = []
            for j in 0..<cfg.depths[i] {
                blocks.append(try Block(r, prefix: "layers.\(i).blocks.\(j)", index: j, config: cfg,
                                        headsWindow: cfg.headsWindow[i], headsStripe: cfg.headsStripe[i]))
            }
            stages.append(Stage(blocks: blocks, conv: try Conv2DLayer(r, "layers.\(i).conv.", in: c, out: c, kernel: 3)))
        }
        self.stages = stages
        normEnd = try NormLayer(r, "norm_end.", channels: c, eps: 1e-5)
        convAfterBody = try Conv2DLayer(r, "conv_after_body.", in: c, out: c, kernel: 3)
        let f = cfg.reconstructionFeatures
        convBeforeUpsample = try Conv2DLayer(r, "conv_before_upsample.0.", in: c, out: f, kernel: 3)
        convUp1 = try Conv2DLayer(r, "conv_up1.", in: f, out: f, kernel: 3)
        convUp2 = try Conv2DLayer(r, "conv_up2.", in: f, out: f, kernel: 3)
        convHR = try Conv2DLayer(r, "conv_hr.", in: f, out: f, kernel: 3)
        convLast = try Conv2DLayer(r, "conv_last.", in: f, out: cfg.outChannels, kernel: 3)
    }

    /// `[1, 3, H, W]` in [0, 1] → `[1, 3, 4H, 4W]`.
    public func forward(_ input: Tensor) throws -> Tensor {
        guard input.rank == 4, input.shape[0] == 1, input.shape[1] == config.inChannels else {
            throw TransformerUpscalerError.badInput(architecture: architecture, shape: input.shape)
        }
        let h = input.shape[2], w = input.shape[3]
        let padTo = max(config.windowSize, config.stripeSize.max() ?? 0)
        let ph = (padTo - h % padTo) % padTo, pw = (padTo - w % padTo) % padTo
        var x = input
        if ph > 0 || pw > 0 {
            // Reflection needs pad < size; the reference falls back to zero padding for tiny inputs.
            let mode: PaddingMode = (ph < h && pw < w) ? .reflect : .zeros
            x = pad(x, left: 0, right: pw, top: 0, bottom: ph, mode: mode)
        }
        let hp = h + ph, wp = w + pw
        let meanTensor = Tensor(shape: [1, 3, 1, 1], data: rgbMean)
        x = x - meanTensor

        let first = convFirst(x)
        var t = normStart.layer(TransformerWindows.tokens(first))                  // [L, C]
        let masks = ShiftMasks(height: hp, width: wp, config: config, budget: attentionMaskBudget)
        for stage in stages {
            var res = t
            for block in stage.blocks { res = block(res, height: hp, width: wp, masks: masks) }
            res = TransformerWindows.tokens(stage.conv(TransformerWindows.image(res, height: hp, width: wp)))
            t = res + t
        }
        t = normEnd.layer(t)
        var y = convAfterBody(TransformerWindows.image(t, height: hp, width: wp)) + first
        y = convBeforeUpsample(y, activation: .leakyReLU(0.01))
        y = resize(y, height: hp * 2, width: wp * 2, mode: .nearest)
        y = convUp1(y, activation: .leakyReLU(0.2))
        y = resize(y, height: hp * 4, width: wp * 4, mode: .nearest)
        y = convUp2(y, activation: .leakyReLU(0.2))
        y = convHR(y, activation: .leakyReLU(0.2))
        y = convLast(y) + meanTensor
        if ph > 0 || pw > 0 {
            y = slice(slice(y, axis: 2, start: 0, end: h * 4), axis: 3, start: 0, end: w * 4)
        }
        return y
    }
}

extension GRLNetwork {
    /// Masks that depend on the (padded) input size; built once per forward and shared by all blocks.
    struct ShiftMasks {
        /// Mask of the shifted window blocks.
        let window: TransformerWindows.ShiftMask
        let budget: Int

        init(height: Int, width: Int, config: Config, budget: Int) {
            self.budget = budget
            let ws = config.windowSize
            window = TransformerWindows.ShiftMask(height: height, width: width, window: (ws, ws), shift: (ws / 2, ws / 2))
        }
    }

    struct Stage {
        let blocks: [Block]
        let conv: Conv2DLayer
    }

    /// GRL's affine transform of a cosine attention map: logit scale + `16·sigmoid(cpb_mlp(table)[index])`.
    struct AttentionTransform {
        let logitScale: Tensor     // [heads]
        let bias: Tensor           // [1, heads, Nq, Nk], already 16·sigmoid(·)

        init(_ r: WeightReader, prefix: String, heads: Int, table: Tensor, index: [[Int]]) throws {
            logitScale = try r(prefix + ".logit_scale", [heads, 1, 1]).reshaped([heads])
            let fc1 = try LinearLayer(r, prefix + ".cpb_mlp.0.", in: 2, out: try r.shape(prefix + ".cpb_mlp.0.weight")[0])
            let hidden = fc1.weight.shape[0]
            let fc2 = try LinearLayer(r, prefix + ".cpb_mlp.2.", in: hidden, out: heads, bias: .ifPresent)
            let pos = fc2(relu(fc1(table)))                                  // [T, heads]
            let gathered = TransformerWindows.gatherBias(table: pos, index: index)  // [heads, Nq, Nk]
            bias = (sigmoid(gathered) * 16).reshaped([1, heads, index.count, index[0].count])
        }

        func callAsFunction(q: Tensor, k: Tensor, v: Tensor, shiftMask: TransformerWindows.ShiftMask?, budget: Int) -> Tensor {
            TransformerWindows.windowedAttention(q: q, k: k, v: v, bias: bias, shiftMask: shiftMask, budget: budget) { q, k, v, mask in
                cosineAttention(query: q, key: k, value: v, logitScale: logitScale, mask: mask)
            }
        }
    }

    /// One EfficientMixAttnTransformerBlock: shared qkv, window half + anchored stripe half, post-norm residuals.
    struct Block {
        let qkv: LinearLayer
        let anchor: LinearLayer
        let proj: LinearLayer
        let norm1: NormLayer
        let fc1: LinearLayer
        let fc2: LinearLayer
        let norm2: NormLayer
        let windowTransform: AttentionTransform
        let stripeTransform1: AttentionTransform   // anchor → window tokens
        let stripeTransform2: AttentionTransform   // window tokens → anchor
        let windowShift: Bool
        let stripe: (Int, Int)                     // (height, width) of this block's stripes
        let windowSize: Int
        let downFactor: Int
        let headsWindow: Int
        let headsStripe: Int

        init(_ r: WeightReader, prefix: String, index: Int, config: Config, headsWindow: Int, headsStripe: Int) throws {
            let c = config.embedDim
            guard c % 2 == 0, (3 * c / 2) % 3 == 0, (c / 2) % headsWindow == 0, (c / 2) % headsStripe == 0 else {
                throw TransformerUpscalerError.unsupported(architecture: "GRL",
                    detail: "embed dim \(c) does not split into \(headsWindow)/\(headsStripe) heads")
            }
            qkv = try LinearLayer(r, prefix + ".attn.qkv.body.", in: c, out: 3 * c)
            anchor = try LinearLayer(r, prefix + ".attn.anchor.body.0.reduction.", in: c, out: c / 2)
            proj = try LinearLayer(r, prefix + ".attn.proj.", in: c, out: c)
            norm1 = try NormLayer(r, prefix + ".norm1.", channels: c, eps: 1e-5)
            fc1 = try LinearLayer(r, prefix + ".mlp.fc1.", in: c, out: config.mlpHidden)
            fc2 = try LinearLayer(r, prefix + ".mlp.fc2.", in: config.mlpHidden, out: c)
            norm2 = try NormLayer(r, prefix + ".norm2.", channels: c, eps: 1e-5)
            windowShift = index % 2 == 0
            // Even blocks use horizontal stripes (stripe_size as given), odd blocks vertical ones (reversed).
            let ss = config.stripeSize
            stripe = index % 2 == 0 ? (ss[0], ss[1]) : (ss[1], ss[0])
            windowSize = config.windowSize
            downFactor = config.anchorDownFactor
            self.headsWindow = headsWindow
            self.headsStripe = headsStripe
            let ws = config.windowSize
            windowTransform = try AttentionTransform(
                r, prefix: prefix + ".attn.window_attn.attn_transform", heads: headsWindow,
                table: GRLTables.coordsTable(window: (ws, ws), downFactor: 1),
                index: GRLTables.positionIndex(window: (ws, ws), downFactor: 1, windowToAnchor: true))
            let table = GRLTables.coordsTable(window: stripe, downFactor: downFactor)
            stripeTransform1 = try AttentionTransform(
                r, prefix: prefix + ".attn.stripe_attn.attn_transform1", heads: headsStripe, table: table,
                index: GRLTables.positionIndex(window: stripe, downFactor: downFactor, windowToAnchor: false))
            stripeTransform2 = try AttentionTransform(
                r, prefix: prefix + ".attn.stripe_attn.attn_transform2", heads: headsStripe, table: table,
                index: GRLTables.positionIndex(window: stripe, downFactor: downFactor, windowToAnchor: true))
        }

        /// `x`: `[H·W, C]` tokens of the padded map.
        func callAsFunction(_ x: Tensor, height: Int, width: Int, masks: ShiftMasks) -> Tensor {
            let a = attention(x, height: height, width: width, masks: masks)
            let y = x + norm1.layer(a)
            return y + norm2.layer(fc2(gelu(fc1(y))))
        }

        private func attention(_ x: Tensor, height: Int, width: Int, masks: ShiftMasks) -> Tensor {
            let c = x.shape[1]
            let half = 3 * c / 2
            let qkvAll = qkv(x)                                              // [L, 3C]
            let parts = split(qkvAll, sizes: [half, half], axis: 1)
            let xw = windowBranch(parts[0], height: height, width: width, mask: windowShift ? masks.window : nil, budget: masks.budget)
            let xs = stripeBranch(parts[1], x: x, height: height, width: width)
            return proj(concat([xw, xs], axis: 1))
        }

        private func windowBranch(_ qkv: Tensor, height: Int, width: Int, mask: TransformerWindows.ShiftMask?, budget: Int) -> Tensor {
            let ws = windowSize, s = ws / 2
            var m = qkv.reshaped([height, width, qkv.shape[1]])
            if windowShift { m = roll(m, shifts: [-s, -s], axes: [0, 1]) }
            let p = TransformerWindows.partition(m, height: height, width: width, window: (ws, ws), parts: 3, heads: headsWindow)
            let o = windowTransform(q: TransformerWindows.part(p, 0), k: TransformerWindows.part(p, 1), v: TransformerWindows.part(p, 2), shiftMask: mask, budget: budget)
            var out = TransformerWindows.merge(o, height: height, width: width, window: (ws, ws))
            if windowShift { out = roll(out, shifts: [s, s], axes: [0, 1]) }
            return out.reshaped([height * width, out.shape[2]])
        }

        private func stripeBranch(_ qkv: Tensor, x: Tensor, height: Int, width: Int) -> Tensor {
            let df = downFactor
            let c = x.shape[1]
            // Anchors: avg-pool the block input by df, then project to C/2.
            let pooled = avgPool2d(TransformerWindows.image(x, height: height, width: width), kernel: df)
            let ah = height / df, aw = width / df
            let anchors = anchor(TransformerWindows.tokens(pooled)).reshaped([ah, aw, c / 2])
            let m = qkv.reshaped([height, width, qkv.shape[1]])
            let p = TransformerWindows.partition(m, height: height, width: width, window: stripe, parts: 3, heads: headsStripe)
            let a = TransformerWindows.part(TransformerWindows.partition(anchors, height: ah, width: aw, window: (stripe.0 / df, stripe.1 / df),
                                                       parts: 1, heads: headsStripe), 0)
            let q = TransformerWindows.part(p, 0), k = TransformerWindows.part(p, 1), v = TransformerWindows.part(p, 2)
            let summary = stripeTransform1(q: a, k: k, v: v, shiftMask: nil, budget: 0)      // anchors gather the stripe
            let o = stripeTransform2(q: q, k: a, v: summary, shiftMask: nil, budget: 0)     // tokens read the anchors back
            let out = TransformerWindows.merge(o, height: height, width: width, window: stripe)
            return out.reshaped([height * width, out.shape[2]])
        }
    }
}

/// GRL's continuous relative-position inputs (`get_relative_coords_table_all`) and their index maps
/// (`get_relative_position_index_simple`), for windows of `window` tokens attending to windows `downFactor`× smaller.
enum GRLTables {
    /// `[Th·Tw, 2]` log-spaced relative coordinates, rows in (dy, dx) row-major order.
    static func coordsTable(window: (Int, Int), downFactor: Int) -> Tensor {
        let ws = [window.0, window.1]
        let aws = ws.map { $0 / downFactor }
        let pos = zip(ws, aws).map { $0 - 1 - ($0 - $1) / 2 }
        let neg = zip(ws, aws).map { -($1 - 1) - ($0 - $1) / 2 }
        var data: [Float] = []
        for dy in neg[0]...pos[0] {
            for dx in neg[1]...pos[1] {
                for (v, p) in [(dy, pos[0]), (dx, pos[1])] {
                    let t = Float(v) / Float(p) * 8
                    let s: Float = t > 0 ? 1 : (t < 0 ? -1 : 0)
                    data.append(s * log2(abs(t) + 1) / log2(Float(8)))
                }
            }
        }
        return Tensor(shape: [data.count / 2, 2], data: data)
    }

    /// Index into the table for each (query, key) pair; `windowToAnchor` puts the full window on the query side.
    static func positionIndex(window: (Int, Int), downFactor: Int, windowToAnchor: Bool) -> [[Int]] {
        let ws = [window.0, window.1]
        let aws = ws.map { $0 / downFactor }
        func coords(_ s: [Int]) -> [(Int, Int)] {
            var out: [(Int, Int)] = []
            for y in 0..<s[0] { for x in 0..<s[1] { out.append((y, x)) } }
            return out
        }
        let big = coords(ws), small = coords(aws)
        let maxDiff = aws[1] + ws[1] - 1
        let (rows, cols, offset) = windowToAnchor ? (big, small, aws.map { $0 - 1 }) : (small, big, ws.map { $0 - 1 })
        return rows.map { a in
            cols.map { b in (a.0 - b.0 + offset[0]) * maxDiff + (a.1 - b.1 + offset[1]) }
        }
    }
}
