import Foundation
import Testing
import LapseGraph
import LapseTensor
import LapseWeights
import LapseTestSupport
import DiffusionPlugin

/// The LoadCLIP and TextEncode nodes, on a full-vocabulary (49408) single-layer model with deterministic weights
/// written as an LDM single-file checkpoint, and the real CLIP vocabulary.
@Suite struct TextEncodeNodeTests {
    /// Deterministic, varied values in ±scale (no RNG needed: the test checks wiring, parity is tested elsewhere).
    static func filled(_ shape: [Int], seed: Int, scale: Float) -> Tensor {
        let n = Tensor.elementCount(shape)
        return Tensor(shape: shape, data: (0..<n).map { scale * Float(($0 &* 7919 &+ seed &* 104_729) % 2001 - 1000) / 1000 })
    }

    static func writeCheckpoint(to path: String) throws -> Weights {
        let d = 64, f = 37
        var shapes = CLIPTextModel.expectedShapes(CLIPTextConfig(vocabSize: 49408, hiddenSize: d, intermediateSize: f,
                                                                 numHiddenLayers: 1, numAttentionHeads: 1,
                                                                 maxPositionEmbeddings: 77))
        shapes["text_model.embeddings.position_ids"] = nil
        var weights = Weights(origin: path)
        for (i, name) in shapes.keys.sorted().enumerated() {
            let isNormWeight = name.contains("norm") && name.hasSuffix("weight")
            weights[name] = isNormWeight ? Tensor(repeating: 1, shape: shapes[name]!) : filled(shapes[name]!, seed: i, scale: 0.2)
        }
        var ldm: [(name: String, tensor: Tensor)] = weights.keys.map { ("cond_stage_model.transformer." + $0, weights[$0]!) }
        ldm.append(("model.diffusion_model.conv_in.bias", Tensor(zeros: [320])))
        try SafeTensors.write(ldm, to: path)
        return weights
    }

    /// One checkpoint written and loaded through LoadCLIP for the whole suite (loading the vocabulary dominates).
    struct Loaded: Sendable {
        let weights: Weights
        /// What LoadCLIP put on its `clip` output, and the encoder built from it.
        let value: CLIPValue
        let encoder: CLIPTextEncoder
        let logs: [String]
    }

    static let shared: Result<Loaded, Error> = Result {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("sd-single-file.safetensors").path
        let weights = try writeCheckpoint(to: path)
        let context = TestNodeContext(nodeType: "LoadCLIP")
        let loaded = try LoadCLIP().run(NodeInputs(["path": .string(path), "vocab": .string(try DiffusionFixtures.clipVocabulary().path),
                                                    "config": .string("")]), context: context)
        guard case .object(let object)? = loaded.values["clip"], let value = object as? CLIPValue else {
            throw DiffusionFixtures.FixtureError.malformed("LoadCLIP gave no CLIPValue")
        }
        let encoder = try value.makeEncoder()
        // Read every tensor now: the file is deleted when this returns.
        var resident = Weights(origin: path)
        for key in weights.keys { resident[key] = try weights.tensor(key) }
        return Loaded(weights: resident, value: value, encoder: encoder, logs: context.logs)
    }

    @Test func loadCLIPInfersTheConfigFromASingleFileCheckpoint() throws {
        let loaded = try Self.shared.get()
        let config = loaded.encoder.model.config
        #expect(config.vocabSize == 49408 && config.hiddenSize == 64 && config.numHiddenLayers == 1)
        #expect(config.numAttentionHeads == 1 && config.intermediateSize == 37 && config.hiddenAct == "quick_gelu")
        #expect(loaded.logs.count == 1)
    }

    @Test func textEncodeMatchesDirectEncoding() throws {
        let loaded = try Self.shared.get()
        let prompt = "a bud blooming into a flower, time-lapse"
        let encoded = try TextEncode().run(NodeInputs(["clip": .object(loaded.value), "text": .string(prompt)]),
                                           context: TestNodeContext(nodeType: "TextEncode"))
        guard case .object(let c)? = encoded.values["conditioning"], let conditioning = c as? Conditioning else {
            Issue.record("TextEncode gave no Conditioning")
            return
        }
        #expect(conditioning.embeddings.shape == [1, 77, 64])
        #expect(conditioning.prompts == [prompt])
        let ids = loaded.encoder.tokenizer.encode(prompt)
        #expect(ids.prefix(3) == [49406, 320, 10737])  // BOS, "a", "bud"
        let direct = try CLIPTextModel(config: loaded.encoder.model.config, weights: loaded.weights)([ids])
        #expect(conditioning.embeddings.scalars == direct.scalars)
    }

    @Test func overlongPromptIsTruncatedWithALogLine() throws {
        let loaded = try Self.shared.get()
        let context = TestNodeContext()
        let out = try TextEncode().run(NodeInputs(["clip": .object(loaded.value),
                                                   "text": .string(String(repeating: "melting ice ", count: 60))]),
                                       context: context)
        #expect(out.values["conditioning"] != nil)
        #expect(context.logs.contains { $0.contains("only the first 75") })
    }

    @Test func pluginRegistersItsNodes() throws {
        let registry = NodeRegistry()
        try DiffusionPlugin.register(into: registry)
        #expect(LoadCLIP.schema.outputs.map(\.type) == [PortType(.clip)])
        #expect(TextEncode.schema.inputs.first?.type == PortType(.clip))
        #expect(TextEncode.schema.outputs.map(\.type) == [PortType(.conditioning)])
    }
}
