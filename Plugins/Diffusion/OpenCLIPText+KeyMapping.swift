import Foundation
import LapseWeights

/// Which hidden state of an open_clip text tower conditions the model: `FrozenOpenCLIPEmbedder.layer` of Stable
/// Diffusion 2 and ModelScope (MS-Vid2Vid-XL, StreamingT2V's refiner, uses `penultimate`).
public enum OpenCLIPTextLayer: String, Sendable {
    /// Every residual block, then `ln_final`.
    case last
    /// Every residual block but the last, then `ln_final`; the last block is never read.
    case penultimate
}

/// Where an open_clip text tower sits in a state dict, and its sizes, read from names and shapes only.
struct OpenCLIPTextTower {
    /// Prefix of its names: empty for a whole open_clip CLIP state dict, `cond_stage_model.model.` in an SD2 file.
    var root: String
    var vocabSize: Int, width: Int, contextLength: Int, mlpWidth: Int
    /// Residual blocks the file holds.
    var blocks: Int
    /// Width of `text_projection`'s output, when the file has one (not used by the encoder).
    var projectionDim: Int?

    /// What the tower is expected to hold, for error messages.
    static let expectation = "an open_clip text tower (token_embedding.weight, positional_embedding, "
        + "transformer.resblocks.N.attn.in_proj_weight…, ln_final.weight) at the top of the file as in "
        + "open_clip_pytorch_model.bin, or under a prefix such as an SD2 checkpoint's cond_stage_model.model."

    /// Finds the one tower in `weights`: the prefix of a `token_embedding.weight` that has a `positional_embedding`
    /// beside it (transformers' `text_model.embeddings.token_embedding.weight` has not).
    init(in weights: Weights) throws {
        let component = "CLIPValue.openCLIPText (\(weights.origin))"
        let roots = weights.keys.filter { $0 == "token_embedding.weight" || $0.hasSuffix(".token_embedding.weight") }
            .map { String($0.dropLast("token_embedding.weight".count)) }
            .filter { weights.contains($0 + "positional_embedding") }
        if roots.count > 1 {
            throw DiffusionError.badInput(component: component, reason: "holds \(roots.count) open_clip text towers (under "
                                          + roots.map { $0.isEmpty ? "the top" : $0 }.joined(separator: ", ")
                                          + "): scope the weights to the one to load")
        }
        guard let root = roots.first else {
            throw DiffusionError.badInput(component: component,
                                          reason: "found \(Self.describe(weights)); expected \(Self.expectation)")
        }
        func shape(_ name: String, rank: Int) throws -> [Int] {
            guard let s = weights.shape(of: root + name) else {
                throw DiffusionError.missingWeight(component: component, key: root + name,
                                                   closeMatches: DiffusionError.closeMatches(to: root + name, in: weights.keys))
            }
            guard s.count == rank else {
                throw DiffusionError.badInput(component: component, reason: "\(root + name) has shape \(s), a rank-\(rank) tensor was expected")
            }
            return s
        }
        let token = try shape("token_embedding.weight", rank: 2)
        let positions = try shape("positional_embedding", rank: 2)
        let blockPrefix = root + "transformer.resblocks."
        let indices = Set(weights.keys.compactMap { key -> Int? in
            guard key.hasPrefix(blockPrefix) else { return nil }
            return Int(key.dropFirst(blockPrefix.count).prefix { $0 != "." })
        })
        guard let deepest = indices.max() else {
            throw DiffusionError.missingWeight(component: component, key: blockPrefix + "0.attn.in_proj_weight",
                                               closeMatches: DiffusionError.closeMatches(to: blockPrefix + "0.attn.in_proj_weight", in: weights.keys))
        }
        let fc = try shape("transformer.resblocks.0.mlp.c_fc.weight", rank: 2)
        self.root = root
        vocabSize = token[0]
        width = token[1]
        contextLength = positions[0]
        mlpWidth = fc[0]
        blocks = deepest + 1
        projectionDim = weights.shape(of: root + "text_projection").flatMap { $0.count == 2 ? $0[1] : nil }
    }

    /// A short account of what a file that is not an open_clip text tower holds.
    static func describe(_ weights: Weights) -> String {
        if weights.isEmpty { return "no tensors" }
        if CLIPTextModel.transformersWeights(from: weights).contains("text_model.embeddings.token_embedding.weight") {
            return "a transformers CLIPTextModel (text_model.embeddings.token_embedding.weight…), which LoadCLIP loads"
        }
        let sample = weights.keys.prefix(3).joined(separator: ", ")
        if weights.keys.contains(where: { $0.hasPrefix("visual.") || $0.contains(".visual.") }) {
            return "\(weights.count) tensors with an open_clip vision tower but no text tower (\(sample)…)"
        }
        return "\(weights.count) tensors such as \(sample)"
    }

