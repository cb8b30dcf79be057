import LapseNN
import LapseTensor

/// diffusers' `ResnetBlock2D` (default time-embedding norm, output scale 1): GroupNorm → SiLU → conv, plus the
/// projected time embedding, GroupNorm → SiLU → conv, and a 1×1 shortcut when the width changes.
struct ResnetBlock2D: Sendable {
    let norm1: NormLayer, conv1: Conv2DLayer
    let timeProjection: LinearLayer?
    let norm2: NormLayer, conv2: Conv2DLayer
    let shortcut: Conv2DLayer?

    /// `timeChannels` nil: no time-embedding projection (the VAE's blocks).
    init(_ read: WeightReader, _ prefix: String, in inputs: Int, out: Int, timeChannels: Int?, groups: Int,
         eps: Float) throws {
        norm1 = try NormLayer(read, prefix + "norm1.", channels: inputs, eps: eps, groups: groups)
        conv1 = try Conv2DLayer(read, prefix + "conv1.", in: inputs, out: out, kernel: 3)
        timeProjection = try timeChannels.map { try LinearLayer(read, prefix + "time_emb_proj.", in: $0, out: out) }
        norm2 = try NormLayer(read, prefix + "norm2.", channels: out, eps: eps, groups: groups)
        conv2 = try Conv2DLayer(read, prefix + "conv2.", in: out, out: out, kernel: 3)
        shortcut = inputs == out ? nil : try Conv2DLayer(read, prefix + "conv_shortcut.", in: inputs, out: out, kernel: 1)
    }

    /// `x` `[N, C, H, W]`; `activatedTimeEmbedding` is `silu(temb)` `[N, T]`, computed once per UNet call.
    func callAsFunction(_ x: Tensor, activatedTimeEmbedding: Tensor?) -> Tensor {
        var h = conv1(norm1.group(x, activation: .silu))
        if let timeProjection, let activatedTimeEmbedding {
            let t = timeProjection(activatedTimeEmbedding)
            h = h + t.reshaped([t.shape[0], t.shape[1], 1, 1])
        }
        h = conv2(norm2.group(h, activation: .silu))
        return (shortcut.map { $0(x) } ?? x) + h
    }
}

/// diffusers' GEGLU feed-forward: `net.0.proj` to 2·inner, `hidden · gelu(gate)`, `net.2` back to the width.
struct GEGLUFeedForward: Sendable {
    let projIn: LinearLayer, projOut: LinearLayer

    init(_ read: WeightReader, _ prefix: String, dim: Int, mult: Int = 4) throws {
        projIn = try LinearLayer(read, prefix + "net.0.proj.", in: dim, out: 2 * dim * mult)
        projOut = try LinearLayer(read, prefix + "net.2.", in: dim * mult, out: dim)
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        gatedFeedForward(x, inWeight: projIn.weight, inBias: projIn.bias, outWeight: projOut.weight, outBias: projOut.bias,
                         gate: .gelu)
    }
}

/// diffusers' `BasicTransformerBlock` (layer-norm variant): self-attention, cross-attention (or a second
/// self-attention when there is no context dimension, as in AnimateDiff), GEGLU feed-forward, each pre-normed and
/// residual. `positionalEncoding` (`[maxLen, C]`) is added after each attention's norm, as AnimateDiff does.
struct BasicTransformerBlock: Sendable {
    let norm1: NormLayer, attn1: AttentionLayer
    let norm2: NormLayer, attn2: AttentionLayer
    let norm3: NormLayer, ff: GEGLUFeedForward
    let crossAttention: Bool

    init(_ read: WeightReader, _ prefix: String, dim: Int, heads: Int, contextDim: Int?) throws {
        norm1 = try NormLayer(read, prefix + "norm1.", channels: dim, eps: 1e-5)
        attn1 = try AttentionLayer(read, prefix + "attn1.", queryDim: dim, contextDim: dim, heads: heads)
        norm2 = try NormLayer(read, prefix + "norm2.", channels: dim, eps: 1e-5)
        attn2 = try AttentionLayer(read, prefix + "attn2.", queryDim: dim, contextDim: contextDim ?? dim, heads: heads)
        norm3 = try NormLayer(read, prefix + "norm3.", channels: dim, eps: 1e-5)
        ff = try GEGLUFeedForward(read, prefix + "ff.", dim: dim)
        crossAttention = contextDim != nil
    }

