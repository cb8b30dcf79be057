import Foundation
import LapseGraph
import LapseTensor
import LapseWeights

extension DataType where Object == CLIPValue {
    /// A CLIP or OpenCLIP text encoder (tokenizer + text-transformer weights), as `LoadCLIP` produces it.
    public static var clip: DataType<CLIPValue> { DataType("CLIP") }
}

extension DataType where Object == Conditioning {
    /// Prompt embeddings a denoiser cross-attends to, as `TextEncode` produces them.
    public static var conditioning: DataType<Conditioning> { DataType("Conditioning") }
}

/// A CLIP tokenizer paired with a CLIP text transformer: prompts in, `last_hidden_state` out.
public struct CLIPTextEncoder: Sendable {
    /// The BPE tokenizer.
    public let tokenizer: CLIPTokenizer
    /// The text transformer.
    public let model: CLIPTextModel

    /// Pairs a tokenizer with a model; their vocabularies must agree.
    public init(tokenizer: CLIPTokenizer, model: CLIPTextModel) throws {
        guard tokenizer.vocabularySize <= model.config.vocabSize else {
            throw DiffusionError.badConfig(component: "CLIPTextEncoder", field: "vocab_size",
                                           reason: "model has \(model.config.vocabSize) tokens, tokenizer \(tokenizer.vocabularySize)")
        }
        self.tokenizer = tokenizer
        self.model = model
    }

    /// `[prompts.count, max_position_embeddings, hidden]`: each prompt tokenized to the model's full length (BOS,
    /// ids truncated, EOS, then the tokenizer's padding: EOS as the SD1.5 / AnimateDiff pipelines pad, 0 for
    /// open_clip's tokenizer and folders whose pad token is `!`) and encoded.
    public func encode(_ prompts: [String]) throws -> Tensor {
        let length = model.config.maxPositionEmbeddings
        return try model(prompts.map { tokenizer.encode($0, maxLength: length) })
    }
}

/// Encoded prompt(s): the tensor a UNet cross-attends to, with the text it came from.
public struct Conditioning: Sendable {
    /// `[batch, tokens, width]`, e.g. `[1, 77, 768]` for SD1.5.
    public var embeddings: Tensor
    /// The prompts, one per batch entry.
    public var prompts: [String]

    /// Wraps embeddings and their prompts.
    public init(embeddings: Tensor, prompts: [String]) {
        self.embeddings = embeddings
        self.prompts = prompts
    }
}

extension CLIPTextConfig {
    /// The configuration implied by a state dict's shapes: sizes from the tensors, 64-wide heads (every OpenAI /
    /// OpenCLIP text tower uses them) and `quick_gelu` (OpenAI CLIP; pass a config.json for other activations).
    public static func inferred(from weights: Weights) throws -> CLIPTextConfig {
        let w = CLIPTextModel.transformersWeights(from: weights)
        func shape(_ name: String) throws -> [Int] {
            guard let s = w.shape(of: "text_model." + name) else {
                throw DiffusionError.missingWeight(component: "CLIPTextConfig.inferred (\(weights.origin))", key: "text_model." + name,
                                                   closeMatches: DiffusionError.closeMatches(to: "text_model." + name, in: w.keys))
            }
            return s
        }
        let token = try shape("embeddings.token_embedding.weight")
        let position = try shape("embeddings.position_embedding.weight")
        let fc1 = try shape("encoder.layers.0.mlp.fc1.weight")
        var layers = 0
        while w.contains("text_model.encoder.layers.\(layers).mlp.fc1.weight") { layers += 1 }
        guard token.count == 2, position.count == 2, fc1.count == 2, token[1] % 64 == 0 else {
            throw DiffusionError.badConfig(component: "CLIPTextConfig.inferred (\(weights.origin))", field: "hidden_size",
                                           reason: "cannot infer from token embedding \(token), position \(position), fc1 \(fc1)")
        }
        return CLIPTextConfig(vocabSize: token[0], hiddenSize: token[1], intermediateSize: fc1[0],
                              numHiddenLayers: layers, numAttentionHeads: token[1] / 64,
                              maxPositionEmbeddings: position[0], hiddenAct: "quick_gelu")
    }
}
