import Foundation
import LapseGraph
import LapseWeights

/// `SaveLatent {path}` ← `latent`: writes the latents as float32 under the key `latent` of a safetensors file
/// (atomically), with the frame rate in its metadata, for `LoadLatent` or `safetensors.torch.load_file`. The path may
/// hold `{n}` (the next free number); latents come from no media file, so `{stem}` is refused.
public struct SaveLatent: Node {
    public static let schema = NodeSchema(
        type: "SaveLatent", category: "video/diffusion/parity",
        summary: "Writes latents [B, C, F, h, w] to a .safetensors file (key \"latent\", float32)",
        inputs: [
            InputSpec("latent", .latent, doc: "latents to save"),
            InputSpec("path", .string, doc: "destination .safetensors file, written atomically; {n} in the file name picks the next free number"),
            NodeSchema.overwriteInput,
        ],
        isOutput: true,
        outputFileParams: ["path"], checkParameters: NodeSchema.outputPathCheck(["path"]))

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let latent = try inputs.get("latent", .latent)
        let path = try inputs.string("path")
        guard !path.isEmpty else { throw NodeError.invalidValue(port: "path", reason: "empty: give the .safetensors file to write") }
        let target = try OutputPathTemplate(path).target(stem: nil, overwrite: try inputs.overwrite())
        try SafeTensors.write([(name: "latent", tensor: latent.tensor)],
                              metadata: [LoadLatent.frameRateKey: String(latent.frameRate)], dtype: .f32, to: target.path,
                              replacing: target.replacing)
        context.log("wrote latents \(latent.tensor.shape) to \(target.path)")
        return .none
    }
}
