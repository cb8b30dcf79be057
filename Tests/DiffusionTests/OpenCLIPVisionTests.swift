import Foundation
import Testing
import LapseTestSupport
import LapseTensor
import LapseWeights
import DiffusionPlugin

/// Parity of the OpenCLIP vision tower and StreamingT2V's APM preprocessing with open_clip 2.24.0 and kornia 0.7.2
/// (Tools/fixtures/openclip_vision.py): a seeded tiny tower (image 32, patch 8, width 64, 2 heads of 32, 2 blocks,
/// embed 48) regenerated from the manifest with TorchGenerator, inputs regenerated from their seeds.
@Suite struct OpenCLIPVisionTests {
    struct Fixture {
        let config: OpenCLIPVisionConfig
        let weights: Weights
        let manifest: [String: Any]
        let io: CheckpointFile
    }

    static func load() throws -> Fixture {
        let manifest = try #require(try DiffusionFixtures.json("openclip_vision_manifest.json") as? [String: Any])
        let config = try OpenCLIPVisionConfig.decode(
            json: JSONSerialization.data(withJSONObject: try #require(manifest["config"])))
        let weights = try SeededWeights.make(section: manifest, origin: "openclip-vision-tiny")
        return Fixture(config: config, weights: weights, manifest: manifest,
                       io: try CheckpointFile.open(DiffusionFixtures.url("openclip_vision_io.safetensors").path))
    }

    /// Pixels in [-1, 1] as the script drew them: `2 · rand(shape) − 1` from a generator seeded `seed`.
    static func pixels(_ shape: [Int], seed: Int) -> Tensor {
        TorchGenerator(seed: UInt64(seed)).rand(shape) * 2 - 1
    }

    static func cases(_ f: Fixture) throws -> [(name: String, shape: [Int], seed: Int)] {
        try #require(f.manifest["cases"] as? [[Any]]).map { row in
            (try #require(row[0] as? String), try #require(row[1] as? [Int]), try #require(row[2] as? Int))
        }
    }

    static func maxAbs(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "sizes differ: \(a.count) vs \(b.count)")
        return zip(a, b).map { abs($0 - $1) }.max() ?? 0
    }

    @Test func configDecodesOpenCLIPLayoutAndViTH14Default() throws {
        let f = try Self.load()
        #expect(f.config == OpenCLIPVisionConfig(embedDim: 48, imageSize: 32, layers: 2, width: 64, headWidth: 32, patchSize: 8))
        #expect(f.config.heads == 2 && f.config.grid == 4 && f.config.mlpWidth == 256)
        // open_clip/model_configs/ViT-H-14.json as published.
        let vitH = """
        {"embed_dim": 1024, "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80,
         "patch_size": 14}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}}
        """
        let decoded = try OpenCLIPVisionConfig.decode(json: Data(vitH.utf8))
        #expect(decoded == .vitH14)
        #expect(decoded.heads == 16 && decoded.grid == 16 && decoded.mlpWidth == 5120 && !decoded.quickGELU)
        let roundTrip = try OpenCLIPVisionConfig.decode(json: JSONEncoder().encode(decoded))
        #expect(roundTrip == decoded)
    }

    /// open_clip's ViT-H-14 tower (built by the script on the meta device): its config decodes to `.vitH14` and its
    /// state dict has exactly the names and shapes the port reads, so the APM checkpoint's `visual.*` load strictly.
    @Test func vitH14NamesAndShapesMatchOpenCLIP() throws {
        let f = try Self.load()
        let vitH = try #require(f.manifest["vit_h_14"] as? [String: Any])
        let config = try OpenCLIPVisionConfig.decode(json: JSONSerialization.data(withJSONObject: try #require(vitH["config"])))
        #expect(config == .vitH14)
        let shapes = try #require(vitH["shapes"] as? [String: [Int]])
        #expect(shapes.count == 8 + 32 * 12)
        #expect(OpenCLIPVisionModel.expectedShapes(.vitH14) == shapes)
        let parameters = shapes.values.reduce(0) { $0 + $1.reduce(1, *) }
        #expect(parameters == 632_076_800)
    }

    @Test func preprocessMatchesStreamingT2VKornia() throws {
        let f = try Self.load()
        for c in try Self.cases(f) {
            let out = try OpenCLIPVisionModel.preprocess(pixelsMinusOneToOne: Self.pixels(c.shape, seed: c.seed),
                                                         size: f.config.imageSize)
            let expected = try f.io.tensor("\(c.name)_preprocessed")
            #expect(out.shape == expected.shape)
            let err = Self.maxAbs(out.scalars, expected.scalars)
            #expect(err <= 1e-5, "case \(c.name) \(c.shape): preprocess max abs error \(err)")
        }
    }

    /// The original hard-codes 224: a 512×384 input through its own `preprocess`, every 7th output row stored.
    @Test func preprocessMatchesOriginalAt224() throws {
        let f = try Self.load()
        let apm = try #require(f.manifest["apm224"] as? [String: Any])
        let input = Self.pixels(try #require(apm["shape"] as? [Int]), seed: try #require(apm["seed"] as? Int))
        let out = try OpenCLIPVisionModel.preprocess(pixelsMinusOneToOne: input, size: 224)
        #expect(out.shape == [1, 3, 224, 224])
        let rows = slice(out, axis: 2, start: 0, end: 224, step: try #require(apm["row_step"] as? Int))
        let expected = try f.io.tensor("apm224_rows_every_7")
        #expect(rows.shape == expected.shape)
        let err = Self.maxAbs(rows.scalars, expected.scalars)
        #expect(err <= 1e-5, "224 preprocess max abs error \(err)")
    }

    @Test func embeddingsMatchOpenCLIP() throws {
        let f = try Self.load()
        let model = try OpenCLIPVisionModel(config: f.config, weights: f.weights)
        for c in try Self.cases(f) {
            let out = try model.embed(pixelsMinusOneToOne: Self.pixels(c.shape, seed: c.seed))
            let expected = try f.io.tensor("\(c.name)_embedding")
            #expect(out.shape == [c.shape[0], 48])
            let err = normRelativeError(out.scalars, expected.scalars)
            #expect(err <= 1e-4, "case \(c.name): embedding relative error \(err)")
        }
        let raw = try model(try f.io.tensor("raw_pixels"))
        let err = normRelativeError(raw.scalars, try f.io.tensor("raw_embedding").scalars)
        #expect(raw.shape == [3, 48])
        #expect(err <= 1e-4, "tower alone: relative error \(err)")
    }

    @Test func quickGELUVariantMatchesOpenCLIP() throws {
        let f = try Self.load()
        var config = f.config
        config.quickGELU = true
        let model = try OpenCLIPVisionModel(config: config, weights: f.weights)
        let out = try model(try f.io.tensor("a_preprocessed"))
        let err = normRelativeError(out.scalars, try f.io.tensor("a_embedding_quick_gelu").scalars)
        #expect(err <= 1e-4, "quick_gelu relative error \(err)")
        // Exact GELU gives a different answer, so the flag is really used.
        let plain = try OpenCLIPVisionModel(config: f.config, weights: f.weights)(try f.io.tensor("a_preprocessed"))
        #expect(normRelativeError(plain.scalars, try f.io.tensor("a_embedding_quick_gelu").scalars) > 1e-3)
    }

    /// StreamingT2V's checkpoint keeps the tower under `image_encoder.model.visual.` beside open_clip's unused text
    /// tower; a bare VisionTransformer state dict has no `visual.` at all.
    @Test(arguments: ["image_encoder.model.", "", "bare"])
    func prefixesAreFound(_ root: String) throws {
        let f = try Self.load()
        var file = Weights(origin: "st2v.ckpt")
        for key in f.weights.keys {
            let name = root == "bare" ? String(key.dropFirst("visual.".count)) : root + key
            file[name] = try f.weights.tensor(key)
        }
        if root != "bare" {
            file[root + "token_embedding.weight"] = Tensor(zeros: [10, 8])
            file[root + "ln_final.weight"] = Tensor(zeros: [8])
            file["unet.conv_in.weight"] = Tensor(zeros: [4])
        }
        let input = try f.io.tensor("raw_pixels"), expected = try f.io.tensor("raw_embedding").scalars
        let found = try OpenCLIPVisionModel(config: f.config, weights: file)
        #expect(normRelativeError(try found(input).scalars, expected) <= 1e-4)
        if root != "bare" {
            let named = try OpenCLIPVisionModel(config: f.config, weights: file, prefix: root + "visual.")
            #expect(normRelativeError(try named(input).scalars, expected) <= 1e-4)
        }
    }

    @Test func severalTowersNeedAPrefix() throws {
        let f = try Self.load()
        var file = Weights(origin: "two.safetensors")
        for key in f.weights.keys {
            file["a." + key] = try f.weights.tensor(key)
            file["b." + key] = try f.weights.tensor(key)
        }
        #expect(throws: DiffusionError.self) { try OpenCLIPVisionModel(config: f.config, weights: file) }
        _ = try OpenCLIPVisionModel(config: f.config, weights: file, prefix: "b.visual.")
    }

    @Test func missingOrMisshapenWeightsAreNamed() throws {
        let f = try Self.load()
        var renamed = f.weights
        let key = "visual.transformer.resblocks.1.attn.in_proj_weight"
        renamed[key + "s"] = try f.weights.tensor(key)
        renamed[key] = nil
        do {
            _ = try OpenCLIPVisionModel(config: f.config, weights: renamed)
            Issue.record("expected a missing-weight error")
        } catch let DiffusionError.missingWeight(_, missing, close) {
            #expect(missing == key)
            #expect(close.first == key + "s")
        }
        var wrong = f.weights
        wrong["visual.ln_post.bias"] = Tensor(zeros: [63])
        do {
            _ = try OpenCLIPVisionModel(config: f.config, weights: wrong)
            Issue.record("expected a shape error")
        } catch let error as DiffusionError {
            #expect(error == .weightShape(component: "OpenCLIPVisionModel (openclip-vision-tiny)", key: "visual.ln_post.bias",
                                          expected: [64], actual: [63]))
            #expect(error.localizedDescription.contains("visual.ln_post.bias"))
        }
        var noTower = Weights(origin: "unet.safetensors")
        noTower["unet.conv_in.weight"] = Tensor(zeros: [4])
        #expect(throws: DiffusionError.missingWeight(component: "OpenCLIPVisionModel (unet.safetensors)",
                                                     key: "visual.class_embedding", closeMatches: ["unet.conv_in.weight"])) {
            try OpenCLIPVisionModel(config: f.config, weights: noTower)
        }
    }

    /// A config that does not belong to the checkpoint is named by the field the weights contradict.
    @Test(arguments: [("width", "vision_cfg.width"), ("patch", "vision_cfg.patch_size"), ("image", "vision_cfg.image_size"),
                      ("layers", "vision_cfg.layers"), ("embed", "embed_dim"), ("mlp", "vision_cfg.mlp_ratio")])
    func configContradictingWeightsIsNamed(_ change: String, _ field: String) throws {
        let f = try Self.load()
        var c = f.config
        switch change {
        case "width": c.width = 96
        case "patch": c.patchSize = 4; c.imageSize = 16
        case "image": c.imageSize = 40
        case "layers": c.layers = 3
        case "embed": c.embedDim = 32
        default: c.mlpRatio = 2
        }
        do {
            _ = try OpenCLIPVisionModel(config: c, weights: f.weights)
            Issue.record("expected a config error for \(field)")
        } catch let DiffusionError.badConfig(_, named, _) {
            #expect(named == field)
        }
    }

    @Test func unsupportedOptionsAndBadInputsAreRefused() throws {
        let f = try Self.load()
        for option in [#""ls_init_value": 0.1"#, #""attentional_pool": "parallel""#, #""pool_type": "avg""#,
                       #""no_ln_pre": true"#, #""final_ln_after_pool": true"#, #""pos_embed_type": "sin_cos_2d""#,
                       #""timm_model_name": "vit_base""#, #""norm_kwargs": {"eps": 1e-6}"#] {
            let json = #"{"embed_dim": 48, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "#
                + option + "}}"
            let config = try OpenCLIPVisionConfig.decode(json: Data(json.utf8))
            #expect(throws: DiffusionError.self, "\(option)") { try OpenCLIPVisionModel(config: config, weights: f.weights) }
        }
        var heads = f.config
        heads.headWidth = 48
        #expect(throws: DiffusionError.self) { try OpenCLIPVisionModel(config: heads, weights: f.weights) }
        let model = try OpenCLIPVisionModel(config: f.config, weights: f.weights)
        #expect(throws: DiffusionError.self) { try model(Tensor(zeros: [1, 3, 40, 40])) }
        #expect(throws: DiffusionError.self) { try model(Tensor(zeros: [1, 4, 32, 32])) }
        #expect(throws: DiffusionError.self) { try model.embed(pixelsMinusOneToOne: Tensor(zeros: [3, 32, 32])) }
        #expect(throws: DiffusionError.self) { try model.embed(pixelsMinusOneToOne: Tensor(zeros: [1, 1, 32, 32])) }
    }
}
