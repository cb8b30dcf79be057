import Foundation
import LapseGraph
import LapseTensor
import LapseWeights

/// `TextEncode {text}` ← `clip` → `conditioning`.
public struct TextEncode: Node {
    public static let schema = NodeSchema(
        type: "TextEncode", category: "conditioning",
        summary: "Encodes a prompt with CLIP or OpenCLIP (77 tokens, padded as the text encoder's tokenizer pads) into the conditioning a UNet cross-attends to",
        inputs: [
            InputSpec("clip", .clip, doc: "text encoder from LoadCLIP"),
            InputSpec("text", .string, default: .string(""), doc: "the prompt; empty gives the unconditional embedding"),
        ],
        outputs: [OutputSpec("conditioning", .conditioning, doc: "[1, 77, width] last_hidden_state")])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        // Built here on use, so nodes between the loader and this one (LoRA, MagicAdapter) hand on weights only.
        let encoder = try inputs.get("clip", .clip).makeEncoder()
        let text = try inputs.string("text")
        let tokens = encoder.tokenizer.tokenize(text).count
        let limit = encoder.model.config.maxPositionEmbeddings - 2
        if tokens > limit { context.log("prompt has \(tokens) tokens; only the first \(limit) are used") }
        let embeddings = try encoder.encode([text])
        return NodeOutputs("conditioning", .conditioning, Conditioning(embeddings: embeddings, prompts: [text]))
    }
}
