import Foundation
import LapseGraph
import LapseTensor

/// `LoadLatent {path, key = "latent"}` → `latent`.
///
/// Reads latents saved by a reference implementation (`safetensors.torch.save_file({"latent": t}, path)`) so a
/// graph can continue from, or be compared against, the reference's state: video latents `[B, C, F, h, w]` as
/// diffusers' video pipelines lay them out, or an image latent `[B, C, h, w]` taken as one frame. F16/BF16 files
/// are widened to float32. The frame rate comes from the file's `frame_rate` metadata (`SaveLatent` writes it),
/// else 8.
public struct LoadLatent: Node {
    public static let schema = NodeSchema(
        type: "LoadLatent", category: "video/diffusion/parity",
        summary: "Reads latents [B, C, F, h, w] (or an image latent [B, C, h, w]) from a .safetensors file",
        inputs: [
            InputSpec("path", .string, doc: ".safetensors file, e.g. written by SaveLatent or safetensors.torch.save_file"),
            InputSpec("key", .string, default: .string("latent"), doc: "name of the tensor in the file"),
            InputSpec("fps", .float, default: .float(8), min: 0.1, max: 240,
                      doc: "frame rate of the decoded video when the file's metadata names none (SaveLatent's files do)"),
        ],
        outputs: [OutputSpec("latent", .latent, doc: "[B, C, F, h, w] float32 latents, as the UNet sees them")],
        inputFileParams: ["path"])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let path = try inputs.string("path"), key = try inputs.string("key")
        let loaded = try SafetensorsInput.read(path: path, key: key, node: "LoadLatent")
        var tensor = loaded.tensor
        let s = tensor.shape
        switch s.count {
        case 5: break
        case 4: tensor = tensor.reshaped([s[0], s[1], 1, s[2], s[3]])
        default:
            throw NodeError.invalidValue(port: "key", reason: "tensor \"\(key)\" of \(path) has shape \(s); latents are "
                                         + "[B, C, F, h, w] (video, diffusers' layout) or [B, C, h, w] (one image)")
        }
        var frameRate = inputs.has("fps") ? try inputs.float("fps") : 8
        if let text = loaded.metadata[Self.frameRateKey], let fps = Double(text), fps.isFinite, fps > 0 { frameRate = fps }
        context.log("\((path as NSString).lastPathComponent) [\(key)]: latents \(tensor.shape) (\(loaded.dtype))")
        return NodeOutputs("latent", .latent, LatentValue(tensor: tensor, frameRate: frameRate))
    }

    /// The `__metadata__` entry carrying `LatentValue.frameRate` through a file.
    public static let frameRateKey = "frame_rate"
}
