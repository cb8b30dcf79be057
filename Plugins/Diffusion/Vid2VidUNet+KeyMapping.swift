import Foundation
import LapseWeights

/// The modelscope `Vid2VidSDUNet` key layout and its diffusers `UNet3DConditionModel` counterpart, as prefix
/// pairs: everything below a module's prefix keeps its name (transformer blocks, GroupNorms, temporal convs are
/// named alike on both sides).
///
/// modelscope numbers its blocks flatly: `input_blocks.0` is `[conv, temporal transformer]`; then each level
/// contributes `num_res_blocks` entries `[ResBlock, SpatialTransformer, TemporalTransformer]` (transformers only at
/// `attn_scales` levels) and, but for the lowest level, a bare `Downsample` (`input_blocks.N.op`).
/// `output_blocks` has `num_res_blocks + 1` entries per level, the `Upsample` riding last on the level's last
/// entry (`.1.conv` or `.3.conv`). A ResBlock's `temopral_conv` (sic) is diffusers' separate `temp_convs.j`.
struct Vid2VidKeyTable {
    /// modelscope prefix → diffusers prefix, and back.
    let toDiffusers: [String: String]
    let toModelscope: [String: String]

    init(config: Vid2VidUNetConfig) {
        var pairs: [(String, String)] = [
            ("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
            ("input_blocks.0.0.", "conv_in."), ("input_blocks.0.1.", "transformer_in."),
            ("out.0.", "conv_norm_out."), ("out.2.", "conv_out."),
        ]
        func resnet(_ from: String, _ to: String, temporal: String) {
            pairs += [("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("emb_layers.1.", "time_emb_proj."),
                      ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."), ("skip_connection.", "conv_shortcut.")]
                .map { (from + $0.0, to + $0.1) }
            pairs.append((from + "temopral_conv.", temporal))
        }
        let levels = config.dimMult.count, lpb = config.numResBlocks
        var n = 1
        for i in 0..<levels {
            let p = "down_blocks.\(i)."
            for j in 0..<lpb {
                resnet("input_blocks.\(n).0.", p + "resnets.\(j).", temporal: p + "temp_convs.\(j).")
                if config.hasAttention(level: i) {
                    pairs.append(("input_blocks.\(n).1.", p + "attentions.\(j)."))
                    pairs.append(("input_blocks.\(n).2.", p + "temp_attentions.\(j)."))
                }
                n += 1
            }
            if i < levels - 1 {
                pairs.append(("input_blocks.\(n).op.", p + "downsamplers.0.conv."))
                n += 1
            }
        }
        resnet("middle_block.0.", "mid_block.resnets.0.", temporal: "mid_block.temp_convs.0.")
        pairs.append(("middle_block.1.", "mid_block.attentions.0."))
        pairs.append(("middle_block.2.", "mid_block.temp_attentions.0."))
        resnet("middle_block.3.", "mid_block.resnets.1.", temporal: "mid_block.temp_convs.1.")
        n = 0
        for i in 0..<levels {
            let p = "up_blocks.\(i).", attention = config.hasAttention(level: levels - 1 - i)
            for j in 0...lpb {
                resnet("output_blocks.\(n).0.", p + "resnets.\(j).", temporal: p + "temp_convs.\(j).")
                if attention {
                    pairs.append(("output_blocks.\(n).1.", p + "attentions.\(j)."))
                    pairs.append(("output_blocks.\(n).2.", p + "temp_attentions.\(j)."))
                }
                if j == lpb, i < levels - 1 {
                    pairs.append(("output_blocks.\(n).\(attention ? 3 : 1).conv.", p + "upsamplers.0.conv."))
                }
                n += 1
            }
        }
        toDiffusers = Dictionary(pairs, uniquingKeysWith: { a, _ in a })
        toModelscope = Dictionary(pairs.map { ($0.1, $0.0) }, uniquingKeysWith: { a, _ in a })
    }

    /// `key` with its longest prefix found in `table` replaced, or nil.
    static func translate(_ key: String, _ table: [String: String]) -> String? {
        var end = key.endIndex
        while let dot = key[..<end].lastIndex(of: ".") {
            let prefix = String(key[...dot])
            if let to = table[prefix] { return to + key[key.index(after: dot)...] }
            end = dot
        }
        return nil
    }
}

extension Vid2VidUNet {
    /// modelscope-named weights renamed for the shared UNet layers, with the way back for error messages.
    struct RenamedWeights {
        let weights: Weights
        let table: Vid2VidKeyTable

        /// The modelscope name of a diffusers name (itself if it has none).
        func modelscopeName(_ key: String) -> String { Vid2VidKeyTable.translate(key, table.toModelscope) ?? key }
    }

    /// Renames every tensor of a `Vid2VidSDUNet` state dict to its diffusers name, lazily (nothing is read).
    /// Refuses a file that is not in modelscope's layout (saying what it looks like) and tensors the module does
    /// not have, as the original's strict `load_state_dict` does.
    static func diffusersWeights(from weights: Weights, config: Vid2VidUNetConfig) throws -> RenamedWeights {
        guard matches(weights) else {
            throw DiffusionError.badInput(component: "Vid2VidSDUNet (\(weights.origin))",
                                          reason: "not an MS-Vid2Vid-XL generator in modelscope's layout (no input_blocks.0.1.proj_in Conv1d or input_blocks.1.0.temopral_conv); found \(describe(weights))")
        }
        let table = Vid2VidKeyTable(config: config)
        var rules: [Weights.RenameRule] = []
        var unknown: [String] = []
        for key in weights.keys {
            if let name = Vid2VidKeyTable.translate(key, table.toDiffusers) { rules.append(.exact(key, name)) } else { unknown.append(key) }
        }
        guard unknown.isEmpty else {
            throw DiffusionError.badInput(component: "Vid2VidSDUNet (\(weights.origin))",
                                          reason: "\(unknown.count) tensors are not part of a Vid2VidSDUNet with \(config.dimMult.count) levels of \(config.numResBlocks) blocks, attention at scales \(config.attnScales): \(unknown.prefix(4).joined(separator: ", "))\(unknown.count > 4 ? ", …" : "")")
        }
        return RenamedWeights(weights: weights.renamed(rules), table: table)
    }

    /// A short guess at what a non-Vid2Vid file holds, for the refusal.
    static func describe(_ weights: Weights) -> String {
        if weights.keys.contains(where: { $0.hasPrefix("model.diffusion_model.") }) { return "an LDM/Stable Diffusion checkpoint (model.diffusion_model.…)" }
        if weights.keys.contains(where: { $0.hasPrefix("first_stage_model.") }) || weights.contains("encoder.conv_in.weight") { return "a VAE" }
        if weights.contains("transformer_in.proj_in.weight") { return "a diffusers UNet3DConditionModel" }
        if weights.keys.contains(where: { $0.hasPrefix("transformer.resblocks.") }) || weights.contains("token_embedding.weight") {
            return "an OpenCLIP model"
        }
        if weights.keys.contains(where: { $0.hasPrefix("down_blocks.") }) { return "a diffusers UNet" }
        return "\(weights.count) tensors starting \(weights.keys.prefix(3).joined(separator: ", "))"
    }
}

extension Vid2VidUNetConfig {
    /// `base` with the sizes modelscope-named `weights` reveal: in/out channels, `dim`, `dim_mult`,
    /// `num_res_blocks`, which levels have attention, the context width and `num_heads` (the first temporal
    /// transformer's inner width over `base.headDim`). The head width itself appears in no tensor.
    public static func inferred(from weights: Weights, base: Vid2VidUNetConfig = .msVid2VidXL) throws -> Vid2VidUNetConfig {
        guard Vid2VidUNet.matches(weights), let convIn = weights.shape(of: "input_blocks.0.0.weight"), convIn.count == 4 else {
            throw DiffusionError.badInput(component: "Vid2VidSDUNet (\(weights.origin))",
                                          reason: "not an MS-Vid2Vid-XL generator in modelscope's layout; found \(Vid2VidUNet.describe(weights))")
        }
        var c = base
        c.dim = convIn[0]
        c.inDim = convIn[1]
        if let out = weights.shape(of: "out.2.weight"), out.count == 4 { c.outDim = out[0] }
        var lpb = 0
        while weights.contains("input_blocks.\(lpb + 1).0.in_layers.2.weight") { lpb += 1 }
        guard lpb >= 1 else { return c }
        c.numResBlocks = lpb
        var mults: [Int] = [], scales: [Double] = []
        var n = 1
        while let s = weights.shape(of: "input_blocks.\(n).0.in_layers.2.weight") {
            let level = mults.count
            mults.append(s[0] / max(c.dim, 1))
            if weights.contains("input_blocks.\(n).1.norm.weight") {
                scales.append(Foundation.pow(0.5, Double(level)))
                if let k = weights.shape(of: "input_blocks.\(n).1.transformer_blocks.0.attn2.to_k.weight"), k.count == 2 {
                    c.contextDim = k[1]
                }
            }
            n += lpb
            guard weights.contains("input_blocks.\(n).op.weight") else { break }
            n += 1
        }
        c.dimMult = mults
        c.attnScales = scales
        if let p = weights.shape(of: "input_blocks.0.1.proj_in.weight"), c.headDim > 0, p[0] % c.headDim == 0 {
            c.numHeads = p[0] / c.headDim
        }
        return c
    }
}
