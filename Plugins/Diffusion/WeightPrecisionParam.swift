import LapseGraph
import LapseWeights

extension WeightPrecision {
    /// The `precision` param of the model loaders (LoadCheckpoint, LoadMotionModule, LoadVid2VidModel,
    /// LoadStreamingT2V); validation refuses any value but `auto`, `fp32` and `bf16`.
    public static let input = InputSpec(
        "precision", .string, default: .string("auto"), allowed: parameterValues,
        doc: "how layer weights stay in memory: auto keeps an fp16/bf16 file's weights in 16 bits and widens them per layer (exact, half the memory); fp32 widens at load; bf16 rounds even fp32 files to bfloat16 (lossy)")

    /// The loader's validated `precision` param; `auto` (the default) when the inputs lack it, as those a caller
    /// builds by hand to run a loader outside a graph may (a graph's inputs always carry the default).
    public static func param(_ inputs: NodeInputs) throws -> WeightPrecision {
        guard inputs.has("precision") else { return .auto }
        let text = try inputs.string("precision")
        guard let precision = WeightPrecision(rawValue: text) else {
            throw NodeError.invalidValue(port: "precision", reason: "\"\(text)\" is not one of \(parameterValues.joined(separator: ", "))")
        }
        return precision
    }
}
