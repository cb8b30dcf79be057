import LapseWeights

extension CLIPTextModel {
    /// Prefixes under which single-file checkpoints store the CLIP text encoder: LDM / SD1.x
    /// (`cond_stage_model.transformer.`) and SDXL's first embedder (`conditioner.embedders.0.transformer.`).
    public static let singleFilePrefixes = ["cond_stage_model.transformer.", "conditioner.embedders.0.transformer."]

    /// The text-encoder tensors of `weights` under transformers' hub names (`text_model.embeddings.…`), from any of:
    /// - hub / transformers 4 files (`text_model.X`): unchanged;
    /// - transformers 5 in-memory state dicts, which drop the level (`embeddings.X`, `encoder.X`, `final_layer_norm.X`);
    /// - single-file (LDM) checkpoints: `cond_stage_model.transformer.text_model.X`, or without `text_model.` as old
    ///   transformers versions wrote it, and SDXL's `conditioner.embedders.0.transformer.…`.
    /// Renaming keeps checkpoint entries lazy, so nothing is read here.
    public static func transformersWeights(from weights: Weights) -> Weights {
        var source = weights
        for prefix in singleFilePrefixes {
            let scoped = weights.scoped(prefix)
            if !scoped.isEmpty {
                source = scoped
                break
            }
        }
        if source.contains("text_model.embeddings.token_embedding.weight") { return source }
        guard source.contains("embeddings.token_embedding.weight") else { return source }
        return source.renamed([.prefix("", "text_model.")])
    }

    /// Every tensor name the model reads, with its shape.
    public static func expectedShapes(_ config: CLIPTextConfig) -> [String: [Int]] {
        let d = config.hiddenSize, f = config.intermediateSize
        var shapes: [String: [Int]] = [
            "text_model.embeddings.token_embedding.weight": [config.vocabSize, d],
            "text_model.embeddings.position_embedding.weight": [config.maxPositionEmbeddings, d],
            "text_model.final_layer_norm.weight": [d],
            "text_model.final_layer_norm.bias": [d],
        ]
        for i in 0..<config.numHiddenLayers {
            let p = "text_model.encoder.layers.\(i)."
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                shapes[p + "self_attn.\(proj).weight"] = [d, d]
                shapes[p + "self_attn.\(proj).bias"] = [d]
            }
            for norm in ["layer_norm1", "layer_norm2"] {
                shapes[p + "\(norm).weight"] = [d]
                shapes[p + "\(norm).bias"] = [d]
            }
            shapes[p + "mlp.fc1.weight"] = [f, d]
            shapes[p + "mlp.fc1.bias"] = [f]
            shapes[p + "mlp.fc2.weight"] = [d, f]
            shapes[p + "mlp.fc2.bias"] = [d]
        }
        return shapes
    }
}
