import Dispatch
import LapseNN
import LapseTensor

/// ESRGAN's RRDBNet as used by Real-ESRGAN and APISR's RRDB generators.
///
/// conv_first → N × RRDB (three residual dense blocks, each five 3×3 convs with dense concatenation) → conv_body
/// + trunk residual → k × (nearest ×2 → conv → LeakyReLU 0.2) → conv_hr → LeakyReLU → conv_last. APISR's 2x model
/// pixel-unshuffles the input by 2 first, so the ×4 body yields ×2. No mean shift and no clamp inside.
public struct RRDBNetwork: UpscaleNetwork {
    /// Hyper-parameters, all inferred from tensor shapes.
    public struct Configuration: Sendable, Equatable, CustomStringConvertible {
        /// Feature channels (`num_feat`, 64 in the releases).
        public var features: Int
        /// Number of RRDB blocks (`num_block`).
        public var blocks: Int
        /// Channels each dense conv adds (`num_grow_ch`, 32 in the releases).
        public var growth: Int
        /// Number of nearest ×2 + conv stages (2 for ×4 bodies).
        public var upsampleStages: Int
        /// Pixel-unshuffle factor applied to the input (1: none, 2: APISR/Real-ESRGAN x2, 4: x1 models).
        public var unshuffle: Int
        /// Image channels in and out.
        public var imageChannels: Int

        public init(features: Int, blocks: Int, growth: Int, upsampleStages: Int, unshuffle: Int, imageChannels: Int) {
            self.features = features
            self.blocks = blocks
            self.growth = growth
            self.upsampleStages = upsampleStages
            self.unshuffle = unshuffle
            self.imageChannels = imageChannels
        }

        public var description: String {
            "num_feat \(features), num_block \(blocks), growth \(growth), scale \((1 << upsampleStages) / unshuffle)"
                + (unshuffle > 1 ? ", pixel-unshuffle \(unshuffle)" : "")
        }
    }

    public let configuration: Configuration
    let convFirst: Conv2DLayer
    /// `blocks[b][r][j]`: RRDB b, dense block r (0…2), conv j (0…4).
    let blocks: [[[Conv2DLayer]]]
    let convBody: Conv2DLayer
    let upsampleConvs: [Conv2DLayer]
    let convHR: Conv2DLayer
    let convLast: Conv2DLayer

    public var architecture: String { "RRDB" }
    public var scale: Int { (1 << configuration.upsampleStages) / configuration.unshuffle }
    public var sizeMultiple: Int { configuration.unshuffle }
    public var minimumTile: Int { max(configuration.unshuffle, 4) }

    public var bytesPerInputPixel: Int {
        // Peak is either the dense stage (concat buffer + conv unfolding at low resolution) or the full-resolution
        // convs (input, row-tiled unfolded input, output); the factors are calibrated on measured peak RSS.
        let c = configuration
        let dense = (c.features + 4 * c.growth) * 11 + c.features * 4
        let highRes = (1 << (2 * c.upsampleStages)) * c.features * 4
        return max(dense, highRes) * MemoryLayout<Float>.size / (c.unshuffle * c.unshuffle) + 64
    }

    public func forward(_ input: Tensor) throws -> Tensor {
        let c = configuration
        guard input.rank == 4, input.shape[0] == 1, input.shape[1] == c.imageChannels else {
            throw UpscaleModelError.malformed(architecture: architecture,
                                              reason: "input must be [1, \(c.imageChannels), H, W], got \(input.shape)")
        }
        guard input.shape[2] % c.unshuffle == 0, input.shape[3] % c.unshuffle == 0 else {
            throw UpscaleModelError.malformed(
                architecture: architecture, reason: "input \(input.shape) is not a multiple of \(c.unshuffle)")
        }
        let x = c.unshuffle > 1 ? pixelUnshuffle(input, factor: c.unshuffle) : input
        let trunk = convFirst(x)
        let (h, w) = (trunk.shape[2], trunk.shape[3])
        // One buffer holds the growing dense concatenation [x, x1, x2, x3, x4]: each conv reads a channel prefix of
        // it (a zero-copy view) and its output is copied behind, so no concat ever re-copies earlier channels.
        let dense = TensorStorage(count: (c.features + 4 * c.growth) * h * w)
        var feat = trunk
        for block in blocks {
            var y = feat
            for rdb in block { y = residualDenseBlock(y, convs: rdb, buffer: dense) }
            Self.scaleAdd(&y, 0.2, feat)
            feat = y
        }
        var body = convBody(feat)
        Self.scaleAdd(&body, 1, trunk)
        feat = body
        for conv in upsampleConvs {
            feat = conv(Self.upsampleNearest2x(feat), activation: .leakyReLU(0.2))
        }
        feat = convHR(feat, activation: .leakyReLU(0.2))
        return convLast(feat)
    }

