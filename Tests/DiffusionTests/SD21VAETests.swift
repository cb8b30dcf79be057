import Foundation
import Testing
import LapseTensor
import LapseWeights
import DiffusionPlugin

/// The SD2.1 VAE as StreamingT2V's refiner (MS-Vid2Vid-XL) loads and runs it, against modelscope's own
/// `AutoencoderKL` (Tools/fixtures/sd21_vae.py): a tiny LDM checkpoint `sd21_vae_tiny.ckpt` saved by `torch.save`
/// (fp16 VAE tensors under `first_stage_model.`, a few UNet / text-encoder tensors beside them), the reference's
/// posterior mean and log-variance, the latent its `posterior.sample()` drew with a recorded noise, and its decode.
@Suite("SD2.1 VAE (LDM checkpoint)")
struct SD21VAETests {
    static var checkpoint: String { DiffusionFixtures.url("sd21_vae_tiny.ckpt").path }

    static func io(_ name: String) throws -> Tensor {
        try CheckpointFile.open(DiffusionFixtures.url("sd21_vae_io.safetensors").path).tensor(name)
    }

    /// max |a − b| / max |b|.
    static func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
        normRelativeError(a.scalars, b.scalars)
    }

    @Test("encode, the posterior sample with the recorded noise and decode match modelscope's AutoencoderKL")
    func parity() throws {
        let value = try VAEValue.ldmCheckpoint(try Weights.load(Self.checkpoint))
        #expect(value.config.blockOutChannels == [32, 64] && value.config.layersPerBlock == 1)
        #expect(value.config.latentChannels == 4 && value.config.scalingFactor == 0.18215 && value.config.midBlockAddAttention)
        let vae = try value.makeModel()

        let (mean, logVariance) = try vae.encode(try Self.io("images"))
        let noise = try Self.io("noise")
        let latent = try vae.sampleLatents(mean: mean, logVariance: logVariance, noise: noise)
        let expectedLatent = try Self.io("latent")
        #expect(latent.shape == expectedLatent.shape)
        let errors = [
            ("mean", Self.relativeError(mean, try Self.io("mean"))),
            ("logvar", Self.relativeError(logVariance, try Self.io("logvar"))),
            ("sampled latent", Self.relativeError(latent, expectedLatent)),
            ("encodeSampling", Self.relativeError(try vae.encodeSampling(try Self.io("images"), noise: noise), expectedLatent)),
        ]
        // The refiner decodes latent / 0.18215, one frame at a time (decode runs per frame too).
        let decoded = try vae.decode(expectedLatent * Float(1 / value.config.scalingFactor))
        let decodeError = Self.relativeError(decoded, try Self.io("decoded"))
        print("SD2.1 VAE parity vs modelscope: " + (errors + [("decode", decodeError)]).map { "\($0.0) \($0.1)" }.joined(separator: ", "))
        for (name, error) in errors + [("decode", decodeError)] {
            #expect(error <= 1e-4, "\(name): relative error \(error)")
        }
    }

    @Test("only first_stage_model. tensors are ever read: none while checking, only the VAE's while running")
    func otherComponentsAreNeverRead() throws {
        let file = try CheckpointFile.open(Self.checkpoint)
        let weights = try Weights.stateDict(from: file)
        #expect(weights.keys.contains("model.diffusion_model.input_blocks.0.0.weight"))
        #expect(weights.keys.contains("cond_stage_model.model.positional_embedding"))
        let value = try VAEValue.ldmCheckpoint(weights)
        #expect(file.readCounts.isEmpty, "the check read \(file.readCounts.keys.sorted())")
        #expect(!value.weights.keys.contains { $0.hasPrefix("model.") || $0.hasPrefix("cond_stage_model.") })

        let vae = try value.makeModel()
        _ = try vae.decode(try Self.io("latent"))
        let read = file.readCounts.keys.sorted()
        #expect(read.count == AutoencoderKL.ldmShapes(value.config).count, "read \(read.count) tensors")
        #expect(read.allSatisfy { $0.hasPrefix("state_dict.first_stage_model.") }, "read \(read.filter { !$0.hasPrefix("state_dict.first_stage_model.") })")
    }

    @Test("a bare LDM VAE file (no first_stage_model. prefix) loads to the same model")
    func bareVAEFile() throws {
        let bare = try Weights.load(Self.checkpoint).scoped(AutoencoderKL.singleFilePrefix)
        let vae = try VAEValue.ldmCheckpoint(bare).makeModel()
        let decoded = try vae.decode(try Self.io("latent") * Float(1 / 0.18215))
        #expect(Self.relativeError(decoded, try Self.io("decoded")) <= 1e-4)
    }

    @Test("the posterior sample clamps the log-variance to [-30, 20] and scales by 0.18215")
    func sampleClamps() throws {
        let vae = try VAEValue.ldmCheckpoint(try Weights.load(Self.checkpoint)).makeModel()
        let mean = Tensor(shape: [1, 4, 1, 2], data: [0, 1, -1, 2, 0.5, 0, 0, 3])
        let logVariance = Tensor(shape: [1, 4, 1, 2], data: [0, 2, 25, -40, -1, 20, 100, 0])
        let noise = Tensor(shape: [1, 4, 1, 2], data: [1, -1, 0.5, 2, 1, 1, -1, 0])
        let z = try vae.sampleLatents(mean: mean, logVariance: logVariance, noise: noise).scalars
        for i in 0..<8 {
            let lv = min(max(logVariance.scalars[i], -30), 20)
            let expected = 0.18215 * (mean.scalars[i] + Foundation.exp(0.5 * lv) * noise.scalars[i])
            #expect(abs(z[i] - expected) <= 1e-5 * max(1, abs(expected)), "element \(i): \(z[i]) vs \(expected)")
        }
        #expect(throws: DiffusionError.self) { try vae.sampleLatents(mean: mean, logVariance: logVariance, noise: Tensor(zeros: [1, 4, 2, 1])) }
    }

    /// The error's text, or a recorded issue when `body` did not throw a `DiffusionError`.
    func message(_ body: () throws -> Void) -> String {
        do {
            try body()
            Issue.record("expected a DiffusionError")
        } catch let error as DiffusionError {
            return error.localizedDescription
        } catch {
            Issue.record("expected a DiffusionError, got \(error)")
        }
        return ""
    }

    @Test("files without an LDM VAE, or with a damaged one, are refused naming the file and the problem")
    func wrongFiles() throws {
        let all = try Weights.load(Self.checkpoint)
        let path = Self.checkpoint

        // The UNet alone, as a UNet-only LDM file has it.
        let unetOnly = all.scoped("model.diffusion_model.").renamed([.prefix("", "model.diffusion_model.")])
        let unetMessage = message { _ = try VAEValue.ldmCheckpoint(unetOnly) }
        #expect(unetMessage.contains(path) && unetMessage.contains("2 tensors under model.diffusion_model. (an LDM UNet)")
                && unetMessage.contains("no first_stage_model."), "\(unetMessage)")

        // An open_clip model file (names as open_clip saves them).
        var openCLIP = Weights(origin: "open_clip_pytorch_model.bin")
        for name in ["positional_embedding", "token_embedding.weight", "transformer.resblocks.0.attn.in_proj_weight",
                     "visual.conv1.weight", "visual.transformer.resblocks.0.ln_1.weight"] {
            openCLIP[name] = Tensor(zeros: [2])
        }
        let clipMessage = message { _ = try VAEValue.ldmCheckpoint(openCLIP) }
        #expect(clipMessage.contains("open_clip_pytorch_model.bin") && clipMessage.contains("OpenCLIP image tower")
                && clipMessage.contains("OpenCLIP text tower"), "\(clipMessage)")

        // One VAE tensor missing: named as the file names it, with its nearest neighbours.
        var missing = all
        missing["first_stage_model.decoder.up.0.block.1.conv2.weight"] = nil
        do {
            _ = try VAEValue.ldmCheckpoint(missing)
            Issue.record("expected a missing-weight error")
        } catch let DiffusionError.missingWeight(component, key, close) {
            #expect(component.contains(path) && key == "first_stage_model.decoder.up.0.block.1.conv2.weight")
            #expect(close.first == "first_stage_model.decoder.up.0.block.0.conv2.weight", "\(close)")
        }

        // A misshapen one.
        var misshapen = all
        misshapen["first_stage_model.encoder.mid.attn_1.q.weight"] = Tensor(zeros: [64, 64])
        do {
            _ = try VAEValue.ldmCheckpoint(misshapen)
            Issue.record("expected a shape error")
        } catch let DiffusionError.weightShape(_, key, expected, actual) {
            #expect(key == "first_stage_model.encoder.mid.attn_1.q.weight" && expected == [64, 64, 1, 1] && actual == [64, 64])
        }

        // Attention outside the mid block is another architecture (attn_resolutions ≠ []): refused, not ignored.
        var extra = all
        extra["first_stage_model.encoder.down.1.attn.0.q.weight"] = Tensor(zeros: [64, 64, 1, 1])
        let extraMessage = message { _ = try VAEValue.ldmCheckpoint(extra) }
        #expect(extraMessage.contains("first_stage_model.encoder.down.1.attn.0.q.weight"), "\(extraMessage)")
        print("SD2.1 VAE refusals:\n  \(unetMessage)\n  \(clipMessage)\n  \(extraMessage)")
        // Tensors outside the VAE's modules (an LDM training leftover) are ignored.
        var leftover = all
        leftover["first_stage_model.loss.logvar"] = Tensor(zeros: [1])
        #expect(try VAEValue.ldmCheckpoint(leftover).config.blockOutChannels == [32, 64])
    }
}