    /// The configuration of its first `layers` blocks: 64-wide heads (every open_clip text config has
    /// `heads = width / 64`), erf GELU (open_clip's `nn.GELU` unless `quick_gelu`), LayerNorm eps 1e-5, open_clip's
    /// special ids and padding 0.
    func config(layers: Int) -> CLIPTextConfig {
        CLIPTextConfig(vocabSize: vocabSize, hiddenSize: width, intermediateSize: mlpWidth, numHiddenLayers: layers,
                       numAttentionHeads: width / 64, maxPositionEmbeddings: contextLength, hiddenAct: "gelu",
                       layerNormEps: 1e-5, projectionDim: projectionDim, bosTokenId: 49406, eosTokenId: 49407, padTokenId: 0)
    }

    /// Every tensor the first `layers` blocks need, under open_clip's names (with the root), with its shape.
    func expectedShapes(layers: Int) -> [String: [Int]] {
        let d = width, f = mlpWidth
        var shapes: [String: [Int]] = [
            root + "token_embedding.weight": [vocabSize, d],
            root + "positional_embedding": [contextLength, d],
            root + "ln_final.weight": [d], root + "ln_final.bias": [d],
        ]
        for i in 0..<layers {
            let b = root + "transformer.resblocks.\(i)."
            shapes.merge(CLIPEncoderLayer.openCLIPBlockShapes(prefix: b, width: d, mlp: f)) { _, block in block }
        }
        return shapes
    }
}

extension CLIPTextModel {
    /// The first `layers` residual blocks (default: all) of the open_clip text tower in `weights`, with the
    /// embeddings and `ln_final`, under transformers' `CLIPTextModel` names: `token_embedding.weight` →
    /// `text_model.embeddings.token_embedding.weight`, `positional_embedding` → `…position_embedding.weight`,
    /// `transformer.resblocks.N.` → `text_model.encoder.layers.N.` with `ln_1`/`ln_2` → `layer_norm1`/`layer_norm2`,
    /// `attn.in_proj_weight`/`_bias` split by rows into `self_attn.q_proj`/`k_proj`/`v_proj`, `attn.out_proj` →
    /// `self_attn.out_proj`, `mlp.c_fc`/`c_proj` → `mlp.fc1`/`fc2`, and `ln_final` → `final_layer_norm`.
    ///
    /// The tower is found at the top (open_clip's `open_clip_pytorch_model.bin`) or under any prefix (an SD2 single
    /// file's `cond_stage_model.model.`). Everything else — later blocks, `text_projection`, `logit_scale`,
    /// `visual.*` — is left out. Nothing is read: names and shapes are checked, tensors stay lazy, and q, k and v
    /// are cut from the file's rows when the model asks for them.
    public static func transformersWeights(fromOpenCLIP weights: Weights, layers: Int? = nil) throws -> Weights {
        try transformersWeights(fromOpenCLIP: weights, tower: OpenCLIPTextTower(in: weights), layers: layers)
    }

    static func transformersWeights(fromOpenCLIP weights: Weights, tower: OpenCLIPTextTower, layers: Int?) throws -> Weights {
        let layers = layers ?? tower.blocks
        let component = "CLIPValue.openCLIPText (\(weights.origin))"
        guard (0...tower.blocks).contains(layers) else {
            throw DiffusionError.badInput(component: component, reason: "asks for \(layers) blocks; the file holds \(tower.blocks)")
        }
        let report = weights.report(expected: tower.expectedShapes(layers: layers).mapValues { Optional($0) })
        if let first = report.missing.first {
            throw DiffusionError.missingWeight(component: component, key: first,
                                               closeMatches: report.closeMatches[first] ?? DiffusionError.closeMatches(to: first, in: weights.keys))
        }
        if let bad = report.shapeMismatches.first {
            throw DiffusionError.weightShape(component: component, key: bad.name, expected: bad.expected, actual: bad.actual)
        }
        // Every name kept is renamed under a marker no checkpoint name starts with; scoping to it drops the rest.
        let keep = "\u{1}openclip-text."
        let r = tower.root
        var rules: [Weights.RenameRule] = [
            .exact(r + "token_embedding.weight", keep + "text_model.embeddings.token_embedding.weight"),
            .exact(r + "positional_embedding", keep + "text_model.embeddings.position_embedding.weight"),
            .exact(r + "ln_final.weight", keep + "text_model.final_layer_norm.weight"),
            .exact(r + "ln_final.bias", keep + "text_model.final_layer_norm.bias"),
        ]
        for i in 0..<layers {
            rules.append(.prefix(r + "transformer.resblocks.\(i).", keep + "text_model.encoder.layers.\(i)."))
        }
        for (from, to) in [(".ln_1.", ".layer_norm1."), (".ln_2.", ".layer_norm2."), (".attn.out_proj.", ".self_attn.out_proj."),
                           (".attn.in_proj_", ".self_attn.in_proj_"), (".mlp.c_fc.", ".mlp.fc1."), (".mlp.c_proj.", ".mlp.fc2.")] {
            rules.append(.substring(from, to))
        }
        var mapped = weights.renamed(rules).scoped(keep)
        if !r.isEmpty { mapped.origin = "\(weights.origin) [under \(r)]" }
        for i in 0..<layers {
            let p = "text_model.encoder.layers.\(i).self_attn."
            // nn.MultiheadAttention's fused projection: rows q, then k, then v.
            for (fused, suffix) in [("in_proj_weight", "weight"), ("in_proj_bias", "bias")] {
                mapped = try mapped.splittingRows(of: p + fused, into: ["q_proj", "k_proj", "v_proj"].map { p + $0 + "." + suffix })
            }
        }
        return mapped
    }
}

