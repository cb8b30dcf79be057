import LapseGraph
import LapseTensor

/// `EmptyLatentVideo {width, height, frames, batch, fps}` → `latent`.
public struct EmptyLatentVideo: Node {
    public static let schema = NodeSchema(
        type: "EmptyLatentVideo", category: "video/diffusion",
        summary: "Zero latents [batch, 4, frames, height/8, width/8] to sample a video (or, with 1 frame, an image) into",
        inputs: [
            InputSpec("width", .int, default: .int(512), min: 8, max: 8192, doc: "pixels, a multiple of 8"),
            InputSpec("height", .int, default: .int(512), min: 8, max: 8192, doc: "pixels, a multiple of 8"),
            InputSpec("frames", .int, default: .int(16), min: 1, max: 4096, doc: "video length (motion modules allow at most 32)"),
            InputSpec("batch", .int, default: .int(1), min: 1, max: 64, doc: "videos sampled together"),
            // The rate travels with the latents to VAEDecode's frames and on to SaveVideo; graphs set their model's.
            InputSpec("fps", .float, default: .float(8), min: 0.1, max: 240,
                      doc: "frames per second the decoded video plays at (MagicTime, AnimateDiff and ModelScope sample at 8)"),
        ],
        outputs: [OutputSpec("latent", .latent, doc: "[batch, 4, frames, height/8, width/8] zeros")])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let width = try inputs.int("width"), height = try inputs.int("height")
        for (port, value) in [("width", width), ("height", height)] where value % 8 != 0 || value <= 0 {
            throw DiffusionNodeError.badSize(port: port, value: value, multiple: 8)
        }
        let frames = try inputs.int("frames"), batch = try inputs.int("batch")
        guard frames >= 1 else { throw NodeError.invalidValue(port: "frames", reason: "\(frames) must be at least 1") }
        guard batch >= 1 else { throw NodeError.invalidValue(port: "batch", reason: "\(batch) must be at least 1") }
        // Inputs built by hand (tests, embedders) may predate the param; validation gives graphs its default.
        let fps = inputs.has("fps") ? try inputs.float("fps") : 8
        guard fps.isFinite, fps > 0 else { throw NodeError.invalidValue(port: "fps", reason: "\(fps) must be a positive number") }
        let latent = LatentValue(tensor: Tensor(zeros: [batch, 4, frames, height / 8, width / 8]), frameRate: fps)
        return NodeOutputs("latent", .latent, latent)
    }
}
