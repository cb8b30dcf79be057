import Foundation
import LapseGraph
import LapseTensor

/// `VAEEncode` ← `vae`, `frames` → `latent`.
///
/// Each frame (RGB in [0, 1], mapped to [-1, 1]) is encoded on its own; the posterior mean times
/// `scaling_factor` becomes the latent, so encoding is deterministic (diffusers' image-to-image pipelines sample
/// the posterior instead; its variance is tiny for SD's VAE). The frames form one video `[1, 4, F, h, w]`.
public struct VAEEncode: Node {
    public static let schema = NodeSchema(
        type: "VAEEncode", category: "video/diffusion",
        summary: "Encodes frames to latents with the VAE (posterior mean × scaling factor), for video-to-video with Sample's denoise",
        inputs: [
            InputSpec("vae", .vae, doc: "autoencoder from LoadCheckpoint"),
            InputSpec("frames", .frames, doc: "frames whose width and height are multiples of 8"),
        ],
        outputs: [OutputSpec("latent", .latent, doc: "[1, 4, F, h, w] latents")])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let vae = try inputs.get("vae", .vae)
        let stream = try inputs.frames("frames")
        let model = try vae.makeModel()
        let f = vae.downsamplingFactor
        let source = try stream.makeSource()
        var latents: [Tensor] = []
        var size: (Int, Int)?
        let total = stream.info.frameCount ?? 0
        while let frame = try source.next() {
            try context.checkCancellation()
            guard frame.width % f == 0, frame.height % f == 0 else {
                throw DiffusionNodeError.badSize(port: "frames (frame \(frame.index) is \(frame.width)×\(frame.height)): width or height",
                                                 value: frame.width % f != 0 ? frame.width : frame.height, multiple: f)
            }
            if let size, size != (frame.width, frame.height) {
                throw NodeError.invalidValue(port: "frames", reason: "frame \(frame.index) is \(frame.width)×\(frame.height), earlier frames \(size.0)×\(size.1)")
            }
            size = (frame.width, frame.height)
            let rgb = Self.rgb(frame.image)
            let (mean, _) = try model.encode(rgb.reshaped([1, 3, frame.height, frame.width]) * 2 - 1)
            latents.append(mean * Float(vae.config.scalingFactor))
            context.progress(step: latents.count, total: total, unit: "frame")
        }
        guard !latents.isEmpty else { throw NodeError.invalidValue(port: "frames", reason: "the stream has no frames") }
        // [F, 4, h, w] → [1, 4, F, h, w]
        let stacked = concat(latents, axis: 0)
        let s = stacked.shape
        let video = permute(stacked, [1, 0, 2, 3]).reshaped([1, s[1], s[0], s[2], s[3]])
        return NodeOutputs("latent", .latent, LatentValue(tensor: video, frameRate: stream.info.fps ?? 8))
    }

    /// `[3, H, W]`: gray repeated, alpha dropped.
    public static func rgb(_ image: Tensor) -> Tensor {
        switch image.shape[0] {
        case 3: return image
        case 4: return slice(image, axis: 0, start: 0, end: 3)
        default:
            let gray = slice(image, axis: 0, start: 0, end: 1)
            return concat([gray, gray, gray], axis: 0)
        }
    }
}
