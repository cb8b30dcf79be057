import Foundation
import Testing
import LapseGraph
import LapseTensor
import LapseWeights
import LapseTestSupport
import DiffusionPlugin

/// The OpenCLIP text tower as MS-Vid2Vid-XL's `FrozenOpenCLIPEmbedder` runs it, against open_clip 2.24.0 and the
/// embedder's own code (Tools/fixtures/openclip_text.py): a seeded tiny open_clip CLIP (vocab 49408, context 77,
/// width 64, 1 head, 3 text blocks, a tiny vision tower) regenerated from the manifest with TorchGenerator, and
/// `open_clip.tokenize`'s ids on the real vocabulary.
@Suite struct OpenCLIPTextTests {
    struct Fixture: Sendable {
        /// The whole tiny CLIP state dict under open_clip's names (`visual.*` included).
        let weights: Weights
        let prompts: [String]
        let ids: [[Int]]
        let lastLayerPrompts: [Int]
        let penultimate: Tensor
        let last: Tensor
    }

    /// Regenerating the 49408 × 64 token embedding costs a moment: once for the suite.
    static let shared: Result<Fixture, Error> = Result {
        let manifest = try #require(try DiffusionFixtures.json("openclip_text_manifest.json") as? [String: Any])
        let weights = try SeededWeights.make(section: manifest, origin: "openclip-text-tiny")
        let io = try CheckpointFile.open(DiffusionFixtures.url("openclip_text_io.safetensors").path)
        return Fixture(weights: weights, prompts: try #require(manifest["prompts"] as? [String]),
                       ids: try #require(manifest["ids"] as? [[Int]]),
                       lastLayerPrompts: try #require(manifest["last_layer_prompts"] as? [Int]),
                       penultimate: try io.tensor("penultimate"), last: try io.tensor("last"))
    }

    static let tokenizer: Result<CLIPTokenizer, Error> = Result {
        try CLIPTokenizer(openCLIPVocabularyFile: DiffusionFixtures.clipVocabulary())
    }

    /// Row `i` of a `[B, 77, D]` batch as `[1, 77, D]`.
    static func row(_ t: Tensor, _ i: Int) -> Tensor { slice(t, axis: 0, start: i, end: i + 1) }

    /// `TextEncode` on one prompt with `clip`, as a graph runs it.
    static func textEncode(_ clip: CLIPValue, _ prompt: String) throws -> Tensor {
        let out = try TextEncode().run(NodeInputs(["clip": .object(clip), "text": .string(prompt)]),
                                       context: TestNodeContext(nodeType: "TextEncode"))
        guard case .object(let c)? = out.values["conditioning"], let conditioning = c as? Conditioning else {
            throw DiffusionFixtures.FixtureError.malformed("TextEncode gave no Conditioning")
        }
        return conditioning.embeddings
    }

    /// Worst norm-relative error (max|Δ| / max|ref|) of `TextEncode` over the fixture prompts `indices` against
    /// `expected`: the penultimate outputs (one row per fixture prompt) or, with `last`, the 'last' outputs (one row
    /// per entry of `lastLayerPrompts`).
    static func worstError(_ clip: CLIPValue, _ f: Fixture, prompts indices: [Int], last: Bool = false) throws -> Float {
        var worst: Float = 0
        let expected = last ? f.last : f.penultimate
        for (n, i) in indices.enumerated() {
            let row = last ? n : i
            let out = try textEncode(clip, f.prompts[i])
            let want = Self.row(expected, row)
            #expect(out.shape == want.shape)
            worst = max(worst, normRelativeError(out.scalars, want.scalars))
        }
        return worst
    }

    static func message(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch {
            return (error as? DiffusionError)?.errorDescription ?? "not a DiffusionError: \(error)"
        }
    }

    // MARK: - Tokenizer

