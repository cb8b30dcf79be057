import Foundation
import Testing
import LapseTensor
import LapseWeights
import LapseTestSupport
import DiffusionPlugin

/// The seeded tiny `Vid2VidSDUNet` of Tools/fixtures/vid2vid_unet.py: weights regenerated under modelscope's names
/// from the manifest with TorchGenerator (bit-identical to the script's `torch.rand`); inputs and the original
/// module's output from vid2vid_unet_io.safetensors.
enum Vid2VidFixtures {
    static func manifest() throws -> [String: Any] {
        try #require(try DiffusionFixtures.json("vid2vid_unet_manifest.json") as? [String: Any])
    }

    static func config() throws -> Vid2VidUNetConfig {
        try Vid2VidUNetConfig.decode(json: try JSONSerialization.data(withJSONObject: try #require(try manifest()["config"])))
    }

    /// The module's state dict, in its order, under its names.
    static func weights() throws -> Weights {
        try SeededWeights.make(section: try manifest(), origin: "vid2vid-tiny")
    }

    static func io(_ name: String) throws -> Tensor {
        try CheckpointFile.open(DiffusionFixtures.url("vid2vid_unet_io.safetensors").path).tensor(name)
    }

    /// max |a − b| / max |b|.
    static func relativeError(_ a: Tensor, _ b: Tensor) -> (abs: Float, rel: Float) {
        let x = a.scalars, y = b.scalars
        var err: Float = 0, ref: Float = 0
        for i in x.indices { err = max(err, abs(x[i] - y[i])); ref = max(ref, abs(y[i])) }
        return (err, err / max(ref, 1e-12))
    }
}

@Suite("Vid2VidUNet")
struct Vid2VidUNetTests {
    @Test("forward matches the original Vid2VidSDUNet (padding (2,1), upsample crop, 1024-wide context)")
    func forwardParity() throws {
        let model = try Vid2VidUNet(config: try Vid2VidFixtures.config(), weights: try Vid2VidFixtures.weights())
        let t = try Vid2VidFixtures.io("t").scalars
        let out = try model(try Vid2VidFixtures.io("x"), timestep: t[0], context: try Vid2VidFixtures.io("y"))
        let expected = try Vid2VidFixtures.io("out")
        #expect(out.shape == expected.shape)
        let e = Vid2VidFixtures.relativeError(out, expected)
        print("Vid2VidUNet forward: max abs \(e.abs), relative \(e.rel)")
        #expect(e.rel <= 1e-4)
    }

    @Test("the sizes read from the weights are the fixture's config (head width given)")
    func inferredConfig() throws {
        let expected = try Vid2VidFixtures.config()
        var base = Vid2VidUNetConfig()
        base.headDim = expected.headDim
        #expect(try Vid2VidUNetConfig.inferred(from: try Vid2VidFixtures.weights(), base: base) == expected)
    }

    @Test("a safetensors file in modelscope's layout loads through the key mapping; missing and misshapen keys are named")
    func keyLayoutFile() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        let weights = try Vid2VidFixtures.weights()
        let path = dir.appendingPathComponent("generator.safetensors").path
        try SafeTensors.write(weights, to: path)
        let loaded = try Weights.load(path)
        let model = try Vid2VidUNet(weights: loaded, headDim: try Vid2VidFixtures.config().headDim)
        let t = try Vid2VidFixtures.io("t").scalars
        let out = try model(try Vid2VidFixtures.io("x"), timestep: t[0], context: try Vid2VidFixtures.io("y"))
        #expect(Vid2VidFixtures.relativeError(out, try Vid2VidFixtures.io("out")).rel <= 1e-4)

        let config = try Vid2VidFixtures.config()
        // A key the shared layers read under a diffusers name must be reported under the file's name.
        for key in ["input_blocks.4.0.temopral_conv.conv3.3.weight", "output_blocks.5.3.conv.bias",
                    "input_blocks.0.1.proj_out.weight", "middle_block.2.transformer_blocks.0.attn2.to_v.weight"] {
            var missing = loaded
            missing[key] = nil
            #expect(throws: DiffusionError.self) { try Vid2VidUNet(config: config, weights: missing) }
            do {
                _ = try Vid2VidUNet(config: config, weights: missing)
            } catch {
                let message = error.localizedDescription
                #expect(message.contains("missing weight '\(key)'"), "\(message)")
                #expect(message.contains("Vid2VidSDUNet"))
            }
        }
        var misshapen = loaded
        misshapen["input_blocks.3.op.weight"] = Tensor(zeros: [32, 32, 3, 2])
        do {
            _ = try Vid2VidUNet(config: config, weights: misshapen)
            Issue.record("a misshapen downsampler loaded")
        } catch {
            #expect(error.localizedDescription.contains("'input_blocks.3.op.weight' has shape [32, 32, 3, 2], expected [32, 32, 3, 3]"),
                    "\(error.localizedDescription)")
        }
        // What the module builds when USE_TEMPORAL_TRANSFORMER is False: not the released network.
        var extra = loaded
        extra["time_rel_pos_bias.relative_attention_bias.weight"] = Tensor(zeros: [32, 4])
        do {
            _ = try Vid2VidUNet(config: config, weights: extra)
            Issue.record("a relative-position-bias tensor was accepted")
        } catch {
            #expect(error.localizedDescription.contains("time_rel_pos_bias.relative_attention_bias.weight"), "\(error.localizedDescription)")
        }
    }

    @Test("non-Vid2Vid weights and latent sizes the down/up path cannot take are refused clearly")
    func badInputs() throws {
        let ldm = Weights(["model.diffusion_model.input_blocks.0.0.weight": Tensor(zeros: [4, 4, 3, 3])])
        do {
            _ = try Vid2VidUNet(weights: ldm)
            Issue.record("an LDM checkpoint loaded")
        } catch {
            #expect(error.localizedDescription.contains("LDM"), "\(error.localizedDescription)")
        }
        let model = try Vid2VidUNet(config: try Vid2VidFixtures.config(), weights: try Vid2VidFixtures.weights())
        let context = try Vid2VidFixtures.io("y")
        for (h, w) in [(7, 8), (6, 6), (8, 8)] {
            do {
                _ = try model(Tensor(zeros: [2, 4, 2, h, w]), timestep: 10, context: context)
                Issue.record("\(h)×\(w) ran")
            } catch {
                #expect(error.localizedDescription.contains("even height"), "\(error.localizedDescription)")
            }
        }
        try Vid2VidUNet.checkLatentSize(height: 90, width: 160, levels: 4)
        #expect(throws: DiffusionError.self) { try Vid2VidUNet.checkLatentSize(height: 92, width: 160, levels: 4) }
    }
}