    /// `x5 · 0.2 + x` with x5 computed from the dense concatenation of x and four growth convs.
    private func residualDenseBlock(_ x: Tensor, convs: [Conv2DLayer], buffer: TensorStorage) -> Tensor {
        let (h, w) = (x.shape[2], x.shape[3])
        let plane = h * w
        var channels = configuration.features
        x.withUnsafeBufferPointer { src in buffer.pointer.update(from: src.baseAddress!, count: src.count) }
        for j in 0..<4 {
            // The conv writes straight behind the channels it reads, so the concatenation costs no copy.
            let view = Tensor(shape: [1, channels, h, w], storage: buffer)
            let conv = convs[j]
            _ = conv2d(view, weight: conv.weight, bias: conv.bias, padding: conv.kernel / 2,
                       activation: .leakyReLU(0.2), into: buffer, offset: channels * plane)
            channels += configuration.growth
        }
        var x5 = convs[4](Tensor(shape: [1, channels, h, w], storage: buffer))
        Self.scaleAdd(&x5, 0.2, x)
        return x5
    }

    /// `a = a · alpha + b` in place (`a` is a fresh conv output, so its storage is not shared and isn't copied).
    static func scaleAdd(_ out: inout Tensor, _ alpha: Float, _ b: Tensor) {
        precondition(out.shape == b.shape, "scaleAdd \(out.shape) vs \(b.shape)")
        b.withUnsafeBufferPointer { bp in
            out.withUnsafeMutableBufferPointer { op in
                let n = op.count
                let chunk = 1 << 16
                let pieces = (n + chunk - 1) / chunk
                let po = SharedPointer(op.baseAddress!), ps = SharedPointer(bp.baseAddress!)
                DispatchQueue.concurrentPerform(iterations: pieces) { p in
                    let o = po.base, s = ps.base
                    let start = p * chunk, end = min(n, start + chunk)
                    if alpha == 1 {
                        for i in start..<end { o[i] += s[i] }
                    } else {
                        for i in start..<end { o[i] = o[i] * alpha + s[i] }
                    }
                }
            }
        }
    }

    /// Nearest-neighbour ×2 (`F.interpolate(scale_factor=2, mode="nearest")`) of `[N, C, H, W]`.
    static func upsampleNearest2x(_ x: Tensor) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        // Every element is written below, so skip the zero fill (a full pass over the largest feature maps).
        var out = Tensor(shape: [n, c, 2 * h, 2 * w], storage: TensorStorage(uninitializedCount: n * c * 4 * h * w))
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let ps = SharedPointer(src.baseAddress!), pd = SharedPointer(dst.baseAddress!)
                DispatchQueue.concurrentPerform(iterations: n * c) { plane in
                    let s = ps.base, d = pd.base
                    let sp = s + plane * h * w
                    let dp = d + plane * 4 * h * w
                    for y in 0..<h {
                        let row = dp + 2 * y * 2 * w
                        let srow = sp + y * w
                        for xx in 0..<w {
                            let v = srow[xx]
                            row[2 * xx] = v
                            row[2 * xx + 1] = v
                        }
                        (row + 2 * w).update(from: row, count: 2 * w)
                    }
                }
            }
        }
        return out
    }
}
