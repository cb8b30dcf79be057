import LapseWeights

extension MotionAdapter {
    /// The motion-module tensors of `weights` under diffusers' `MotionAdapter` names.
    ///
    /// Accepts diffusers files as they are and original AnimateDiff checkpoints (`mm_sd_v15*.ckpt`,
    /// `v3_sd15_mm.ckpt`), whose modules read `….motion_modules.M.temporal_transformer.transformer_blocks.0.
    /// attention_blocks.0.to_q.weight`, `norms.0`, `ff_norm`; a `module.` prefix (DataParallel) is dropped. Only
    /// `motion_modules` tensors are kept, so a whole video UNet can be passed. AnimateDiff's stored `pos_encoder.pe`
    /// tables are dropped: the modules rebuild the same sinusoids.
    public static func diffusersWeights(from weights: Weights) -> Weights {
        let stripped = weights.renamed([.prefix("module.", "")])
        // Anything that is not a motion-module tensor is first renamed out of the way (exact rules match the
        // original names, so they go before the substring rules), then dropped.
        var rules: [Weights.RenameRule] = stripped.keys
            .filter { !$0.contains("motion_modules.") || $0.hasSuffix(".pe") }
            .map { .exact($0, "ignored." + $0) }
        rules += [
            .substring(".temporal_transformer.", "."),
            .substring(".attention_blocks.0.", ".attn1."), .substring(".attention_blocks.1.", ".attn2."),
            .substring(".norms.0.", ".norm1."), .substring(".norms.1.", ".norm2."), .substring(".ff_norm.", ".norm3."),
        ]
        return stripped.renamed(rules).removingPrefix("ignored.")
    }

    /// Length of the position table an original AnimateDiff file stores (`…pos_encoder.pe`, `[1, L, C]`), if any.
    static func positionTableLength(in weights: Weights) -> Int? {
        for key in weights.keys where key.hasSuffix("pos_encoder.pe") {
            if let shape = weights.shape(of: key), shape.count == 3 { return shape[1] }
        }
        return nil
    }
}

extension Weights {
    /// The collection without the names that start with `prefix`.
    fileprivate func removingPrefix(_ prefix: String) -> Weights {
        var out = self
        for key in keys where key.hasPrefix(prefix) { out[key] = nil }
        return out
    }
}
