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

extension AutoencoderKL {
    /// Every tensor of the LDM / modelscope `AutoencoderKL` (`ldm.models.autoencoder`, the VAE inside SD1.x/SD2.x
    /// checkpoints) for `config`, under LDM's names without `first_stage_model.`, with LDM's shapes: attention
    /// projections are 1×1 convs `[C, C, 1, 1]`, `quant_conv` maps 2·z to 2·z channels (embed_dim = z_channels).
    /// The layout follows LDM's `Encoder`/`Decoder` with `attn_resolutions = []`: attention only in the mid blocks.
    public static func ldmShapes(_ config: AutoencoderKLConfig) -> [String: [Int]] {
        let ch = config.blockOutChannels, lpb = config.layersPerBlock, z = config.latentChannels
        let top = ch[ch.count - 1]
        var shapes: [String: [Int]] = [:]
        func conv(_ name: String, _ out: Int, _ inputs: Int, _ k: Int) {
            shapes[name + ".weight"] = [out, inputs, k, k]
            shapes[name + ".bias"] = [out]
        }
        func norm(_ name: String, _ c: Int) {
            shapes[name + ".weight"] = [c]
            shapes[name + ".bias"] = [c]
        }
        func resnet(_ p: String, _ inputs: Int, _ out: Int) {
            norm(p + "norm1", inputs)
            conv(p + "conv1", out, inputs, 3)
            norm(p + "norm2", out)
            conv(p + "conv2", out, out, 3)
            if inputs != out { conv(p + "nin_shortcut", out, inputs, 1) }
        }
        func mid(_ p: String) {
            resnet(p + "mid.block_1.", top, top)
            norm(p + "mid.attn_1.norm", top)
            for proj in ["q", "k", "v", "proj_out"] { conv(p + "mid.attn_1." + proj, top, top, 1) }
            resnet(p + "mid.block_2.", top, top)
        }
        conv("encoder.conv_in", ch[0], config.inChannels, 3)
        for i in ch.indices {
            for j in 0..<lpb { resnet("encoder.down.\(i).block.\(j).", j == 0 ? (i == 0 ? ch[0] : ch[i - 1]) : ch[i], ch[i]) }
            if i < ch.count - 1 { conv("encoder.down.\(i).downsample.conv", ch[i], ch[i], 3) }
        }
        mid("encoder.")
        norm("encoder.norm_out", top)
        conv("encoder.conv_out", 2 * z, top, 3)
        conv("quant_conv", 2 * z, 2 * z, 1)
        conv("post_quant_conv", z, z, 1)
        conv("decoder.conv_in", top, z, 3)
        mid("decoder.")
        // LDM's decoder.up.i is level i; the highest level runs first and feeds each lower one its width.
        for i in ch.indices {
            let input = i == ch.count - 1 ? top : ch[i + 1]
            for j in 0...lpb { resnet("decoder.up.\(i).block.\(j).", j == 0 ? input : ch[i], ch[i]) }
            if i > 0 { conv("decoder.up.\(i).upsample.conv", ch[i], ch[i], 3) }
        }
        norm("decoder.norm_out", ch[0])
        conv("decoder.conv_out", config.outChannels, ch[0], 3)
        return shapes
    }
}

