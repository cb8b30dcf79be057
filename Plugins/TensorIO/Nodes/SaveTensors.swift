import LapseGraph
import LapseWeights

/// `SaveTensors {path, dtype, overwrite}` ← `tensors`: writes a tensor collection as safetensors, atomically. The path
/// may hold `{n}` (the next free number); tensors come from no media file, so `{stem}` is refused.
struct SaveTensors: Node {
    static let schema = NodeSchema(
        type: "SaveTensors", category: "io/tensors",
        summary: "Write tensors to a .safetensors file",
        inputs: [
            InputSpec("tensors", .tensors, doc: "the tensors to write"),
            InputSpec("path", .string, doc: "destination .safetensors file, written atomically; {n} in the file name picks the next free number"),
            InputSpec("dtype", .string, default: .string("F32"), allowed: ["F32", "F16", "BF16"],
                      doc: "element type written"),
            NodeSchema.overwriteInput,
        ],
        isOutput: true,
        outputFileParams: ["path"], checkParameters: NodeSchema.outputPathCheck(["path"]))

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let weights = try inputs.get("tensors", .tensors)
        let path = try inputs.string("path")
        let name = try inputs.string("dtype")
        guard let dtype = DType(rawValue: name), [.f32, .f16, .bf16].contains(dtype) else {
            throw NodeError.invalidValue(port: "dtype", reason: "\"\(name)\" is not F32, F16 or BF16")
        }
        let target = try OutputPathTemplate(path).target(stem: nil, overwrite: try inputs.overwrite())
        try SafeTensors.write(weights, dtype: dtype, to: target.path, replacing: target.replacing)
        context.log("wrote \(weights.count) tensors to \(target.path)")
        return .none
    }
}