    @Test func tokenIDsMatchOpenCLIPTokenize() throws {
        let tok = try Self.tokenizer.get()
        let root = try #require(try DiffusionFixtures.json("openclip_text_tokens.json") as? [String: Any])
        let length = try #require(root["context_length"] as? Int)
        let cases = try #require(root["cases"] as? [[String: Any]])
        #expect(cases.count >= 270)
        var mismatches: [String] = [], documented = 0
        for c in cases {
            let prompt = try #require(c["prompt"] as? String)
            // Where the port's partial ftfy is known to differ, the fixture gives the ids the port must produce.
            let portIDs = c["port_ids"] as? [Int]
            if portIDs != nil { documented += 1 }
            var expected = try #require(portIDs ?? (c["ids"] as? [Int]))
            expected += repeatElement(0, count: length - expected.count)
            let ids = tok.encode(prompt, maxLength: length)
            if ids != expected {
                mismatches.append("\(prompt.debugDescription): got \(ids.prefix(24)) want \(expected.prefix(24))")
            }
        }
        print("open_clip.tokenize: \(cases.count - documented) of \(cases.count) prompts id for id, "
              + "\(documented) with the documented ftfy/HTML differences, \(mismatches.count) mismatches")
        #expect(documented <= 3)
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(cases.count) prompts differ:\n\(mismatches.prefix(8).joined(separator: "\n"))")
    }

    @Test func openCLIPSpecialsAndZeroPadding() throws {
        let tok = try Self.tokenizer.get()
        #expect(tok.textRules == .openCLIP)
        #expect(tok.vocabularySize == 49408 && tok.startOfTextID == 49406 && tok.endOfTextID == 49407 && tok.padID == 0)
        #expect(tok.token(for: 49406) == "<start_of_text>" && tok.token(for: 49407) == "<end_of_text>")
        #expect(tok.encode("a cat") == [49406, 320, 2368, 49407] + [Int](repeating: 0, count: 73))
        #expect(tok.encode("") == [49406, 49407] + [Int](repeating: 0, count: 75))
        let long = tok.encode(String(repeating: "flower ", count: 100))
        #expect(long.count == 77 && long.first == 49406 && long.last == 49407 && !long.contains(0))
        // Specials are matched where a piece starts only; transformers' strings are plain text to open_clip.
        #expect(tok.tokenize("<start_of_text>") == [49406])
        #expect(!tok.tokenize("!<start_of_text>").contains(49406))
        #expect(!tok.tokenize("<|startoftext|>").contains(49406))
        #expect(tok.decode(Array(tok.encode("A  Cat").prefix(4))) == "<start_of_text>a cat <end_of_text>")

        // The transformers tokenizer on the same file is unchanged: EOS padding, its own specials.
        let transformers = try CLIPTokenizer(vocabularyFile: DiffusionFixtures.clipVocabulary())
        #expect(transformers.textRules == .transformers && transformers.padID == 49407)
        #expect(transformers.token(for: 49406) == "<|startoftext|>")
        #expect(transformers.tokenize("<|startoftext|>") == [49406])
        #expect(!transformers.tokenize("<start_of_text>").contains(49406))
    }

    // MARK: - Encoder

