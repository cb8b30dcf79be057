import DiffusionPlugin
import LapseTensor
import LapseWeights

/// StreamingT2V's stage-2 noise predictor: the ModelScope UNet (`base_model.*`) with the CAM (short-term memory) and
/// the APM token mixing (long-term memory), as the original's `TextToVideoSDPipeline` runs them at each step.
///
/// - CAM branch (`unet.*`): the UNet's encoder half run on the noisy latents' first Fc frames with the 77 text tokens,
///   the conditioning frames' embedding (`ConditioningFrameEmbedding`) added after conv_in + transformer_in; its
///   skips and mid output are the CAM features.
/// - Base UNet on all frames with the 93-token context (text ‖ appearance): after its down pass every skip is
///   rewritten by its `CrossAttentionMerger` with the matching CAM feature, and the mid output by the mid merger;
///   each spatial cross-attention first mixes its context down to 77 tokens (`AppearanceTokenMixing`).
public struct StreamingT2VDenoiser: Sendable {
    /// The UNet configuration (from the base folder's `unet/config.json`, sizes checked against the weights).
    public let config: UNet3DConditionConfig
    let base: UNet3DConditionModel
    let cam: UNet3DConditionModel
    /// The CAM's conditioning-frame encoder.
    public let frameEmbedding: ConditioningFrameEmbedding
    let skipMergers: [CrossAttentionMerger]
    let midMerger: CrossAttentionMerger
    let mixing: [String: AppearanceTokenMixing]

    /// Builds the denoiser from a StreamingT2V checkpoint's weights (the `state_dict`, keys `base_model.*`,
    /// `unet.*`, …) and the base folder's UNet configuration.
    public init(weights: Weights, config: UNet3DConditionConfig) throws {
        let baseWeights = weights.scoped(StreamingT2VKeys.baseModel)
        let camWeights = weights.scoped(StreamingT2VKeys.cam)
        guard camWeights.contains(StreamingT2VKeys.frameEmbedding + "conv_in.weight") else {
            throw DiffusionError.badInput(component: "StreamingT2V (\(camWeights.origin))",
                                          reason: "no CAM weights (unet.*): this is not StreamingT2V's streaming_t2v.ckpt (a plain ModelScope UNet?); give the released checkpoint, whose CAM branch starts at unet.controlnet_cond_embedding.conv_in.weight")
        }
        self.config = config
        base = try UNet3DConditionModel(config: config, weights: baseWeights)
        // The CAM branch is the encoder half only (the checkpoint holds no up path for it).
        cam = try UNet3DConditionModel(encoderOf: config, weights: camWeights)
        frameEmbedding = try ConditioningFrameEmbedding(weights: camWeights.scoped(StreamingT2VKeys.frameEmbedding))
        guard frameEmbedding.outChannels == config.blockOutChannels[0] else {
            throw DiffusionError.weightShape(component: "StreamingT2V (\(camWeights.origin))",
                                             key: StreamingT2VKeys.cam + StreamingT2VKeys.frameEmbedding + "conv_out.weight",
                                             expected: [config.blockOutChannels[0]], actual: [frameEmbedding.outChannels])
        }
        // One merger per skip: the original zips the skips with its mergers, so the counts must agree.
        let skips = StreamingT2VKeys.skipCount(config)
        skipMergers = try (0..<skips).map { i in
            try CrossAttentionMerger(weights: baseWeights.scoped(StreamingT2VKeys.downMerger(i)))
        }
        if baseWeights.contains(StreamingT2VKeys.downMerger(skips) + "proj_in.weight") {
            throw DiffusionError.badConfig(component: "StreamingT2V (\(baseWeights.origin))", field: "layers_per_block",
                                           reason: "the checkpoint has more than \(skips) skip mergers: the base folder's unet/config.json does not describe this UNet")
        }
        midMerger = try CrossAttentionMerger(weights: baseWeights.scoped(StreamingT2VKeys.midMerger))
        var mixing: [String: AppearanceTokenMixing] = [:]
        for path in StreamingT2VKeys.spatialCrossAttentionPaths(config) {
            mixing[path] = try AppearanceTokenMixing(weights: baseWeights.scoped(path + "."))
        }
        self.mixing = mixing
    }

    /// Text tokens of the context (77): what the token mixing reduces the context to.
    public var textTokens: Int { mixing.values.first?.outputTokens ?? 77 }
    /// Tokens of the whole context the base UNet takes (77 text + 16 appearance = 93).
    public var contextTokens: Int { mixing.values.first?.inputTokens ?? 93 }

