import Foundation
import LapseNN
import LapseTensor
import LapseWeights

/// Shape and options of a CLIP text transformer, decoded from a transformers `config.json` (`CLIPTextConfig`
/// keys; a full `CLIPConfig` keeps these under `text_config`).
public struct CLIPTextConfig: Codable, Sendable, Equatable {
    /// Token vocabulary size (49408 for CLIP).
    public var vocabSize: Int
    /// Width of the residual stream.
    public var hiddenSize: Int
    /// Width of the MLP's hidden layer.
    public var intermediateSize: Int
    /// Number of encoder layers.
    public var numHiddenLayers: Int
    /// Attention heads per layer.
    public var numAttentionHeads: Int
    /// Number of learned positions (77): the longest input.
    public var maxPositionEmbeddings: Int
    /// MLP activation: `quick_gelu` (OpenAI CLIP), `gelu` (erf), or `gelu_new` / `gelu_pytorch_tanh` (tanh form).
    public var hiddenAct: String
    /// LayerNorm epsilon.
    public var layerNormEps: Double
    /// Width of the text projection of the full CLIP model (unused by the encoder itself).
    public var projectionDim: Int?
    /// Special token ids as recorded in the config (informational; the tokenizer owns the real ones).
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    public var padTokenId: Int?

    /// The text tower of OpenAI CLIP ViT-L/14, Stable Diffusion 1.x's text encoder.
    public static let vitL14 = CLIPTextConfig(vocabSize: 49408, hiddenSize: 768, intermediateSize: 3072,
                                              numHiddenLayers: 12, numAttentionHeads: 12, maxPositionEmbeddings: 77,
                                              hiddenAct: "quick_gelu", layerNormEps: 1e-5, projectionDim: 768,
                                              bosTokenId: 49406, eosTokenId: 49407, padTokenId: 1)

    /// A configuration from explicit values.
    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                maxPositionEmbeddings: Int, hiddenAct: String = "quick_gelu", layerNormEps: Double = 1e-5,
                projectionDim: Int? = nil, bosTokenId: Int? = nil, eosTokenId: Int? = nil, padTokenId: Int? = nil) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.hiddenAct = hiddenAct
        self.layerNormEps = layerNormEps
        self.projectionDim = projectionDim
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.padTokenId = padTokenId
    }

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case maxPositionEmbeddings = "max_position_embeddings", hiddenAct = "hidden_act", layerNormEps = "layer_norm_eps"
        case projectionDim = "projection_dim", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
        case padTokenId = "pad_token_id"
    }

    /// Decodes a `config.json`, unwrapping `text_config` when it is a full CLIP model's config.
    public static func decode(json data: Data) throws -> CLIPTextConfig {
        struct Wrapper: Decodable { let text_config: CLIPTextConfig }
        if let wrapped = try? JSONDecoder().decode(Wrapper.self, from: data) { return wrapped.text_config }
        return try JSONDecoder().decode(CLIPTextConfig.self, from: data)
    }

    /// The MLP activation, or an error naming the unsupported value.
    func activation() throws -> Activation {
        switch hiddenAct {
        case "quick_gelu": return .quickGELU
        case "gelu": return .gelu
        case "gelu_new", "gelu_pytorch_tanh": return .geluTanh
        default:
            throw DiffusionError.badConfig(component: "CLIPTextModel", field: "hidden_act",
                                           reason: "\"\(hiddenAct)\" is not one of quick_gelu, gelu, gelu_new, gelu_pytorch_tanh")
        }
    }

    func validate() throws {
        for (field, value) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                               ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                               ("max_position_embeddings", maxPositionEmbeddings)] where value < 1 {
            throw DiffusionError.badConfig(component: "CLIPTextModel", field: field, reason: "\(value) must be positive")
        }
        guard hiddenSize % numAttentionHeads == 0 else {
            throw DiffusionError.badConfig(component: "CLIPTextModel", field: "num_attention_heads",
                                           reason: "hidden_size \(hiddenSize) is not divisible by \(numAttentionHeads) heads")
        }
        _ = try activation()
    }
}

/// The CLIP text transformer (transformers' `CLIPTextModel`): token + position embeddings, pre-LayerNorm encoder
/// layers with causal self-attention, and a final LayerNorm; produces `last_hidden_state`, the conditioning
/// Stable Diffusion cross-attends to.
public struct CLIPTextModel: Sendable {
    /// The model's configuration.
    public let config: CLIPTextConfig

