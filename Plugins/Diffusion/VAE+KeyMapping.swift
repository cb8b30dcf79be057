import LapseWeights

extension AutoencoderKL {
    /// Prefix of the VAE inside an LDM / SD1.x single-file checkpoint.
    public static let singleFilePrefix = "first_stage_model."

    /// The VAE tensors of `weights` under diffusers names. diffusers-named weights pass through; an LDM single-file
    /// checkpoint (`first_stage_model.encoder.down.N.block.M.…`, `mid.attn_1.q/k/v/proj_out`, …) or a bare LDM VAE
    /// file (`encoder.down.0.…`, as standalone VAE downloads ship) is renamed lazily. LDM's attention projections
    /// are 1×1 convs `[C, C, 1, 1]`; the model accepts them as linears. LDM numbers decoder blocks from the lowest
    /// resolution up (`decoder.up.0` is the last diffusers up block), so they are reversed.
    public static func diffusersWeights(from weights: Weights, config: AutoencoderKLConfig) -> Weights {
        var source = weights.scoped(singleFilePrefix)
        if source.isEmpty {
            guard weights.keys.contains(where: { $0.hasPrefix("encoder.down.") || $0.hasPrefix("decoder.up.") }) else {
                return weights
            }
            source = weights
        }
        var rules: [Weights.RenameRule] = []
        for key in source.keys {
            if let name = diffusersName(ldm: key, blocks: config.blockOutChannels.count), name != key {
                rules.append(.exact(key, name))
            }
        }
        return source.renamed(rules)
    }

    /// The diffusers name of one LDM VAE tensor name (without `first_stage_model.`), or nil if it is not one.
    public static func diffusersName(ldm key: String, blocks: Int) -> String? {
        let parts = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 3 else {
            return ["quant_conv", "post_quant_conv"].contains(parts.first ?? "") ? key : nil
        }
        func rest(_ from: Int) -> String { parts[from...].joined(separator: ".") }
        func resnet(_ from: Int) -> String? {
            let map = ["norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"]
            guard parts.count > from + 1, let name = map[parts[from]] else { return nil }
            return name + "." + rest(from + 1)
        }
        let part = parts[0]
        switch part {
        case "quant_conv", "post_quant_conv": return key
        case "encoder", "decoder": break
        default: return nil
        }
        let p = part + "."
        switch parts[1] {
        case "conv_in", "conv_out": return key
        case "norm_out": return p + "conv_norm_out." + rest(2)
        case "down", "up":
            guard parts.count >= 5, let n = Int(parts[2]) else { return nil }
            let diffusersIndex = parts[1] == "down" ? n : blocks - 1 - n
            let block = p + "\(parts[1])_blocks.\(diffusersIndex)."
            switch parts[3] {
            case "block":
                guard let m = Int(parts[4]) else { return nil }
                return resnet(5).map { block + "resnets.\(m)." + $0 }
            case "downsample", "upsample":
                guard parts[4] == "conv" else { return nil }
                return block + "\(parts[3])rs.0.conv." + rest(5)
            default: return nil
            }
        case "mid":
            switch parts[2] {
            case "block_1": return resnet(3).map { p + "mid_block.resnets.0." + $0 }
            case "block_2": return resnet(3).map { p + "mid_block.resnets.1." + $0 }
            case "attn_1":
                let map = ["norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"]
                guard parts.count >= 5, let name = map[parts[3]] else { return nil }
                return p + "mid_block.attentions.0.\(name)." + rest(4)
            default: return nil
            }
        default:
            return nil
        }
    }
}
