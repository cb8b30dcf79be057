import DiffusionPlugin
import LapseNN
import LapseTensor
import LapseWeights

/// One of the CAM's cross-attention mergers (the original's `ConditionalModel("cross_attention")`): it injects the
/// CAM feature `r` of the conditioning frames into the base UNet's feature `s` of the same place by temporal cross
/// attention, pixel by pixel.
///
/// `h = GroupNorm(32, eps 1e-6)(s)` with statistics over C/32 channels × all frames × H × W of each video, as
/// `[B·H·W, F, C]` → `proj_in` → attention with queries from h and keys/values from the raw `r` as
/// `[B·H·W, Fc, C]` (no q/k/v bias, heads C/64, scale 1/8) → `to_out.0` → `proj_out` → `s + that`.
public struct CrossAttentionMerger: Sendable {
    private let norm: NormLayer
    private let projIn: LinearLayer, projOut: LinearLayer
    private let attention: AttentionLayer
    /// Feature channels C.
    public let channels: Int
    /// The original fixes the head width at 64 (`ConditionalModel(attention_head_dim=64)`).
    public static let headWidth = 64
    static let groups = 32
    static let eps: Float = 1e-6

    /// Reads `norm`, `proj_in`, `attention.to_{q,k,v}`, `attention.to_out.0` and `proj_out` from `weights` (scoped to
    /// the merger's `temporal_transformer.`); C comes from `proj_in`.
    public init(weights: Weights) throws {
        let read = WeightReader(weights, component: "CrossAttentionMerger")
        let c = try read.shape("proj_in.weight").first ?? 0
        guard c > 0, c % CrossAttentionMerger.headWidth == 0, c % CrossAttentionMerger.groups == 0 else {
            throw DiffusionError.badConfig(component: "CrossAttentionMerger (\(weights.origin))", field: "proj_in.weight",
                                           reason: "width \(c) must be a multiple of 64 (the head width) and of 32 (the norm groups)")
        }
        channels = c
        norm = try NormLayer(read, "norm.", channels: c, eps: CrossAttentionMerger.eps, groups: CrossAttentionMerger.groups)
        projIn = try LinearLayer(read, "proj_in.", in: c, out: c)
        attention = try AttentionLayer(read, "attention.", queryDim: c, contextDim: c, heads: c / CrossAttentionMerger.headWidth)
        projOut = try LinearLayer(read, "proj_out.", in: c, out: c)
    }

    /// `sample` `[B·F, C, h, w]` (each video's F frames consecutive) merged with `condition` `[B·Fc, C, h, w]`.
    public func callAsFunction(_ sample: Tensor, condition: Tensor, videos b: Int) throws -> Tensor {
        let c = channels
        guard sample.rank == 4, condition.rank == 4, sample.shape[1] == c, condition.shape[1] == c,
              Array(sample.shape[2...]) == Array(condition.shape[2...]), b > 0,
              sample.shape[0] % b == 0, condition.shape[0] % b == 0 else {
            throw DiffusionError.badInput(component: "CrossAttentionMerger",
                                          reason: "sample \(sample.shape) and condition \(condition.shape) must be [B·F, \(c), h, w] and [B·Fc, \(c), h, w] for \(b) videos")
        }
        let f = sample.shape[0] / b, fc = condition.shape[0] / b, hw = sample.shape[2] * sample.shape[3]
        // Stats over the whole video: normalise [B, C, F, H·W].
        let video = permute(sample.reshaped([b, f, c, hw]), [0, 2, 1, 3])
        let normed = norm.group(video)
        let tokens = permute(normed, [0, 3, 2, 1]).reshaped([b * hw, f, c])
        let h = projIn(tokens)
        let memory = permute(condition.reshaped([b, fc, c, hw]), [0, 3, 1, 2]).reshaped([b * hw, fc, c])
        let out = projOut(attention(h, context: memory))
        return sample + permute(out.reshaped([b, hw, f, c]), [0, 2, 3, 1]).reshaped(sample.shape)
    }
}