extension CLIPTextConfig {
    /// The configuration of the open_clip text tower in `weights` as `layer` runs it, from names and shapes only:
    /// width from `token_embedding`, context length from `positional_embedding`, MLP width from `c_fc`, blocks from
    /// the `resblocks` present (one fewer for `.penultimate`), `width / 64` heads, erf GELU.
    public static func openCLIPText(from weights: Weights, layer: OpenCLIPTextLayer = .penultimate) throws -> CLIPTextConfig {
        let tower = try OpenCLIPTextTower(in: weights)
        return try tower.config(layers: layers(of: tower, layer, origin: weights.origin))
    }

    fileprivate static func layers(of tower: OpenCLIPTextTower, _ layer: OpenCLIPTextLayer, origin: String) throws -> Int {
        let component = "CLIPValue.openCLIPText (\(origin))"
        guard tower.width % 64 == 0 else {
            throw DiffusionError.badConfig(component: component, field: "text_cfg.heads",
                                           reason: "width \(tower.width) (token_embedding.weight) is not a multiple of open_clip's 64-wide heads")
        }
        switch layer {
        case .last: return tower.blocks
        case .penultimate:
            guard tower.blocks >= 2 else {
                throw DiffusionError.badInput(component: component,
                                              reason: "the penultimate layer needs at least 2 residual blocks; the file holds \(tower.blocks)")
            }
            return tower.blocks - 1
        }
    }
}

extension CLIPValue {
    /// An open_clip text tower (`open_clip_pytorch_model.bin` of ViT-H-14, as MS-Vid2Vid-XL's
    /// `FrozenOpenCLIPEmbedder` loads it, or an SD2 single file's `cond_stage_model.model.`) as a CLIP value that
    /// `TextEncode` encodes prompts with unchanged: the embeddings, the blocks `layer` runs (all but the last for
    /// `.penultimate`, whose last block is never read) and `ln_final`, under transformers names
    /// (`CLIPTextModel.transformersWeights(fromOpenCLIP:layers:)`), with the sizes the weights show
    /// (`CLIPTextConfig.openCLIPText(from:layer:)`). `visual.*`, `text_projection` and `logit_scale` are ignored.
    ///
    /// `tokenizer` must follow open_clip's rules (`CLIPTokenizer(openCLIPVocabularyFile:)`): the embedder tokenizes
    /// with `open_clip.tokenize`, whose zero padding the encoder attends to. Names and shapes are checked here
    /// without reading tensors, so a file that is not an open_clip text tower fails at load, saying what it holds.
    public static func openCLIPText(weights: Weights, tokenizer: CLIPTokenizer, layer: OpenCLIPTextLayer = .penultimate) throws -> CLIPValue {
        guard tokenizer.textRules == .openCLIP else {
            throw DiffusionError.badConfig(component: "CLIPValue.openCLIPText", field: "tokenizer",
                                           reason: "follows transformers' rules (padding id \(tokenizer.padID)); an open_clip text tower "
                                               + "is fed open_clip.tokenize's ids, padded with 0: build it with CLIPTokenizer(openCLIPVocabularyFile:)")
        }
        let tower = try OpenCLIPTextTower(in: weights)
        let layers = try CLIPTextConfig.layers(of: tower, layer, origin: weights.origin)
        let mapped = try CLIPTextModel.transformersWeights(fromOpenCLIP: weights, tower: tower, layers: layers)
        return try CLIPValue.checked(config: tower.config(layers: layers), weights: mapped, tokenizer: tokenizer)
    }
}
