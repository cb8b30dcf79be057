import LapseNN
import LapseTensor

/// One pre-LayerNorm transformer layer of the CLIP towers: `x + out(attention(ln1(x)))`, then
/// `x + fc2(act(fc1(ln2(x))))`. transformers' `CLIPEncoderLayer` (text) and open_clip's `ResidualAttentionBlock`
/// without layer scale (vision) are both this; only their weight names differ, which their models map.
struct CLIPEncoderLayer: Sendable {
    let norm1: NormLayer
    let query: LinearLayer, key: LinearLayer, value: LinearLayer, output: LinearLayer
    let norm2: NormLayer
    let fc1: LinearLayer, fc2: LinearLayer
    let heads: Int
    let activation: Activation

    /// `h` `[B, L, D]`; `mask` additive, broadcastable to `[B, heads, L, L]` (the text tower's causal mask).
    func callAsFunction(_ h: Tensor, mask: Tensor? = nil) -> Tensor {
        let x = norm1.layer(h)
        let attended: Tensor
        if let mask {
            let b = x.shape[0], l = x.shape[1], d = x.shape[2], dh = d / heads
            func split(_ t: Tensor) -> Tensor { permute(t.reshaped([b, l, heads, dh]), [0, 2, 1, 3]) }
            attended = permute(attention(query: split(query(x)), key: split(key(x)), value: split(value(x)), mask: mask),
                               [0, 2, 1, 3]).reshaped([b, l, d])
        } else {
            // Unmasked: heads read in place from the projections' token-major rows.
            attended = multiHeadAttention(query: query(x), key: key(x), value: value(x), heads: heads)
        }
        let r = h + output(attended)
        return r + fc2(activate(fc1(norm2.layer(r)), activation))
    }
}

extension CLIPEncoderLayer {
    /// Where one layer's tensors are named under its prefix (each name ends with a dot).
    struct Names {
        let norm1: String, query: String, key: String, value: String, output: String, norm2: String, fc1: String, fc2: String

        /// transformers' `CLIPEncoderLayer` (the text tower of SD checkpoints).
        static let transformers = Names(norm1: "layer_norm1.", query: "self_attn.q_proj.", key: "self_attn.k_proj.",
                                        value: "self_attn.v_proj.", output: "self_attn.out_proj.", norm2: "layer_norm2.",
                                        fc1: "mlp.fc1.", fc2: "mlp.fc2.")
        /// open_clip's `ResidualAttentionBlock` after its fused `in_proj` is split into `q_proj`/`k_proj`/`v_proj`.
        static let openCLIP = Names(norm1: "ln_1.", query: "attn.q_proj.", key: "attn.k_proj.", value: "attn.v_proj.",
                                    output: "attn.out_proj.", norm2: "ln_2.", fc1: "mlp.c_fc.", fc2: "mlp.c_proj.")
    }

    /// Reads one layer `width` wide with an `mlp`-wide hidden layer from the tensors under `prefix`.
    init(_ read: WeightReader, _ prefix: String, names n: Names, width d: Int, mlp f: Int, eps: Float, heads: Int,
         activation: Activation) throws {
        self.init(norm1: try NormLayer(read, prefix + n.norm1, channels: d, eps: eps),
                  query: try LinearLayer(read, prefix + n.query, in: d, out: d),
                  key: try LinearLayer(read, prefix + n.key, in: d, out: d),
                  value: try LinearLayer(read, prefix + n.value, in: d, out: d),
                  output: try LinearLayer(read, prefix + n.output, in: d, out: d),
                  norm2: try NormLayer(read, prefix + n.norm2, channels: d, eps: eps),
                  fc1: try LinearLayer(read, prefix + n.fc1, in: d, out: f),
                  fc2: try LinearLayer(read, prefix + n.fc2, in: f, out: d),
                  heads: heads, activation: activation)
    }

    /// The tensors of one open_clip `ResidualAttentionBlock` (fused `in_proj`, `c_fc`/`c_proj` MLP) named under
    /// `prefix` (`transformer.resblocks.N.`, `visual.transformer.resblocks.N.`), `width` wide with an `mlp`-wide
    /// hidden layer: what the text and vision towers' key mappings check a file against.
    static func openCLIPBlockShapes(prefix b: String, width d: Int, mlp f: Int) -> [String: [Int]] {
        var shapes: [String: [Int]] = [:]
        for norm in ["ln_1", "ln_2"] {
            shapes[b + norm + ".weight"] = [d]
            shapes[b + norm + ".bias"] = [d]
        }
        shapes[b + "attn.in_proj_weight"] = [3 * d, d]
        shapes[b + "attn.in_proj_bias"] = [3 * d]
        shapes[b + "attn.out_proj.weight"] = [d, d]
        shapes[b + "attn.out_proj.bias"] = [d]
        shapes[b + "mlp.c_fc.weight"] = [f, d]
        shapes[b + "mlp.c_fc.bias"] = [f]
        shapes[b + "mlp.c_proj.weight"] = [d, f]
        shapes[b + "mlp.c_proj.bias"] = [d]
        return shapes
    }
}