    /// The CAM features (skips, mid) for `latents` `[B, 4, F, h, w]`: the encoder copy on the first Fc frames with
    /// `text` `[B, 77, D]`, plus the embedding of `conditioningFrames` `[Fc, 3, H, W]` (pixels in [-1, 1], the same for
    /// every video of the batch).
    public func camFeatures(latents: Tensor, timestep: Float, text: Tensor, conditioningFrames: Tensor) throws -> UNet3DEncoderFeatures {
        guard latents.rank == 5, conditioningFrames.rank == 4, conditioningFrames.shape[0] >= 1,
              conditioningFrames.shape[0] <= latents.shape[2] else {
            throw DiffusionError.badInput(component: "StreamingT2V CAM",
                                          reason: "latents \(latents.shape) must be [B, 4, F, h, w] and conditioning frames \(conditioningFrames.shape) [Fc ≤ F, 3, H, W]")
        }
        let b = latents.shape[0], fc = conditioningFrames.shape[0]
        let embedding = try frameEmbedding(conditioningFrames)
        guard embedding.shape[2] == latents.shape[3], embedding.shape[3] == latents.shape[4] else {
            throw DiffusionError.badInput(component: "StreamingT2V CAM",
                                          reason: "conditioning frames \(conditioningFrames.shape[2])×\(conditioningFrames.shape[3]) give features \(embedding.shape[2])×\(embedding.shape[3]), but the latents are \(latents.shape[3])×\(latents.shape[4]): the frames must be \(frameEmbedding.downsampling)× the latent size")
        }
        let added = b == 1 ? embedding : concat(Array(repeating: embedding, count: b), axis: 0)
        return try cam.encoderFeatures(slice(latents, axis: 2, start: 0, end: fc), timestep: timestep, context: text,
                                       addAfterTransformerIn: added)
    }

    /// Noise prediction `[B, 4, F, h, w]` for `latents` `[B, 4, F, h, w]` at `timestep`, with `text` `[B, 77, D]`,
    /// `appearance` `[B, 16, D]` (APM tokens) and `conditioningFrames` `[Fc, 3, H, W]` in [-1, 1]. For guidance pass
    /// B = 2 in the original's order, unconditional first (negative text with the grey image's tokens), then
    /// conditional; combine as `u + g·(c − u)`.
    public func predictNoise(latents: Tensor, timestep: Float, text: Tensor, appearance: Tensor,
                             conditioningFrames: Tensor) throws -> Tensor {
        guard latents.rank == 5, text.rank == 3, appearance.rank == 3, text.shape[0] == latents.shape[0],
              appearance.shape[0] == latents.shape[0], text.shape[2] == appearance.shape[2],
              text.shape[1] + appearance.shape[1] == contextTokens else {
            throw DiffusionError.badInput(component: "StreamingT2V",
                                          reason: "latents \(latents.shape), text \(text.shape) and appearance \(appearance.shape) must be [B, 4, F, h, w], [B, \(textTokens), D] and [B, \(contextTokens - textTokens), D]")
        }
        let b = latents.shape[0], f = latents.shape[2]
        let features = try camFeatures(latents: latents, timestep: timestep, text: text, conditioningFrames: conditioningFrames)
        let skipMergers = self.skipMergers, midMerger = self.midMerger, mixing = self.mixing
        let hooks = UNetHooks(
            skips: { skips in
                guard skips.count == skipMergers.count, features.residuals.count == skips.count else {
                    throw DiffusionError.badInput(component: "StreamingT2V",
                                                  reason: "\(skips.count) skips, \(features.residuals.count) CAM features, \(skipMergers.count) mergers")
                }
                return try skips.indices.map { try skipMergers[$0](skips[$0], condition: features.residuals[$0], videos: b) }
            },
            midOutput: { mid in try midMerger(mid, condition: features.mid, videos: b) },
            crossAttentionContext: { path, context in
                guard let mix = mixing[path] else { return context }
                // The context is each video's repeated per frame: mix one row per video, then repeat.
                guard context.shape[0] == b * f else { return try mix(context) }
                let perVideo = f == 1 ? context : slice(context, axis: 0, start: 0, end: b * f, step: f)
                let mixed = try mix(perVideo)
                if f == 1 { return mixed }
                let s = mixed.shape[1], d = mixed.shape[2]
                let row = mixed.reshaped([b, 1, s, d])
                return concat(Array(repeating: row, count: f), axis: 1).reshaped([b * f, s, d])
            })
        return try base(latents, timestep: timestep, context: concat([text, appearance], axis: 1), hooks: hooks)
    }
}
