import Foundation
import Testing
import LapseTensor
import LapseWeights
import DiffusionPlugin

/// Parity of `UNet2DConditionModel` with diffusers on a seeded tiny SD1.x-shaped config (blocks 32/64, one layer
/// per block, 2 heads, cross-attention 32, 8 groups, 8×8 latents): CrossAttnDown + Down / Up + CrossAttnUp.
@Suite struct UNetTests {
    func run(_ unet: UNet2DConditionModel) throws -> Tensor {
        try unet(try UNetVAEFixtures.io("unet_sample"), timesteps: try UNetVAEFixtures.timesteps("unet_timesteps"),
                 context: try UNetVAEFixtures.io("unet_context"))
    }

    @Test func configDecodesDiffusersNamesAndDefaultsToSD15() throws {
        let unet = try UNetVAEFixtures.unet()
        #expect(unet.config.blockOutChannels == [32, 64] && unet.config.crossAttentionDim == 32)
        #expect(unet.config.attentionHeadDim == .all(2) && unet.config.numAttentionHeads == nil)
        let sd15 = try UNet2DConditionConfig.decode(json: Data("{}".utf8))
        #expect(sd15 == .sd15 && sd15.blockOutChannels == [320, 640, 1280, 1280] && sd15.crossAttentionDim == 768)
        let listHeads = try UNet2DConditionConfig.decode(json: Data(#"{"attention_head_dim": [5, 10, 20, 20]}"#.utf8))
        #expect(listHeads.attentionHeadDim == .perBlock([5, 10, 20, 20]))
    }

    @Test func noisePredictionMatchesDiffusers() throws {
        let out = try run(try UNetVAEFixtures.unet())
        let expected = try UNetVAEFixtures.io("unet_out")
        #expect(out.shape == [2, 4, 8, 8])
        let err = normRelativeError(out.scalars, expected.scalars)
        print("UNet parity: relative error \(err)")
        #expect(err <= 1e-4, "UNet relative error \(err)")
    }

    /// The LDM single-file layout (`model.diffusion_model.input_blocks…`), as diffusers' converter reads it.
    @Test func ldmSingleFileNamesGiveTheSameOutput() throws {
        var weights = try UNetVAEFixtures.section("unet", layout: .singleFile).weights
        #expect(weights.contains("model.diffusion_model.output_blocks.1.2.conv.weight") == false)
        #expect(weights.contains("model.diffusion_model.input_blocks.3.0.op.weight") == false)
        #expect(weights.contains("model.diffusion_model.input_blocks.2.0.op.weight"))
        #expect(weights.contains("model.diffusion_model.output_blocks.1.1.conv.weight"))
        weights["first_stage_model.encoder.conv_in.weight"] = Tensor(zeros: [1])  // other components are ignored
        let config = try UNetVAEFixtures.unet().config
        let out = try run(try UNet2DConditionModel(config: config, weights: weights))
        let err = normRelativeError(out.scalars, try UNetVAEFixtures.io("unet_out").scalars)
        #expect(err <= 1e-4, "LDM-named UNet relative error \(err)")
    }

    @Test func ldmNamesMapForSD15Layout() {
        let cases: [(String, String)] = [
            ("time_embed.0.weight", "time_embedding.linear_1.weight"),
            ("input_blocks.0.0.bias", "conv_in.bias"),
            ("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"),
            ("input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight"),
            ("input_blocks.4.0.in_layers.2.weight", "down_blocks.1.resnets.0.conv1.weight"),
            ("input_blocks.9.0.op.weight", "down_blocks.2.downsamplers.0.conv.weight"),
            ("middle_block.2.emb_layers.1.bias", "mid_block.resnets.1.time_emb_proj.bias"),
            ("middle_block.1.proj_out.weight", "mid_block.attentions.0.proj_out.weight"),
            ("output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
            ("output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias"),
            ("output_blocks.11.1.norm.weight", "up_blocks.3.attentions.2.norm.weight"),
            ("output_blocks.6.0.out_layers.3.weight", "up_blocks.2.resnets.0.conv2.weight"),
            ("out.0.weight", "conv_norm_out.weight"),
            ("out.2.bias", "conv_out.bias"),
        ]
        for (ldm, diffusers) in cases {
            #expect(UNet2DConditionModel.diffusersName(ldm: ldm, layersPerBlock: 2) == diffusers, "\(ldm)")
        }
        #expect(UNet2DConditionModel.diffusersName(ldm: "input_blocks.1.0.unknown.weight", layersPerBlock: 2) == nil)
    }

    @Test func missingAndMisshapenWeightsAreNamed() throws {
        var weights = try UNetVAEFixtures.section("unet", layout: .diffusers).weights
        let config = try UNetVAEFixtures.unet().config
        let key = "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight"
        let moved = try weights.tensor(key)
        weights[key] = nil
        weights[key + "s"] = moved
        do {
            _ = try UNet2DConditionModel(config: config, weights: weights)
            Issue.record("expected a missing-weight error")
        } catch let DiffusionError.missingWeight(_, missing, close) {
            #expect(missing == key && close.contains(key + "s"))
        }
        weights[key] = Tensor(zeros: [32, 31])
        do {
            _ = try UNet2DConditionModel(config: config, weights: weights)
            Issue.record("expected a shape error")
        } catch let error as DiffusionError {
            guard case .weightShape(_, key, [32, 32], [32, 31]) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(error.localizedDescription.contains(key))
        }
    }

    @Test func badInputsAreRejected() throws {
        let unet = try UNetVAEFixtures.unet()
        let context = try UNetVAEFixtures.io("unet_context")
        #expect(throws: DiffusionError.self) { try unet(Tensor(zeros: [2, 3, 8, 8]), timesteps: [1, 2], context: context) }
        #expect(throws: DiffusionError.self) { try unet(Tensor(zeros: [2, 4, 8, 8]), timesteps: [1, 2, 3], context: context) }
        #expect(throws: DiffusionError.self) { try unet(Tensor(zeros: [2, 4, 8, 8]), timesteps: [1], context: Tensor(zeros: [2, 77, 31])) }
        var config = unet.config
        config.attentionHeadDim = .all(3)
        #expect(throws: DiffusionError.self) {
            try UNet2DConditionModel(config: config, weights: try UNetVAEFixtures.section("unet", layout: .diffusers).weights)
        }
    }
}
