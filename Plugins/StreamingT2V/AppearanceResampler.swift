import DiffusionPlugin
import LapseNN
import LapseTensor
import LapseWeights

/// The APM resampler (the original's `ImgEmbContextResampler`, `resampler.context_embedding.*`): the mean of the
/// anchor frames' pooled image embeddings → Linear D→1280 → SiLU → Linear 1280→16·D → 16 tokens of width D that
/// follow the 77 text tokens in the base UNet's context.
public struct AppearanceResampler: Sendable {
    private let projIn: LinearLayer, projOut: LinearLayer
    /// Token width D (the UNet's cross-attention width).
    public let width: Int
    /// Tokens produced (16).
    public let tokens: Int

    /// Reads `context_embedding.0` and `.2` from `weights` scoped to `resampler.`; D, the hidden width and the token
    /// count come from the weights.
    public init(weights: Weights) throws {
        let read = WeightReader(weights, component: "AppearanceResampler")
        let first = try read.shape(StreamingT2VKeys.resamplerIn + "weight")
        let second = try read.shape(StreamingT2VKeys.resamplerOut + "weight")
        guard first.count == 2, second.count == 2, second[1] == first[0], first[1] > 0, second[0] % first[1] == 0 else {
            throw DiffusionError.weightShape(component: "AppearanceResampler (\(weights.origin))",
                                             key: StreamingT2VKeys.resamplerOut + "weight",
                                             expected: [16 * (first.last ?? 0), first.first ?? 0], actual: second)
        }
        width = first[1]
        tokens = second[0] / width
        projIn = try LinearLayer(read, StreamingT2VKeys.resamplerIn, in: first[1], out: first[0])
        projOut = try LinearLayer(read, StreamingT2VKeys.resamplerOut, in: second[1], out: second[0])
    }

    /// Pooled embeddings `[F, D]` of one video's anchor frames → its tokens `[1, tokens, D]`.
    public func callAsFunction(_ embeddings: Tensor) throws -> Tensor {
        guard embeddings.rank == 2, embeddings.shape[0] > 0, embeddings.shape[1] == width else {
            throw DiffusionError.badInput(component: "AppearanceResampler",
                                          reason: "image embeddings must be [F, \(width)], got \(embeddings.shape)")
        }
        let f = embeddings.shape[0]
        var mean = embeddings
        if f > 1 {
            mean = slice(embeddings, axis: 0, start: 0, end: 1)
            for i in 1..<f { mean = mean + slice(embeddings, axis: 0, start: i, end: i + 1) }
            mean = mean * (1 / Float(f))
        }
        return projOut(silu(projIn(mean))).reshaped([1, tokens, width])
    }
}
