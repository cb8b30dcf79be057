import DiffusionPlugin
import LapseNN
import LapseTensor
import LapseWeights

/// The APM's token mixing in one spatial cross-attention of the base UNet (the original's `attn2.conv`,
/// `attn2.conv_ln`, `attn2.alpha`, applied by its xformers attention processor before the key/value projections):
/// the 93-token context (77 text + 16 image) becomes 77 tokens,
/// `ctx[:, :77] + SiLU(α) · LayerNorm(Conv1d(93→77, kernel 3, padding "same")(ctx))`. The tokens are the conv's
/// channels; the kernel slides along the feature axis.
public struct AppearanceTokenMixing: Sendable {
    private let convWeight: Tensor, convBias: Tensor
    private let norm: NormLayer
    private let gate: Float
    /// Tokens in (text + image) and out (text).
    public let inputTokens: Int, outputTokens: Int
    static let eps: Float = 1e-5

    /// Reads `conv.weight` `[77, 93, 3]`, `conv.bias`, `conv_ln.{weight,bias}` `[D]` and the scalar `alpha` from
    /// `weights` scoped to one `…attn2.`; token counts and D come from the weights.
    public init(weights: Weights) throws {
        let read = WeightReader(weights, component: "AppearanceTokenMixing")
        let s = try read.shape("conv.weight")
        guard s.count == 3, s[2] == 3, s[0] < s[1] else {
            throw DiffusionError.weightShape(component: "AppearanceTokenMixing (\(weights.origin))", key: "conv.weight",
                                             expected: [77, 93, 3], actual: s)
        }
        outputTokens = s[0]
        inputTokens = s[1]
        convWeight = try read("conv.weight", s)
        convBias = try read("conv.bias", [s[0]])
        let d = try read.shape("conv_ln.weight")
        guard d.count == 1 else {
            throw DiffusionError.weightShape(component: "AppearanceTokenMixing (\(weights.origin))", key: "conv_ln.weight",
                                             expected: [d.last ?? 0], actual: d)
        }
        norm = try NormLayer(read, "conv_ln.", channels: d[0], eps: AppearanceTokenMixing.eps)
        let alphaShape = try read.shape("alpha")
        guard alphaShape.reduce(1, *) == 1 else {
            throw DiffusionError.weightShape(component: "AppearanceTokenMixing (\(weights.origin))", key: "alpha",
                                             expected: [], actual: alphaShape)
        }
        gate = silu(try read("alpha", alphaShape)).scalars[0]
    }

    /// `context` `[N, 93, D]` → `[N, 77, D]`.
    public func callAsFunction(_ context: Tensor) throws -> Tensor {
        guard context.rank == 3, context.shape[1] == inputTokens, context.shape[2] == norm.weight.count else {
            throw DiffusionError.badInput(component: "AppearanceTokenMixing",
                                          reason: "context must be [N, \(inputTokens), \(norm.weight.count)] (text then appearance tokens), got \(context.shape)")
        }
        let mixed = norm.layer(conv1d(context, weight: convWeight, bias: convBias, padding: 1))
        return slice(context, axis: 1, start: 0, end: outputTokens) + mixed * gate
    }
}
