import Foundation
import Testing
import LapseTensor
import LapseWeights
import DiffusionPlugin

/// Parity of `AutoencoderKL` with diffusers on a seeded tiny config (blocks 32/64, one layer per block, 8 groups,
/// 4 latent channels): encoder mean / log-variance of two 32×32 images and decoding of two 16×16 latents.
@Suite struct VAETests {
    func checkEncode(_ vae: AutoencoderKL) throws {
        let (mean, logVar) = try vae.encode(try UNetVAEFixtures.io("vae_image"))
        #expect(mean.shape == [2, 4, 16, 16] && logVar.shape == [2, 4, 16, 16])
        let errMean = normRelativeError(mean.scalars, try UNetVAEFixtures.io("vae_mean").scalars)
        let errVar = normRelativeError(logVar.scalars, try UNetVAEFixtures.io("vae_logvar").scalars)
        print("VAE encode parity: mean \(errMean), logvar \(errVar)")
        #expect(errMean <= 1e-4, "mean relative error \(errMean)")
        #expect(errVar <= 1e-4, "logvar relative error \(errVar)")
    }

    func checkDecode(_ vae: AutoencoderKL) throws {
        let images = try vae.decode(try UNetVAEFixtures.io("vae_latent"))
        #expect(images.shape == [2, 3, 32, 32])
        let err = normRelativeError(images.scalars, try UNetVAEFixtures.io("vae_decoded").scalars)
        print("VAE decode parity: relative error \(err)")
        #expect(err <= 1e-4, "decode relative error \(err)")
    }

    @Test func encodeMatchesDiffusers() throws { try checkEncode(try UNetVAEFixtures.vae()) }

    @Test func decodeMatchesDiffusers() throws { try checkDecode(try UNetVAEFixtures.vae()) }

    /// LDM names (`first_stage_model.decoder.up.N` reversed, `mid.attn_1.q` as 1×1 convs) load to the same model.
    @Test func ldmSingleFileNamesGiveTheSameOutputs() throws {
        var weights = try UNetVAEFixtures.section("vae", layout: .singleFile).weights
        #expect(weights.shape(of: "first_stage_model.encoder.mid.attn_1.q.weight") == [64, 64, 1, 1])
        weights["model.diffusion_model.input_blocks.0.0.weight"] = Tensor(zeros: [1])
        let config = try UNetVAEFixtures.vae().config
        let vae = try AutoencoderKL(config: config, weights: weights)
        try checkEncode(vae)
        try checkDecode(vae)
        // A standalone LDM VAE file has no `first_stage_model.` prefix.
        let bare = try AutoencoderKL(config: config, weights: weights.scoped("first_stage_model."))
        try checkDecode(bare)
    }

    @Test func configAndErrors() throws {
        let vae = try UNetVAEFixtures.vae()
        #expect(vae.config.scalingFactor == 0.18215 && vae.config.blockOutChannels == [32, 64])
        #expect(try AutoencoderKLConfig.decode(json: Data("{}".utf8)) == .sd15)
        #expect(throws: DiffusionError.self) { try vae.encode(Tensor(zeros: [1, 3, 31, 32])) }
        #expect(throws: DiffusionError.self) { try vae.decode(Tensor(zeros: [1, 3, 16, 16])) }
        var weights = try UNetVAEFixtures.section("vae", layout: .diffusers).weights
        weights["decoder.up_blocks.0.upsamplers.0.conv.weight"] = nil
        do {
            _ = try AutoencoderKL(config: vae.config, weights: weights)
            Issue.record("expected a missing-weight error")
        } catch let DiffusionError.missingWeight(component, key, _) {
            #expect(key == "decoder.up_blocks.0.upsamplers.0.conv.weight" && component.hasPrefix("AutoencoderKL"))
        }
    }
}
