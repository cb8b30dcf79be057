import Foundation
import LapseGraph
import LapseTensor

/// `LoadConditioning {path, key = "conditioning"}` → `conditioning`.
///
/// Reads prompt embeddings saved by a reference implementation (e.g. a pipeline's `prompt_embeds`), so a UNet can be
/// compared with the reference's on exactly the same text conditioning: `[B, tokens, width]`, or `[tokens, width]`
/// taken as a batch of one. F16/BF16 files are widened to float32. The prompts are unknown and left empty.
public struct LoadConditioning: Node {
    public static let schema = NodeSchema(
        type: "LoadConditioning", category: "video/diffusion/parity",
        summary: "Reads prompt embeddings [B, tokens, width] from a .safetensors file",
        inputs: [
            InputSpec("path", .string, doc: ".safetensors file, e.g. written by safetensors.torch.save_file"),
            InputSpec("key", .string, default: .string("conditioning"), doc: "name of the tensor in the file"),
        ],
        outputs: [OutputSpec("conditioning", .conditioning, doc: "[B, tokens, width] float32 embeddings")],
        inputFileParams: ["path"])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let path = try inputs.string("path"), key = try inputs.string("key")
        let loaded = try SafetensorsInput.read(path: path, key: key, node: "LoadConditioning")
        var embeddings = loaded.tensor
        let s = embeddings.shape
        switch s.count {
        case 3: break
        case 2: embeddings = embeddings.reshaped([1, s[0], s[1]])
        default:
            throw NodeError.invalidValue(port: "key", reason: "tensor \"\(key)\" of \(path) has shape \(s); conditioning is "
                                         + "[B, tokens, width] (e.g. [1, 77, 1024] for ModelScope)")
        }
        context.log("\((path as NSString).lastPathComponent) [\(key)]: conditioning \(embeddings.shape) (\(loaded.dtype))")
        let prompts = [String](repeating: "", count: embeddings.shape[0])
        return NodeOutputs("conditioning", .conditioning, Conditioning(embeddings: embeddings, prompts: prompts))
    }
}
