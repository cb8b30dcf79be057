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
