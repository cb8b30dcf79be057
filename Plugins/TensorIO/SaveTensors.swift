import LapseGraph
import LapseWeights

/// `SaveTensors {path}` ← `tensors`: writes a tensor collection as safetensors, atomically.
struct SaveTensors: Node {
    static let schema = NodeSchema(
        type: "SaveTensors", category: "io/tensors",
        summary: "Write tensors to a .safetensors file",
        inputs: [
            InputSpec("tensors", .tensors, doc: "the tensors to write"),
            InputSpec("path", .string, doc: "destination .safetensors file (replaced atomically)"),
            InputSpec("dtype", .string, default: .string("F32"), allowed: ["F32", "F16", "BF16"],
                      doc: "element type written"),
        ],
        isOutput: true,
        outputFileParams: ["path"])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let weights = try inputs.get("tensors", .tensors)
        let path = try inputs.string("path")
        let name = try inputs.string("dtype")
        guard let dtype = DType(rawValue: name), [.f32, .f16, .bf16].contains(dtype) else {
            throw NodeError.invalidValue(port: "dtype", reason: "\"\(name)\" is not F32, F16 or BF16")
        }
        try SafeTensors.write(weights, dtype: dtype, to: path)
        context.log("wrote \(weights.count) tensors to \(path)")
        return .none
    }
}
