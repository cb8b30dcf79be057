import Foundation
import Testing
import LapseTensor
import LapseWeights
import DiffusionPlugin

/// Parity of `UNetMotionModel` (the tiny UNet + a tiny AnimateDiff `MotionAdapter`: 2 heads, 8 groups, no mid
/// module, max 32 frames) with diffusers' `UNetMotionModel.from_unet2d`.
@Suite struct MotionModuleTests {
    func model(layout: UNetVAEFixtures.Layout = .diffusers, normMode: MotionNormMode) throws -> UNetMotionModel {
        try UNetMotionModel(unet: try UNetVAEFixtures.unet(),
                            motion: try UNetVAEFixtures.motion(layout: layout, normMode: normMode))
    }

    func check(_ model: UNetMotionModel, prefix: String, expected: String, shape: [Int]) throws {
        let out = try model(try UNetVAEFixtures.io(prefix + "_sample"), timesteps: try UNetVAEFixtures.timesteps(prefix + "_timesteps"),
                            context: try UNetVAEFixtures.io(prefix + "_context"))
        #expect(out.shape == shape)
        let err = normRelativeError(out.scalars, try UNetVAEFixtures.io(expected).scalars)
        print("UNetMotionModel parity (\(expected)): relative error \(err)")
        #expect(err <= 1e-4, "\(expected) relative error \(err)")
    }

    /// diffusers' AnimateDiffTransformer3D normalises over all frames of a video at once.
    @Test func videoNoisePredictionMatchesDiffusers() throws {
        try check(try model(normMode: .acrossFrames), prefix: "motion", expected: "motion_out", shape: [1, 4, 4, 8, 8])
    }

    /// Two videos of three frames with different timesteps: frames stay within their video.
    @Test func batchOfVideosMatchesDiffusers() throws {
        try check(try model(normMode: .acrossFrames), prefix: "motion2", expected: "motion2_out", shape: [2, 4, 3, 8, 8])
    }

    /// Original AnimateDiff checkpoint names (`temporal_transformer…attention_blocks.0…`, `pos_encoder.pe`) and
    /// AnimateDiff's per-frame GroupNorm (the reference ran diffusers with that norm patched in).
    @Test func originalAnimateDiffNamesAndPerFrameNorm() throws {
        var weights = try UNetVAEFixtures.section("motion", layout: .singleFile).weights
        #expect(weights.contains("down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_q.weight"))
        #expect(weights.contains("up_blocks.1.motion_modules.1.temporal_transformer.transformer_blocks.0.ff_norm.bias"))
        // Real files carry the position tables and sometimes a DataParallel prefix.
        for (i, c) in [(0, 32), (1, 64)] {
            weights["module.down_blocks.\(i).motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"] =
                Tensor(zeros: [1, 32, c])
        }
        let config = try MotionAdapterConfig.decode(json: try UNetVAEFixtures.section("motion", layout: .diffusers).config)
        let motion = try MotionAdapter(config: config, weights: weights, normMode: .perFrame)
        #expect(motion.config.motionMaxSeqLength == 32)
        try check(try UNetMotionModel(unet: try UNetVAEFixtures.unet(), motion: motion), prefix: "motion",
                  expected: "motion_out_per_frame", shape: [1, 4, 4, 8, 8])
    }

    /// A v1/v2-style adapter with a mid-block module (after the mid transformer), from original AnimateDiff names;
    /// the file's mid module switches it on even though the config passed says v3 (none).
    @Test func midBlockModuleMatchesDiffusers() throws {
        let section = try UNetVAEFixtures.section("motion_mid", layout: .singleFile)
        #expect(section.weights.contains("mid_block.motion_modules.0.temporal_transformer.proj_in.weight"))
        var config = try MotionAdapterConfig.decode(json: section.config)
        #expect(config.useMotionMidBlock)
        config.useMotionMidBlock = false
        let motion = try MotionAdapter(config: config, weights: section.weights, normMode: .acrossFrames)
        #expect(motion.config.useMotionMidBlock)
        try check(try UNetMotionModel(unet: try UNetVAEFixtures.unet(), motion: motion), prefix: "motion",
                  expected: "motion_mid_out", shape: [1, 4, 4, 8, 8])
    }

    @Test func framesBeyondThePositionTableAreATypedError() throws {
        let m = try model(normMode: .perFrame)
        do {
            _ = try m(Tensor(zeros: [1, 4, 33, 8, 8]), timesteps: [1], context: Tensor(zeros: [1, 77, 32]))
            Issue.record("expected an error for 33 frames")
        } catch let error as DiffusionError {
            #expect(error.localizedDescription.contains("33 frames exceed"))
            #expect(error.localizedDescription.contains("32"))
        }
    }

    @Test func mismatchedUNetAndAdapterAreRejected() throws {
        var config = try MotionAdapterConfig.decode(json: try UNetVAEFixtures.section("motion", layout: .diffusers).config)
        #expect(config.motionNumAttentionHeads == 2 && config.useMotionMidBlock == false)
        #expect(try MotionAdapterConfig.decode(json: Data("{}".utf8)) == .animateDiffV3)
        config.motionLayersPerBlock = 2
        #expect(throws: DiffusionError.self) {
            try MotionAdapter(config: config, weights: try UNetVAEFixtures.section("motion", layout: .diffusers).weights)
        }
    }
}
