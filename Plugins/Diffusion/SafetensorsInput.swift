import Foundation
import LapseGraph
import LapseTensor
import LapseWeights

/// The one reader behind the parity tools' loaders (`LoadLatent`, `LoadConditioning`): a named floating-point
/// tensor from a safetensors file, widened to float32, with errors that name the file, the key and the fix.
enum SafetensorsInput {
    /// A tensor read from a file, with the file's `__metadata__`.
    struct Loaded {
        var tensor: Tensor
        var dtype: DType
        var metadata: [String: String]
    }

    /// Element types accepted: what the reference libraries save latents and embeddings in.
    static let floatTypes: [DType] = [.f32, .f16, .bf16, .f64]

    /// Reads tensor `key` of the safetensors file at `path` (opened through the input-file rule) into memory.
    /// `node` names the loader in the fix suggested for a file of another format.
    static func read(path: String, key: String, node: String) throws -> Loaded {
        guard !key.isEmpty else {
            throw NodeError.invalidValue(port: "key", reason: "empty: give the name of the tensor to read from \(path)")
        }
        let file = try CheckpointFile.open(path)
        guard file.format == .safetensors else {
            throw NodeError.invalidValue(port: "path", reason: "\(path) is a \(file.format.rawValue) file; \(node) reads safetensors "
                                         + "(in Python: safetensors.torch.save_file({\"\(key)\": tensor.contiguous()}, path))")
        }
        guard let info = file.info(of: key) else {
            let present = file.keys.isEmpty ? "none" : file.keys.prefix(20).map { "\"\($0)\"" }.joined(separator: ", ")
                + (file.keys.count > 20 ? " and \(file.keys.count - 20) more" : "")
            throw NodeError.invalidValue(port: "key", reason: "\(path) has no tensor \"\(key)\"; its tensors: \(present) "
                                         + "(set key to one of them)")
        }
        guard floatTypes.contains(info.dtype) else {
            throw NodeError.invalidValue(port: "key", reason: "tensor \"\(key)\" of \(path) is \(info.dtype); \(node) reads "
                                         + "F32, F16 or BF16 (convert with tensor.float() before saving)")
        }
        guard !info.shape.contains(0) else {
            throw NodeError.invalidValue(port: "key", reason: "tensor \"\(key)\" of \(path) is empty (shape \(info.shape))")
        }
        // Copied out of the mapping, so a file rewritten or truncated later cannot pull the data from under a run.
        let mapped = try file.tensor(key)
        return Loaded(tensor: Tensor(shape: mapped.shape, data: mapped.scalars), dtype: info.dtype, metadata: file.metadata)
    }
}