    /// `x` `[N, L, C]`; `positional` `[L, C]` broadcast over N.
    func callAsFunction(_ x: Tensor, context: Tensor?, positional: Tensor? = nil) -> Tensor {
        func normed(_ norm: NormLayer) -> (Tensor) -> Tensor {
            { t in positional.map { norm.layer(t) + $0 } ?? norm.layer(t) }
        }
        var h = x + attn1(normed(norm1)(x))
        h = h + attn2(normed(norm2)(h), context: crossAttention ? context : nil)
        return h + ff(norm3.layer(h))
    }
}

/// diffusers' `Transformer2DModel` for continuous inputs: GroupNorm (eps 1e-6), `proj_in` (1×1 conv or linear —
/// the same per-pixel map), transformer blocks over the H·W tokens, `proj_out`, residual.
struct SpatialTransformer: Sendable {
    let norm: NormLayer
    let projIn: LinearLayer, projOut: LinearLayer
    let blocks: [BasicTransformerBlock]

    init(_ read: WeightReader, _ prefix: String, channels: Int, heads: Int, contextDim: Int, groups: Int,
         layers: Int) throws {
        norm = try NormLayer(read, prefix + "norm.", channels: channels, eps: 1e-6, groups: groups)
        projIn = try LinearLayer(read, prefix + "proj_in.", in: channels, out: channels)
        blocks = try (0..<layers).map {
            try BasicTransformerBlock(read, prefix + "transformer_blocks.\($0).", dim: channels, heads: heads,
                                      contextDim: contextDim)
        }
        projOut = try LinearLayer(read, prefix + "proj_out.", in: channels, out: channels)
    }

    /// `x` `[N, C, H, W]`, `context` `[N, S, D]`.
    func callAsFunction(_ x: Tensor, context: Tensor) -> Tensor {
        run(x) { block, h in block(h, context: context) }
    }

    /// `x` `[N, C, H, W]` with one cross-attention context per transformer block (`contexts.count == blocks.count`).
    func callAsFunction(_ x: Tensor, contexts: [Tensor]) -> Tensor {
        var index = 0
        return run(x) { block, h in
            defer { index += 1 }
            return block(h, context: contexts[index])
        }
    }

    private func run(_ x: Tensor, _ apply: (BasicTransformerBlock, Tensor) -> Tensor) -> Tensor {
        let n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3]
        var h = projIn(permute(norm.group(x).reshaped([n, c, hw]), [0, 2, 1]))
        for block in blocks { h = apply(block, h) }
        return x + permute(projOut(h), [0, 2, 1]).reshaped(x.shape)
    }
}

/// Nearest ×2 upsampling followed by a 3×3 conv (diffusers' `Upsample2D`); the target size is given so odd skip
/// sizes line up as diffusers' `upsample_size` does.
struct Upsample2DLayer: Sendable {
    let conv: Conv2DLayer
    /// Rows dropped at the top and at the bottom after a plain nearest ×2, ignoring the target size
    /// (MS-Vid2Vid-XL's `Upsample` drops one each: 13 → 24 rows); 0 keeps diffusers' behaviour.
    var cropRows = 0

    func callAsFunction(_ x: Tensor, height: Int, width: Int) -> Tensor {
        guard cropRows > 0 else { return conv(resize(x, height: height, width: width, mode: .nearest)) }
        let rows = 2 * x.shape[2]
        let doubled = resize(x, height: rows, width: 2 * x.shape[3], mode: .nearest)
        return conv(slice(doubled, axis: 2, start: cropRows, end: rows - cropRows))
    }
}