    private let tokenEmbedding: Tensor
    private let positionEmbedding: Tensor
    private let layers: [CLIPEncoderLayer]
    private let finalNormWeight: Tensor, finalNormBias: Tensor
    /// Additive causal mask `[1, 1, P, P]`: 0 on and below the diagonal, the most negative float above (as
    /// transformers builds it), so softmax gives future positions exactly zero weight.
    private let causalMask: Tensor

    /// Builds the model from its weights in any layout `transformersWeights(from:)` accepts (hub names,
    /// transformers 5 names, or a whole LDM single-file checkpoint). Extra tensors are ignored.
    public init(config: CLIPTextConfig, weights all: Weights) throws {
        try config.validate()
        let weights = CLIPTextModel.transformersWeights(from: all)
        self.config = config
        let expected = CLIPTextModel.expectedShapes(config)
        let report = weights.report(expected: expected.mapValues { Optional($0) })
        if let first = report.missing.first {
            throw DiffusionError.missingWeight(component: "CLIPTextModel (\(weights.origin))", key: first,
                                               closeMatches: report.closeMatches[first]
                                                   ?? DiffusionError.closeMatches(to: first, in: weights.keys))
        }
        if let bad = report.shapeMismatches.first {
            throw DiffusionError.weightShape(component: "CLIPTextModel (\(weights.origin))", key: bad.name,
                                             expected: bad.expected, actual: bad.actual)
        }
        func w(_ name: String) throws -> Tensor { try weights.tensor("text_model." + name) }
        tokenEmbedding = try w("embeddings.token_embedding.weight")
        positionEmbedding = try w("embeddings.position_embedding.weight")
        let read = WeightReader(weights, component: "CLIPTextModel")
        let d = config.hiddenSize, f = config.intermediateSize, eps = Float(config.layerNormEps)
        let activation = try config.activation()
        layers = try (0..<config.numHiddenLayers).map { i in
            try CLIPEncoderLayer(read, "text_model.encoder.layers.\(i).", names: .transformers, width: d, mlp: f, eps: eps,
                                 heads: config.numAttentionHeads, activation: activation)
        }
        finalNormWeight = try w("final_layer_norm.weight")
        finalNormBias = try w("final_layer_norm.bias")
        let p = config.maxPositionEmbeddings
        var mask = Tensor(zeros: [1, 1, p, p])
        mask.withUnsafeMutableBufferPointer { m in
            for i in 0..<p { for j in (i + 1)..<max(p, i + 1) { m[i * p + j] = -Float.greatestFiniteMagnitude } }
        }
        causalMask = mask
    }

    /// `last_hidden_state` `[B, L, hidden]` for a batch of equal-length token id sequences (L ≤ max positions).
    public func callAsFunction(_ ids: [[Int]]) throws -> Tensor {
        guard let length = ids.first?.count, length > 0 else {
            throw DiffusionError.badInput(component: "CLIPTextModel", reason: "empty batch or empty sequence")
        }
        guard ids.allSatisfy({ $0.count == length }) else {
            throw DiffusionError.badInput(component: "CLIPTextModel", reason: "sequences differ in length: \(ids.map(\.count))")
        }
        guard length <= config.maxPositionEmbeddings else {
            throw DiffusionError.badInput(component: "CLIPTextModel",
                                          reason: "\(length) tokens exceed max_position_embeddings \(config.maxPositionEmbeddings)")
        }
        if let bad = ids.joined().first(where: { $0 < 0 || $0 >= config.vocabSize }) {
            throw DiffusionError.badInput(component: "CLIPTextModel", reason: "token id \(bad) outside vocabulary 0..<\(config.vocabSize)")
        }
        var h = embed(ids, length: length)
        let mask = length == config.maxPositionEmbeddings
            ? causalMask : slice(slice(causalMask, axis: 2, start: 0, end: length), axis: 3, start: 0, end: length)
        for layer in layers { h = layer(h, mask: mask) }
        let eps = Float(config.layerNormEps)
        return layerNorm(h, weight: finalNormWeight, bias: finalNormBias, eps: eps)
    }

    /// Token embedding rows plus the first `length` position embeddings.
    private func embed(_ ids: [[Int]], length: Int) -> Tensor {
        let d = config.hiddenSize
        var out = Tensor(zeros: [ids.count, length, d])
        tokenEmbedding.withUnsafeBufferPointer { tok in
            positionEmbedding.withUnsafeBufferPointer { pos in
                out.withUnsafeMutableBufferPointer { o in
                    for (bi, seq) in ids.enumerated() {
                        for (t, id) in seq.enumerated() {
                            let dst = (bi * length + t) * d
                            for c in 0..<d { o[dst + c] = tok[id * d + c] + pos[t * d + c] }
                        }
                    }
                }
            }
        }
        return out
    }
}
