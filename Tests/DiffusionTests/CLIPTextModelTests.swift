import Foundation
import Testing
import LapseTensor
import LapseWeights
import DiffusionPlugin

/// Parity of the CLIP text transformer with transformers' CLIPTextModel on a seeded tiny configuration
/// (hidden 32, 2 layers, 2 heads, intermediate 37, vocabulary 1000).
@Suite struct CLIPTextModelTests {
    struct IO {
        let config: CLIPTextConfig
        let ids: [[Int]]
        let weights: Weights
        let expectedQuick: [Float]
        let expectedGelu: [Float]
    }

    static func load() throws -> IO {
        let io = try #require(try DiffusionFixtures.json("clip_tiny_io.json") as? [String: Any])
        let configData = try JSONSerialization.data(withJSONObject: try #require(io["config"]))
        let expected = try CheckpointFile.open(DiffusionFixtures.url("clip_tiny_expected.safetensors").path)
        return IO(config: try CLIPTextConfig.decode(json: configData),
                  ids: try #require(io["input_ids"] as? [[Int]]),
                  weights: try Weights.load(DiffusionFixtures.url("clip_tiny.safetensors").path),
                  expectedQuick: try expected.tensor("last_hidden_state").scalars,
                  expectedGelu: try expected.tensor("last_hidden_state_gelu").scalars)
    }

    @Test func lastHiddenStateMatchesTransformers() throws {
        let io = try Self.load()
        #expect(io.config.hiddenAct == "quick_gelu" && io.config.vocabSize == 1000 && io.config.numHiddenLayers == 2)
        let model = try CLIPTextModel(config: io.config, weights: io.weights)
        let out = try model(io.ids)
        #expect(out.shape == [2, 77, 32])
        let err = normRelativeError(out.scalars, io.expectedQuick)
        #expect(err <= 1e-4, "quick_gelu relative error \(err)")
    }

    @Test func erfGeluVariantMatchesTransformers() throws {
        let io = try Self.load()
        var config = io.config
        config.hiddenAct = "gelu"
        let out = try CLIPTextModel(config: config, weights: io.weights)(io.ids)
        let err = normRelativeError(out.scalars, io.expectedGelu)
        #expect(err <= 1e-4, "gelu relative error \(err)")
    }

    /// The causal mask makes a prefix's states independent of what follows.
    @Test func shorterSequenceEqualsPrefixOfFullOne() throws {
        let io = try Self.load()
        let model = try CLIPTextModel(config: io.config, weights: io.weights)
        let prefix = try model([Array(io.ids[1].prefix(20))])
        #expect(prefix.shape == [1, 20, 32])
        let full = Array(io.expectedQuick[(77 * 32)..<(77 * 32 + 20 * 32)])
        #expect(normRelativeError(prefix.scalars, full) <= 1e-4)
    }

    @Test(arguments: ["cond_stage_model.transformer.", "cond_stage_model.transformer.text_model.",
                      "conditioner.embedders.0.transformer."])
    func singleFileNamesMapToTransformers(_ prefix: String) throws {
        let io = try Self.load()
        var ldm = Weights(origin: "ldm.safetensors")
        for key in io.weights.keys {
            let suffix = key.dropFirst("text_model.".count)
            ldm[prefix + suffix] = try io.weights.tensor(key)
        }
        ldm["model.diffusion_model.conv_in.weight"] = Tensor(zeros: [4])
        ldm["cond_stage_model.transformer.text_model.embeddings.position_ids".replacingOccurrences(
            of: "cond_stage_model.transformer.", with: prefix)] = Tensor(zeros: [77])
        let mapped = CLIPTextModel.transformersWeights(from: ldm)
        #expect(mapped.count == io.weights.count + 1)  // + position_ids, which the model ignores
        #expect(mapped.contains("text_model.encoder.layers.1.mlp.fc2.bias"))
        #expect(!mapped.contains("model.diffusion_model.conv_in.weight"))
        let out = try CLIPTextModel(config: io.config, weights: mapped)(io.ids)
        #expect(normRelativeError(out.scalars, io.expectedQuick) <= 1e-4)
    }

    /// transformers 5 saves a bare CLIPTextModel without the `text_model.` level.
    @Test func flattenedTransformers5NamesAreAccepted() throws {
        let io = try Self.load()
        let flat = io.weights.renamed([.prefix("text_model.", "")])
        #expect(flat.contains("embeddings.token_embedding.weight"))
        let out = try CLIPTextModel(config: io.config, weights: flat)(io.ids)
        #expect(normRelativeError(out.scalars, io.expectedQuick) <= 1e-4)
    }

    @Test func missingOrMisshapenWeightsAreNamed() throws {
        let io = try Self.load()
        var weights = io.weights
        weights["text_model.encoder.layers.1.self_attn.k_proj.weight"] = nil
        weights["text_model.encoder.layers.1.self_attn.k_proj.weights"] = Tensor(zeros: [32, 32])
        do {
            _ = try CLIPTextModel(config: io.config, weights: weights)
            Issue.record("expected a missing-weight error")
        } catch let DiffusionError.missingWeight(_, key, close) {
            #expect(key == "text_model.encoder.layers.1.self_attn.k_proj.weight")
            #expect(close.first == "text_model.encoder.layers.1.self_attn.k_proj.weights")
        }
        var wrong = io.weights
        wrong["text_model.final_layer_norm.bias"] = Tensor(zeros: [31])
        #expect(throws: DiffusionError.weightShape(component: "CLIPTextModel (\(wrong.origin))",
                                                   key: "text_model.final_layer_norm.bias", expected: [32], actual: [31])) {
            try CLIPTextModel(config: io.config, weights: wrong)
        }
    }

    @Test func rejectsBadConfigAndInput() throws {
        let io = try Self.load()
        var config = io.config
        config.hiddenAct = "swish"
        #expect(throws: DiffusionError.self) { try CLIPTextModel(config: config, weights: io.weights) }
        config = io.config
        config.numAttentionHeads = 3
        #expect(throws: DiffusionError.self) { try CLIPTextModel(config: config, weights: io.weights) }
        let model = try CLIPTextModel(config: io.config, weights: io.weights)
        #expect(throws: DiffusionError.self) { try model([[1, 2, 1000]]) }
        #expect(throws: DiffusionError.self) { try model([[1, 2], [1]]) }
        #expect(throws: DiffusionError.self) { try model([Array(repeating: 1, count: 78)]) }
    }

    @Test func decodesFullCLIPConfig() throws {
        let json = #"{"architectures": ["CLIPModel"], "text_config": {"vocab_size": 49408, "hidden_size": 768,"#
            + #" "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,"#
            + #" "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05,"#
            + #" "projection_dim": 768, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1}}"#
        #expect(try CLIPTextConfig.decode(json: Data(json.utf8)) == .vitL14)
    }
}
