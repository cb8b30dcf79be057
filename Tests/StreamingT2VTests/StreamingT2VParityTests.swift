import DiffusionPlugin
import LapseTensor
import LapseWeights
import StreamingT2VPlugin
import Testing

/// Parity with the original StreamingT2V code (branch StreamingModelscope) on the seeded tiny set of
/// Tools/fixtures/streamingt2v.py: one denoiser step (CAM features, merged noise with and without guidance) and the
/// APM (OpenCLIP embedding, resampler tokens, the grey-image tokens).
@Suite("StreamingT2V parity", .serialized)
struct StreamingT2VParityTests {
    typealias F = StreamingT2VFixtures

    static func denoiser() throws -> StreamingT2VDenoiser {
        try StreamingT2VDenoiser(weights: F.weights(["base_model", "unet"]), config: F.unetConfig())
    }

    @Test func frameEmbeddingMatchesTheOriginal() throws {
        let weights = try F.weights(["unet"]).scoped("unet.controlnet_cond_embedding.")
        let embedding = try ConditioningFrameEmbedding(weights: weights)
        let out = try embedding(F.tensor("step_condition_frames"))
        let err = F.relativeError(out, try F.tensor("frame_embedding"))
        print("frame embedding: rel \(err)")
        #expect(err <= 1e-4)
    }

    @Test func camFeaturesMatchTheOriginal() throws {
        let denoiser = try Self.denoiser()
        let latents = try F.tensor("step_latents")
        let context = try F.tensor("context_cfg")
        let text = slice(context, axis: 1, start: 0, end: 77)
        let features = try denoiser.camFeatures(latents: concat([latents, latents], axis: 0),
                                                timestep: try F.tensor("step_timestep").scalars[0], text: text,
                                                conditioningFrames: try F.tensor("step_condition_frames"))
        #expect(features.residuals.count == 6)
        var worst: Float = 0
        for (i, r) in features.residuals.enumerated() {
            let err = F.relativeError(r, try F.tensor("cam_down_\(i)"))
            print("CAM skip \(i) \(r.shape): rel \(err)")
            worst = max(worst, err)
        }
        let midErr = F.relativeError(features.mid, try F.tensor("cam_mid"))
        print("CAM mid: rel \(midErr)")
        #expect(worst <= 1e-4)
        #expect(midErr <= 1e-4)
    }

    @Test func mergedNoiseWithGuidanceMatchesTheOriginal() throws {
        let denoiser = try Self.denoiser()
        let latents = try F.tensor("step_latents")
        let context = try F.tensor("context_cfg")
        let raw = try denoiser.predictNoise(latents: concat([latents, latents], axis: 0),
                                            timestep: try F.tensor("step_timestep").scalars[0],
                                            text: slice(context, axis: 1, start: 0, end: 77),
                                            appearance: slice(context, axis: 1, start: 77, end: 93),
                                            conditioningFrames: try F.tensor("step_condition_frames"))
        let rawErr = F.relativeError(raw, try F.tensor("eps_cfg_raw"))
        let u = slice(raw, axis: 0, start: 0, end: 1), c = slice(raw, axis: 0, start: 1, end: 2)
        let guided = u + (c - u) * 7.5
        let guidedErr = F.relativeError(guided, try F.tensor("eps_cfg"))
        print("merged eps, CFG batch: rel \(rawErr); guided: rel \(guidedErr), max abs \(F.maxAbsError(guided, try F.tensor("eps_cfg")))")
        #expect(rawErr <= 1e-4)
        #expect(guidedErr <= 1e-4)
    }

    @Test func mergedNoiseWithoutGuidanceMatchesTheOriginal() throws {
        let denoiser = try Self.denoiser()
        let context = try F.tensor("context_cfg")
        let positive = slice(context, axis: 0, start: 1, end: 2)
        let eps = try denoiser.predictNoise(latents: try F.tensor("step_latents"),
                                            timestep: try F.tensor("step_timestep").scalars[0],
                                            text: slice(positive, axis: 1, start: 0, end: 77),
                                            appearance: slice(positive, axis: 1, start: 77, end: 93),
                                            conditioningFrames: try F.tensor("step_condition_frames"))
        let err = F.relativeError(eps, try F.tensor("eps_nocfg"))
        print("merged eps, no CFG: rel \(err)")
        #expect(err <= 1e-4)
    }

