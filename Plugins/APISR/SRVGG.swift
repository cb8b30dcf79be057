import Dispatch
import LapseNN
import LapseTensor

/// Real-ESRGAN's SRVGGNetCompact (the animevideov3 models): a plain stack of 3×3 convs with PReLU at low
/// resolution, one PixelShuffle at the end, plus the nearest-upsampled input so the body only learns the residual.
public struct SRVGGNetwork: UpscaleNetwork {
    /// Hyper-parameters, all inferred from tensor shapes.
    public struct Configuration: Sendable, Equatable, CustomStringConvertible {
        /// Feature channels (`num_feat`).
        public var features: Int
        /// Body convs between the first and the last (`num_conv`).
        public var convs: Int
        /// PixelShuffle factor (`upscale`).
        public var upscale: Int
        public var inChannels: Int
        public var outChannels: Int

        public init(features: Int, convs: Int, upscale: Int, inChannels: Int, outChannels: Int) {
            self.features = features
            self.convs = convs
            self.upscale = upscale
            self.inChannels = inChannels
            self.outChannels = outChannels
        }

        public var description: String { "num_feat \(features), num_conv \(convs), scale \(upscale), PReLU" }
    }

    public let configuration: Configuration
    /// Every conv in order: first, `convs` body convs, last.
    let layers: [Conv2DLayer]
    /// PReLU slopes after every conv but the last, `[features]` each.
    let slopes: [Tensor]

    public var architecture: String { "SRVGG" }
    public var scale: Int { configuration.upscale }
    public var sizeMultiple: Int { 1 }
    public var minimumTile: Int { 4 }
    public var bytesPerInputPixel: Int {
        let c = configuration
        // Measured: a conv's input, unfolded columns, output and PReLU copy at low resolution plus allocator slack
        // come to ~30 floats per feature channel; then the shuffled output and the residual.
        return (c.features * 30 + c.outChannels * c.upscale * c.upscale * 4) * MemoryLayout<Float>.size
    }

    public func forward(_ input: Tensor) throws -> Tensor {
        let c = configuration
        guard input.rank == 4, input.shape[0] == 1, input.shape[1] == c.inChannels else {
            throw UpscaleModelError.malformed(architecture: architecture,
                                              reason: "input must be [1, \(c.inChannels), H, W], got \(input.shape)")
        }
        var feat = input
        for (i, conv) in layers.enumerated() {
            // PReLU rides in the conv's output pass instead of a second sweep over the feature map.
            feat = i < slopes.count
                ? conv2dPReLU(feat, weight: conv.weight, bias: conv.bias, padding: conv.kernel / 2, slopes: slopes[i])
                : conv(feat)
        }
        var out = pixelShuffle(feat, factor: c.upscale)
        Self.addNearest(&out, input, factor: c.upscale)
        return out
    }

    /// `out += nearest_upsample(x, factor)`; x's channels repeat when out has more (never for RGB→RGB).
    static func addNearest(_ out: inout Tensor, _ x: Tensor, factor s: Int) {
        let (c, h, w) = (out.shape[1], x.shape[2], x.shape[3])
        let inC = x.shape[1]
        let (oh, ow) = (h * s, w * s)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let psrc = SharedPointer(src.baseAddress!), pdst = SharedPointer(dst.baseAddress!)
                DispatchQueue.concurrentPerform(iterations: c * h) { job in
                    let sp = psrc.base, dp = pdst.base
                    let ch = job / h, y = job % h
                    let srow = sp + (ch % inC) * h * w + y * w
                    for dy in 0..<s {
                        let drow = dp + ch * oh * ow + (y * s + dy) * ow
                        for xx in 0..<w {
                            let v = srow[xx]
                            for dx in 0..<s { drow[xx * s + dx] += v }
                        }
                    }
                }
            }
        }
    }
}