extension VAEValue {
    /// The VAE of an LDM checkpoint (a torch pickle `{'state_dict': …}` such as SD2.1's `v2-1_512-ema-pruned.ckpt`,
    /// which StreamingT2V's refiner, MS-Vid2Vid-XL, encodes and decodes with; or an SD1.x single file): its
    /// `first_stage_model.` tensors, or a bare LDM VAE file (`encoder.down.0.…` without the prefix). The sizes are
    /// read from the weights (`AutoencoderKLConfig.inferred`), the mid blocks always have attention (LDM's
    /// `Encoder`/`Decoder` build `mid.attn_1` unconditionally) and `scaling_factor` is 0.18215, as
    /// `get_first_stage_encoding` scales.
    ///
    /// Every name and shape the model needs is checked here, from the file's index alone: nothing is read, and the
    /// value holds only the VAE's tensors, so the UNet (`model.diffusion_model.`) and text encoder
    /// (`cond_stage_model.`) beside it are never read. A missing or misshapen tensor is named as the file names it;
    /// encoder/decoder tensors this architecture lacks (attention outside the mid block, another depth) are refused
    /// like the original's strict `load_state_dict`; tensors outside the VAE's modules are ignored. A file without
    /// an LDM VAE is refused with what it holds instead.
    public static func ldmCheckpoint(_ weights: Weights) throws -> VAEValue {
        let component = "AutoencoderKL (\(weights.origin))"
        var source = weights.scoped(AutoencoderKL.singleFilePrefix)
        var prefix = AutoencoderKL.singleFilePrefix
        if source.isEmpty {
            guard weights.keys.contains(where: { $0.hasPrefix("encoder.down.") || $0.hasPrefix("decoder.up.") }) else {
                throw DiffusionError.badInput(component: component,
                                              reason: "no LDM VAE (first_stage_model.encoder.… / first_stage_model.decoder.…, or a bare encoder.down.… / decoder.up.… file): \(describeNonVAE(weights))")
            }
            source = weights
            prefix = ""
        }
        var widths: [Int] = []
        while let s = source.shape(of: "encoder.down.\(widths.count).block.0.conv1.weight"), s.count == 4 { widths.append(s[0]) }
        guard !widths.isEmpty else {
            let key = prefix + "encoder.down.0.block.0.conv1.weight"
            throw DiffusionError.missingWeight(component: component, key: key,
                                               closeMatches: DiffusionError.closeMatches(to: key, in: weights.keys))
        }
        var config = AutoencoderKLConfig.sd15
        config.blockOutChannels = widths
        config.scalingFactor = 0.18215
        // The renaming needs the number of levels (LDM numbers the decoder's levels the other way round).
        let mapped = AutoencoderKL.diffusersWeights(from: weights, config: config)
        config = AutoencoderKLConfig.inferred(from: mapped, base: config)
        config.midBlockAddAttention = true
        try config.validate()

        let expected = AutoencoderKL.ldmShapes(config)
        let report = source.report(expected: expected.mapValues { Optional($0) })
        if let first = report.missing.first {
            let close = report.closeMatches[first]?.map { prefix + $0 }
                ?? DiffusionError.closeMatches(to: prefix + first, in: weights.keys)
            throw DiffusionError.missingWeight(component: component, key: prefix + first, closeMatches: close)
        }
        if let bad = report.shapeMismatches.first {
            throw DiffusionError.weightShape(component: component, key: prefix + bad.name, expected: bad.expected, actual: bad.actual)
        }
        let foreign = report.unexpected.filter { key in
            ["encoder.", "decoder.", "quant_conv.", "post_quant_conv."].contains { key.hasPrefix($0) }
        }
        if !foreign.isEmpty {
            throw DiffusionError.badInput(component: component,
                                          reason: "\(foreign.count) encoder/decoder tensor\(foreign.count == 1 ? " is" : "s are") not part of an LDM VAE with widths \(config.blockOutChannels), \(config.layersPerBlock) res blocks per level and attention in the mid blocks only: \(foreign.prefix(4).map { prefix + $0 }.joined(separator: ", "))\(foreign.count > 4 ? ", …" : "")")
        }
        return VAEValue(config: config, weights: mapped)
    }

    /// What a file without an LDM VAE holds, for the refusal: its tensor count by top-level module, named where
    /// the family is recognisable.
    static func describeNonVAE(_ weights: Weights) -> String {
        if weights.isEmpty { return "it holds no tensors" }
        let families: [(prefix: String, name: String)] = [
            ("model.diffusion_model.", "an LDM UNet"), ("cond_stage_model.", "an LDM text encoder"),
            ("conditioner.", "SDXL text encoders"), ("model_ema.", "EMA copies"),
            ("encoder.down_blocks.", "a diffusers-named AutoencoderKL (convert it to LDM names or load its diffusers folder with LoadCheckpoint)"),
            ("down_blocks.", "a diffusers UNet"), ("input_blocks.", "a modelscope/LDM UNet without its checkpoint prefix"),
            ("visual.", "an OpenCLIP image tower"), ("transformer.resblocks.", "an OpenCLIP text tower"),
            ("text_model.", "a transformers CLIP text model"),
        ]
        var parts: [String] = []
        for family in families {
            let n = weights.keys.filter { $0.hasPrefix(family.prefix) }.count
            if n > 0 { parts.append("\(n) tensor\(n == 1 ? "" : "s") under \(family.prefix) (\(family.name))") }
        }
        let rest = weights.keys.filter { key in !families.contains { key.hasPrefix($0.prefix) } }
        if !rest.isEmpty {
            parts.append("\(rest.count) other tensor\(rest.count == 1 ? "" : "s"), e.g. \(rest.prefix(3).joined(separator: ", "))")
        }
        return "it holds " + parts.joined(separator: ", ") + "; no first_stage_model. tensors"
    }
}
