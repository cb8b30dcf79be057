import LapseGraph

/// `Text {text, prefix = "", suffix = ""}` → `text`.
///
/// A prompt held once and linked to every node that needs it, so `--set prompt.text=…` changes a whole pipeline:
/// StreamingT2V's graphs encode one prompt with two text encoders, the refiner's with ", " appended as the
/// original does.
public struct Text: Node {
    public static let schema = NodeSchema(
        type: "Text", category: "conditioning",
        summary: "A prompt (or any string) to link to several nodes' String inputs, optionally with a prefix and a suffix",
        inputs: [
            InputSpec("text", .string, default: .string(""), doc: "the text; link it from another Text node to derive one prompt from another"),
            InputSpec("prefix", .string, default: .string(""), doc: "put before the text"),
            InputSpec("suffix", .string, default: .string(""), doc: "put after the text (StreamingT2V's refiner: \", \")"),
        ],
        outputs: [OutputSpec("text", .string, doc: "prefix + text + suffix")])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        NodeOutputs(["text": .string(try inputs.string("prefix") + inputs.string("text") + inputs.string("suffix"))])
    }
}
