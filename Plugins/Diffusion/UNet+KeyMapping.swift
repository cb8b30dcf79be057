import LapseWeights

extension UNet2DConditionModel {
    /// Prefix of the UNet inside an LDM / SD1.x single-file checkpoint.
    public static let singleFilePrefix = "model.diffusion_model."

    /// The UNet tensors of `weights` under diffusers names. diffusers-named weights pass through unchanged; an LDM
    /// single-file checkpoint (`model.diffusion_model.input_blocks.N.…`, `middle_block`, `output_blocks`,
    /// `time_embed`, `out.`) is scoped to its UNet and renamed, lazily (nothing is read here).
    ///
    /// LDM numbers its blocks flatly: `input_blocks.0` is `conv_in`; then each down block contributes
    /// `layers_per_block` entries (`.0` resnet, `.1` transformer) plus one for its downsampler (`.0.op`);
    /// `output_blocks` likewise with `layers_per_block + 1` entries per up block, the upsampler riding on the last
    /// one (`.1.conv` after a resnet-only entry, `.2.conv` after a transformer).
    public static func diffusersWeights(from weights: Weights, config: UNet2DConditionConfig) -> Weights {
        let scoped = weights.scoped(singleFilePrefix)
        guard !scoped.isEmpty else { return weights }
        var rules: [Weights.RenameRule] = []
        for key in scoped.keys {
            if let name = diffusersName(ldm: key, layersPerBlock: config.layersPerBlock), name != key {
                rules.append(.exact(key, name))
            }
        }
        return scoped.renamed(rules)
    }

    /// The diffusers name of one LDM UNet tensor name (without `model.diffusion_model.`), or nil if it is not part
    /// of an SD1.x UNet.
    public static func diffusersName(ldm key: String, layersPerBlock lpb: Int) -> String? {
        let parts = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        func rest(_ from: Int) -> String { parts[from...].joined(separator: ".") }
        func resnet(_ from: Int) -> String? {
            guard parts.count > from + 1 else { return nil }
            let map = ["in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                       "out_layers.0": "norm2", "out_layers.3": "conv2"]
            if parts[from] == "skip_connection" { return "conv_shortcut." + rest(from + 1) }
            guard parts.count > from + 2, let name = map[parts[from] + "." + parts[from + 1]] else { return nil }
            return name + "." + rest(from + 2)
        }
        guard let head = parts.first else { return nil }
        switch head {
        case "time_embed":
            guard parts.count >= 3 else { return nil }
            switch parts[1] {
            case "0": return "time_embedding.linear_1." + rest(2)
            case "2": return "time_embedding.linear_2." + rest(2)
            default: return nil
            }
        case "out":
            guard parts.count >= 3 else { return nil }
            switch parts[1] {
            case "0": return "conv_norm_out." + rest(2)
            case "2": return "conv_out." + rest(2)
            default: return nil
            }
        case "input_blocks":
            guard parts.count >= 4, let n = Int(parts[1]) else { return nil }
            if n == 0 { return parts[2] == "0" ? "conv_in." + rest(3) : nil }
            let block = (n - 1) / (lpb + 1), layer = (n - 1) % (lpb + 1)
            let p = "down_blocks.\(block)."
            if layer == lpb {
                guard parts[2] == "0", parts[3] == "op", parts.count >= 5 else { return nil }
                return p + "downsamplers.0.conv." + rest(4)
            }
            switch parts[2] {
            case "0": return resnet(3).map { p + "resnets.\(layer)." + $0 }
            case "1": return p + "attentions.\(layer)." + rest(3)
            default: return nil
            }
        case "middle_block":
            guard parts.count >= 4 else { return nil }
            switch parts[1] {
            case "0": return resnet(2).map { "mid_block.resnets.0." + $0 }
            case "1": return "mid_block.attentions.0." + rest(2)
            case "2": return resnet(2).map { "mid_block.resnets.1." + $0 }
            default: return nil
            }
        case "output_blocks":
            guard parts.count >= 4, let n = Int(parts[1]) else { return nil }
            let p = "up_blocks.\(n / (lpb + 1)).", layer = n % (lpb + 1)
            if parts[2] != "0", parts[3] == "conv" {
                // Upsamplers only ever hold a bare conv; transformers start with norm/proj_in/….
                guard layer == lpb, parts.count >= 5 else { return nil }
                return p + "upsamplers.0.conv." + rest(4)
            }
            switch parts[2] {
            case "0": return resnet(3).map { p + "resnets.\(layer)." + $0 }
            case "1": return p + "attentions.\(layer)." + rest(3)
            default: return nil
            }
        default:
            return nil
        }
    }
}