    /// The first DDIM step of the extension fixture's first generated chunk (32² frames, its own anchor tokens):
    /// the guided noise the original's pipeline handed to the scheduler.
    @Test func firstExtensionStepMatchesTheOriginal() throws {
        let file = "streamingt2v_extension.safetensors"
        let denoiser = try Self.denoiser()
        let latents = try F.tensor("chunk1_init_latents", file: file)
        let context = try F.tensor("context_cfg", file: file)
        let first = try F.tensor("first_chunk", file: file)
        let timestep = try F.tensor("timesteps", file: file).scalars[0]
        let raw = try denoiser.predictNoise(latents: concat([latents, latents], axis: 0), timestep: timestep,
                                            text: slice(context, axis: 1, start: 0, end: 77),
                                            appearance: slice(context, axis: 1, start: 77, end: 93),
                                            conditioningFrames: slice(first, axis: 0, start: 8, end: 16) * 2 - 1)
        let u = slice(raw, axis: 0, start: 0, end: 1), c = slice(raw, axis: 0, start: 1, end: 2)
        // The pipeline folds frames into the batch before the scheduler: [1, 4, F, h, w] → [F, 4, h, w].
        let guided = permute(u + (c - u) * 7.5, [0, 2, 1, 3, 4]).reshaped([16, 4, 4, 4])
        let err = F.relativeError(guided, try F.tensor("chunk1_step0_eps", file: file))
        print("extension chunk 1 step 0 guided eps: rel \(err)")
        #expect(err <= 1e-4)
    }

    @Test func appearanceTokensMatchTheOriginal() throws {
        let weights = try F.weights(["image_encoder", "resampler"])
        let apm = try AppearanceEncoder(weights: weights, visionConfig: try F.visionConfig())
        let anchor = try F.tensor("apm_anchor")
        let embedding = try apm.vision.embed(pixelsMinusOneToOne: anchor)
        let checks: [(String, Tensor, String)] = [
            ("embedding", embedding, "apm_embedding"),
            ("tokens", try apm.tokens(anchorPixels: anchor), "apm_tokens"),
            ("grey-image embedding", try apm.vision.embed(pixelsMinusOneToOne: Tensor(zeros: anchor.shape)), "apm_uncond_embedding"),
            ("grey-image tokens", try apm.unconditionalTokens(like: anchor), "apm_uncond_tokens"),
        ]
        for (what, value, key) in checks {
            let err = F.relativeError(value, try F.tensor(key))
            print("APM \(what): rel \(err)")
            #expect(err <= 1e-4, "\(what)")
        }
        // A 240² anchor: the resize to 224 shrinks it (kornia's anti-aliasing path).
        let big = TorchGenerator(seed: 4242).rand([1, 3, 240, 240]) * 2 - 1
        let bigErr = F.relativeError(try apm.tokens(anchorPixels: big), try F.tensor("apm_big_tokens"))
        let pre = try apm.vision.preprocess(pixelsMinusOneToOne: big)
        let preErr = F.maxAbsError(slice(slice(pre, axis: 2, start: 0, end: 224, step: 8), axis: 3, start: 0, end: 224, step: 8),
                                   try F.tensor("apm_big_preprocessed_every8"))
        print("APM 240² anchor: tokens rel \(bigErr), preprocessing max abs \(preErr)")
        #expect(bigErr <= 1e-4)
        #expect(preErr <= 1e-4)
    }

    /// The CAM branch's weights hold no up path: it is built encoder-only, and a forward through it is refused.
    @Test func theCAMEncoderHasNoForward() throws {
        let cam = try UNet3DConditionModel(encoderOf: F.unetConfig(), weights: F.weights(["unet"]).scoped("unet."))
        let latents = Tensor(zeros: [1, 4, 8, 4, 6]), text = Tensor(zeros: [1, 77, 32])
        #expect(try cam.encoderFeatures(latents, timestep: 1, context: text).residuals.count == 6)
        var message = ""
        do { _ = try cam(latents, timestep: 1, context: text) } catch { message = error.localizedDescription }
        #expect(message.contains("encoder only"), "\(message)")
    }

    @Test func aPlainModelScopeCheckpointIsRefusedByName() throws {
        // Only base_model.*: no CAM branch.
        let plain = try F.weights(["base_model"])
        var message = ""
        do { _ = try StreamingT2VDenoiser(weights: plain, config: F.unetConfig()) } catch { message = "\(error.localizedDescription)" }
        #expect(message.contains("no CAM weights (unet.*)"), "\(message)")
    }

    @Test func conditioningFramesOfTheWrongSizeAreRefused() throws {
        let denoiser = try Self.denoiser()
        let latents = try F.tensor("step_latents")
        let context = try F.tensor("context_cfg")
        let positive = slice(context, axis: 0, start: 1, end: 2)
        var message = ""
        do {
            _ = try denoiser.predictNoise(latents: latents, timestep: 1, text: slice(positive, axis: 1, start: 0, end: 77),
                                          appearance: slice(positive, axis: 1, start: 77, end: 93),
                                          conditioningFrames: Tensor(zeros: [8, 3, 64, 64]))
        } catch { message = "\(error.localizedDescription)" }
        #expect(message.contains("must be 8× the latent size"), "\(message)")
    }
}