    @Test func encoderMatchesFrozenOpenCLIPEmbedderThroughTextEncode() throws {
        let f = try Self.shared.get()
        let tok = try Self.tokenizer.get()
        let clip = try CLIPValue.openCLIPText(weights: f.weights, tokenizer: tok)
        #expect(clip.config == CLIPTextConfig(vocabSize: 49408, hiddenSize: 64, intermediateSize: 256, numHiddenLayers: 2,
                                              numAttentionHeads: 1, maxPositionEmbeddings: 77, hiddenAct: "gelu",
                                              layerNormEps: 1e-5, projectionDim: 32, bosTokenId: 49406, eosTokenId: 49407,
                                              padTokenId: 0))
        #expect(try CLIPTextConfig.openCLIPText(from: f.weights) == clip.config)
        for (prompt, ids) in zip(f.prompts, f.ids) { #expect(tok.encode(prompt) == ids, "\(prompt.debugDescription)") }
        let worst = try Self.worstError(clip, f, prompts: Array(f.prompts.indices))
        print("OpenCLIP text (penultimate + ln_final) through TextEncode: max |Δ| / max |ref| \(worst) over \(f.prompts.count) prompts")
        #expect(worst <= 1e-4)
    }

    @Test func lastLayerRunsEveryBlock() throws {
        let f = try Self.shared.get()
        let clip = try CLIPValue.openCLIPText(weights: f.weights, tokenizer: try Self.tokenizer.get(), layer: .last)
        #expect(clip.config.numHiddenLayers == 3)
        let worst = try Self.worstError(clip, f, prompts: f.lastLayerPrompts, last: true)
        print("OpenCLIP text (last + ln_final): max |Δ| / max |ref| \(worst)")
        #expect(worst <= 1e-4)
    }

    /// The last block's tensors are not in the value (nor `visual.*`, `text_projection`, `logit_scale`), so nothing
    /// downstream can read them: replaced by NaNs and wrong shapes they change nothing, while `.last` trips on them.
    @Test func penultimateNeverReadsTheLastBlock() throws {
        let f = try Self.shared.get()
        let tok = try Self.tokenizer.get()
        var spoiled = f.weights
        for key in f.weights.keys where key.hasPrefix("transformer.resblocks.2.") {
            let shape = try #require(f.weights.shape(of: key))
            spoiled[key] = key.hasSuffix("mlp.c_proj.weight") ? Tensor(zeros: [1]) : Tensor(repeating: .nan, shape: shape)
        }
        let clip = try CLIPValue.openCLIPText(weights: spoiled, tokenizer: tok)
        #expect(clip.config.numHiddenLayers == 2)
        #expect(!clip.weights.keys.contains { $0.contains("layers.2.") })
        #expect(clip.weights.keys.allSatisfy { $0.hasPrefix("text_model.") })
        #expect(clip.weights.count == 4 + 2 * 16)
        let worst = try Self.worstError(clip, f, prompts: [0])
        #expect(worst <= 1e-4)

        let error = Self.message { _ = try CLIPValue.openCLIPText(weights: spoiled, tokenizer: tok, layer: .last) }
        #expect(error?.contains("transformer.resblocks.2.mlp.c_proj.weight") == true, "\(error ?? "no error")")
    }

    // MARK: - Files

    /// The published `open_clip_pytorch_model.bin` layout: a torch zip state dict of the whole CLIP (float32, and
    /// float16 to cut q/k/v from converted rows), loaded lazily through `Weights.load`.
    @Test func loadsATorchPickleInOpenCLIPLayout() throws {
        let f = try Self.shared.get()
        let tok = try Self.tokenizer.get()
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(f.weights.contains("visual.conv1.weight") && f.weights.shape(of: "logit_scale") == [])

        let path = dir.appendingPathComponent("open_clip_pytorch_model.bin").path
        try TorchStateDict.write(f.weights, half: false, to: URL(fileURLWithPath: path))
        let file = try CheckpointFile.open(path)
        let loaded = try Weights.stateDict(from: file)
        #expect(loaded.keys.contains("visual.class_embedding"))
        let clip = try CLIPValue.openCLIPText(weights: loaded, tokenizer: tok)
        #expect(file.readCounts.isEmpty, "building the value reads no tensor: \(file.readCounts.keys.sorted())")
        let worst = try Self.worstError(clip, f, prompts: [0, 3])
        print("OpenCLIP text from a torch .bin: max |Δ| / max |ref| \(worst)")
        #expect(worst <= 1e-4)
        // Encoding read the embeddings, ln_final and blocks 0 and 1 (the fused projections by rows), nothing else.
        let read = Set(file.readCounts.keys)
        #expect(read.contains("transformer.resblocks.1.attn.in_proj_weight") && read.contains("ln_final.weight"))
        #expect(read.allSatisfy { !$0.hasPrefix("transformer.resblocks.2.") && !$0.hasPrefix("visual.") })
        #expect(!read.contains("text_projection") && !read.contains("logit_scale"))

        // float16: the file's values are the rounded ones; the in-memory tower rounded alike must give the same.
        let halfPath = dir.appendingPathComponent("open_clip_half.bin").path
        try TorchStateDict.write(f.weights, half: true, to: URL(fileURLWithPath: halfPath))
        var rounded = Weights(origin: "rounded")
        for key in f.weights.keys {
            let t = try f.weights.tensor(key)
            rounded[key] = Tensor(shape: t.shape, data: t.scalars.map { Float(Float16($0)) })
        }
        let fromHalf = try Self.textEncode(try CLIPValue.openCLIPText(weights: try Weights.load(halfPath), tokenizer: tok), f.prompts[2])
        let fromRounded = try Self.textEncode(try CLIPValue.openCLIPText(weights: rounded, tokenizer: tok), f.prompts[2])
        #expect(fromHalf.scalars == fromRounded.scalars)
    }

    /// open_clip's ViT-H-14 CLIP (the published file's every name and shape, from open_clip itself on the meta
    /// device) as a sparse float16 safetensors file: it loads with ViT-H-14's text sizes, penultimate keeps blocks
    /// 0…22, and nothing needs the data (the file holds none).
    @Test func vitH14LayoutGivesItsTextSizes() throws {
        let manifest = try #require(try DiffusionFixtures.json("openclip_text_manifest.json") as? [String: Any])
        let vitH = try #require(manifest["vit_h_14"] as? [String: Any])
        let rows = try #require(vitH["shapes"] as? [[Any]])
        #expect(rows.count == 686)
        var header = "{", offset = 0
        for (i, row) in rows.enumerated() {
            let name = try #require(row[0] as? String), shape = try #require(row[1] as? [Int])
            let bytes = 2 * shape.reduce(1, *)
            header += (i == 0 ? "" : ",") + "\"\(name)\":{\"dtype\":\"F16\",\"shape\":\(shape),\"data_offsets\":[\(offset),\(offset + bytes)]}"
            offset += bytes
        }
        header += "}"
        while (header.utf8.count + 8) % 8 != 0 { header += " " }
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("vit-h-14.safetensors")
        var file = Data(count: 8)
        let headerLength = UInt64(header.utf8.count)
        for k in 0..<8 { file[k] = UInt8(truncatingIfNeeded: headerLength >> (8 * UInt64(k))) }
        file.append(Data(header.utf8))
        try file.write(to: url)
        let handle = try FileHandle(forWritingTo: url)
        try handle.truncate(atOffset: UInt64(8 + header.utf8.count + offset))
        try handle.close()

        let weights = try Weights.load(url.path)
        let clip = try CLIPValue.openCLIPText(weights: weights, tokenizer: try Self.tokenizer.get())
        #expect(clip.config == CLIPTextConfig(vocabSize: 49408, hiddenSize: 1024, intermediateSize: 4096, numHiddenLayers: 23,
                                              numAttentionHeads: 16, maxPositionEmbeddings: 77, hiddenAct: "gelu",
                                              layerNormEps: 1e-5, projectionDim: 1024, bosTokenId: 49406, eosTokenId: 49407,
                                              padTokenId: 0))
        #expect(clip.weights.count == 4 + 23 * 16)
        #expect(clip.weights.shape(of: "text_model.encoder.layers.22.self_attn.v_proj.weight") == [1024, 1024])
        #expect(clip.weights.shape(of: "text_model.encoder.layers.22.self_attn.v_proj.bias") == [1024])
        #expect(!clip.weights.contains("text_model.encoder.layers.23.mlp.fc1.weight"))
        #expect(try CLIPValue.openCLIPText(weights: weights, tokenizer: try Self.tokenizer.get(), layer: .last).config.numHiddenLayers == 24)
    }

    /// An SD2 single file keeps the same tower under `cond_stage_model.model.`, beside the UNet and VAE.
    @Test func findsTheTowerInsideAnSD2SingleFile() throws {
        let f = try Self.shared.get()
        var sd2 = Weights(origin: "sd2.ckpt").adding(f.weights, prefix: "cond_stage_model.model.")
        sd2["model.diffusion_model.input_blocks.0.0.weight"] = Tensor(zeros: [4, 4, 3, 3])
        sd2["first_stage_model.encoder.conv_in.weight"] = Tensor(zeros: [8, 3, 3, 3])
        let clip = try CLIPValue.openCLIPText(weights: sd2, tokenizer: try Self.tokenizer.get())
        #expect(clip.weights.origin.contains("cond_stage_model.model."))
        #expect(try Self.worstError(clip, f, prompts: [1]) <= 1e-4)
    }

    @Test func wrongFilesFailSayingWhatWasFoundAndExpected() throws {
        let f = try Self.shared.get()
        let tok = try Self.tokenizer.get()
        func failure(_ weights: Weights, tokenizer: CLIPTokenizer? = nil) -> String {
            Self.message { _ = try CLIPValue.openCLIPText(weights: weights, tokenizer: tokenizer ?? tok) } ?? "no error"
        }
        // A transformers CLIPTextModel (SD1.5's text encoder layout).
        let transformers = try Weights.load(DiffusionFixtures.url("clip_tiny.safetensors").path)
        let t = failure(transformers)
        #expect(t.contains("transformers CLIPTextModel") && t.contains("LoadCLIP") && t.contains("expected an open_clip text tower"), "\(t)")
        // A VAE / UNet.
        let vae = failure(Weights(["encoder.conv_in.weight": Tensor(zeros: [8, 3, 3, 3]), "decoder.conv_out.bias": Tensor(zeros: [3])], origin: "vae.safetensors"))
        #expect(vae.contains("vae.safetensors") && vae.contains("2 tensors such as") && vae.contains("expected an open_clip text tower"), "\(vae)")
        print("not an open_clip text tower:\n  \(t)\n  \(vae)")
        // open_clip's vision tower alone.
        let vision = failure(Weights(origin: "visual-only").adding(f.weights.scoped("visual."), prefix: "visual."))
        #expect(vision.contains("vision tower but no text tower"), "\(vision)")
        // A tokenizer with transformers' rules pads with EOS, which the embedder never does.
        let rules = failure(f.weights, tokenizer: try CLIPTokenizer(vocabularyFile: DiffusionFixtures.clipVocabulary()))
        #expect(rules.contains("openCLIPVocabularyFile"), "\(rules)")
        // A block with a tensor missing, a fused projection of the wrong size, two towers, too few blocks.
        var missing = f.weights
        missing["transformer.resblocks.1.mlp.c_fc.bias"] = nil
        #expect(failure(missing).contains("transformer.resblocks.1.mlp.c_fc.bias"))
        var fused = f.weights
        fused["transformer.resblocks.0.attn.in_proj_weight"] = Tensor(zeros: [190, 64])
        let shape = failure(fused)
        #expect(shape.contains("transformer.resblocks.0.attn.in_proj_weight") && shape.contains("[192, 64]"), "\(shape)")
        let two = failure(f.weights.adding(f.weights, prefix: "cond_stage_model.model."))
        #expect(two.contains("2 open_clip text towers"), "\(two)")
        var oneBlock = Weights(origin: "one-block")
        for key in f.weights.keys where !key.hasPrefix("transformer.resblocks.1.") && !key.hasPrefix("transformer.resblocks.2.") {
            oneBlock[key] = try f.weights.tensor(key)
        }
        #expect(failure(oneBlock).contains("at least 2 residual blocks"))
        #expect((try? CLIPValue.openCLIPText(weights: oneBlock, tokenizer: tok, layer: .last))?.config.numHiddenLayers == 1)
    }

    /// `Weights.splittingRows`: views of in-memory tensors, row ranges of a file's (converted only for those rows).
    @Test func fusedProjectionSplitsByRows() throws {
        let fused = Tensor(shape: [6, 2], data: (0..<12).map(Float.init))
        let split = try Weights(["in": fused, "other": Tensor(zeros: [1])]).splittingRows(of: "in", into: ["q", "k", "v"])
        #expect(!split.contains("in") && split.contains("other"))
        #expect(split.shape(of: "k") == [2, 2])
        #expect(try split.tensor("k").scalars == [4, 5, 6, 7])
        #expect(throws: WeightsError.self) { try Weights(["in": Tensor(zeros: [5, 2])]).splittingRows(of: "in", into: ["q", "k", "v"]) }
        #expect(throws: WeightsError.self) { try Weights().splittingRows(of: "in", into: ["q", "k", "v"]) }

        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("fused.bin").path
        try TorchStateDict.write(Weights(["in": fused]), half: true, to: URL(fileURLWithPath: path))
        let fromFile = try Weights.load(path).splittingRows(of: "in", into: ["q", "k", "v"])
        #expect(try fromFile.tensor("q").scalars == [0, 1, 2, 3] && fromFile.tensor("v").scalars == [8, 9, 10, 11])
    }
}
