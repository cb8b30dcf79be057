import LapseGraph
import LapseWeights

extension DataType where Object == Weights {
    /// A named collection of tensors (a model state dict), read lazily.
    public static var tensors: DataType<Weights> { DataType("Tensors") }
}

/// `LoadTensors {path}` → `tensors`: opens a safetensors, PyTorch or ncnn checkpoint and outputs its model state
/// dict as a lazy `Weights` collection (tensors are read only when a downstream node asks for them).
struct LoadTensors: Node {
    static let schema = NodeSchema(
        type: "LoadTensors", category: "io/tensors",
        summary: "Read tensors from a .safetensors, PyTorch (.pth/.pt/.ckpt/.bin) or ncnn (.param) file",
        inputs: [InputSpec("path", .string, doc: "checkpoint file; the format is detected from its contents")],
        outputs: [OutputSpec("tensors", .tensors, doc: "the state dict (params_ema/state_dict unwrapped, module. prefixes removed)")],
        inputFileParams: ["path"])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let path = try inputs.string("path")
        let weights = try Weights.load(path)
        context.log("loaded \(weights.count) tensors from \(weights.origin)")
        return NodeOutputs("tensors", .tensors, weights)
    }
}
