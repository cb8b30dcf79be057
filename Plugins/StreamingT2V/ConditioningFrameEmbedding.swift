import DiffusionPlugin
import LapseNN
import LapseTensor
import LapseWeights

/// The CAM's frame encoder (the original's `ControlNetConditioningEmbedding`, `unet.controlnet_cond_embedding.*`):
/// conv_in 3→c₀ (3×3) and SiLU, then per stage a c→c 3×3 conv and a c→c′ 3×3 stride-2 conv, each followed by SiLU,
/// then conv_out to the UNet's first width. Three stages in the release (32→96→256→512, then 512→320), so frames
/// `[F, 3, H, W]` in [-1, 1] become `[F, 320, H/8, W/8]`, the size of the latents' first feature map.
public struct ConditioningFrameEmbedding: Sendable {
    private let convIn: Conv2DLayer
    private let blocks: [Conv2DLayer]
    private let convOut: Conv2DLayer
    /// Channels of the embedding (the UNet's `block_out_channels[0]`).
    public let outChannels: Int
    /// Pixel-to-feature downsampling (2 per stage).
    public let downsampling: Int

    /// Reads `conv_in`, `blocks.{0…}` and `conv_out` from `weights` (already scoped to the module); every width
    /// comes from the weights.
    public init(weights: Weights) throws {
        let read = WeightReader(weights, component: "ConditioningFrameEmbedding")
        func conv(_ prefix: String, in inputs: Int?, stride: Int) throws -> Conv2DLayer {
            let s = try read.shape(prefix + "weight")
            guard s.count == 4, s[2] == 3, s[3] == 3, inputs == nil || s[1] == inputs else {
                throw DiffusionError.weightShape(component: "ConditioningFrameEmbedding (\(weights.origin))",
                                                 key: prefix + "weight", expected: [s.first ?? 0, inputs ?? 0, 3, 3], actual: s)
            }
            return try Conv2DLayer(read, prefix, in: s[1], out: s[0], kernel: 3, stride: stride)
        }
        convIn = try conv("conv_in.", in: 3, stride: 1)
        var blocks: [Conv2DLayer] = []
        var width = convIn.weight.shape[0]
        while weights.contains("blocks.\(blocks.count).weight") {
            // Even entries keep the width, odd ones change it and halve the resolution.
            let stride = blocks.count % 2 == 1 ? 2 : 1
            let c = try conv("blocks.\(blocks.count).", in: width, stride: stride)
            width = c.weight.shape[0]
            blocks.append(c)
        }
        guard blocks.count % 2 == 0 else {
            throw DiffusionError.missingWeight(component: "ConditioningFrameEmbedding (\(weights.origin))",
                                               key: "blocks.\(blocks.count).weight", closeMatches: [])
        }
        self.blocks = blocks
        convOut = try conv("conv_out.", in: width, stride: 1)
        outChannels = convOut.weight.shape[0]
        downsampling = 1 << (blocks.count / 2)
    }

    /// `frames` `[F, 3, H, W]` in [-1, 1] → `[F, outChannels, ⌈H/2ᵏ⌉, ⌈W/2ᵏ⌉]` (k stages).
    public func callAsFunction(_ frames: Tensor) throws -> Tensor {
        guard frames.rank == 4, frames.shape[1] == 3 else {
            throw DiffusionError.badInput(component: "ConditioningFrameEmbedding",
                                          reason: "conditioning frames must be [F, 3, H, W], got \(frames.shape)")
        }
        var h = convIn(frames, activation: .silu)
        for block in blocks { h = block(h, activation: .silu) }
        return convOut(h, activation: nil)
    }
}
