import DiffusionPlugin
import Foundation
import LapseGraph
import LapseTensor
import LapseTestSupport
import LapseWeights
import Synchronization
import StreamingT2VPlugin
import Testing

/// A tiny MS-Vid2Vid-XL set in the refiner's three file formats: the seeded generator of
/// Tools/fixtures/vid2vid_unet.py (modelscope names, safetensors), a seeded 1024-wide open_clip text tower in
/// open_clip's layout (the generator's context width is fixed at 1024; fp16 safetensors), and the torch-pickle LDM
/// checkpoint of Tools/fixtures/sd21_vae.py (a tiny SD2.1-style VAE, 2× downsampling).
enum TinyRefiner {
    struct Files: Sendable {
        let unet: String
        let config: String
        let textEncoder: String
        let vae: String
        let vocab: String
    }

    private static let made = Mutex<Files?>(nil)

    static func diffusionFixture(_ name: String) -> URL {
        StreamingT2VFixtures.repoRoot.appendingPathComponent("Tests/DiffusionTests/Fixtures/\(name)")
    }

    static func files() throws -> Files {
        try made.withLock { cached in
            if let cached { return cached }
            let dir = try TestSupport.makeTemporaryDirectory()
            let manifest = try #require(try JSONSerialization.jsonObject(
                with: Data(contentsOf: diffusionFixture("vid2vid_unet_manifest.json"))) as? [String: Any])
            let unet = dir.appendingPathComponent("vid2vid_tiny.safetensors").path
            try SafeTensors.write(try SeededWeights.make(section: manifest, origin: "vid2vid-tiny"), to: unet)
            // The tiny generator's head width (16) is the one size its weights cannot tell.
            let config = dir.appendingPathComponent("vid2vid_tiny.json").path
            try JSONSerialization.data(withJSONObject: try #require(manifest["config"])).write(to: URL(fileURLWithPath: config))
            let text = dir.appendingPathComponent("open_clip_tiny.safetensors").path
            try SafeTensors.write(try openCLIPTower(), dtype: .f16, to: text)
            let vocab = StreamingT2VFixtures.repoRoot.appendingPathComponent("models/clip/bpe_simple_vocab_16e6.txt.gz").path
            guard FileManager.default.fileExists(atPath: vocab) else {
                throw TestAssetError(message: "\(vocab) is missing: run scripts/fetch-assets.sh")
            }
            let files = Files(unet: unet, config: config, textEncoder: text, vae: diffusionFixture("sd21_vae_tiny.ckpt").path, vocab: vocab)
            cached = files
            return files
        }
    }

    /// open_clip's text tower at width 1024 (16 heads), 2 blocks with a 128-wide MLP, the real 49408-token
    /// vocabulary and 77 positions, plus a `visual.` tensor and `logit_scale` as the published file has.
    static func openCLIPTower() throws -> Weights {
        let d = 1024, mlp = 128
        var rows: [[Any]] = [["token_embedding.weight", [49408, d], 0.02, 0.0], ["positional_embedding", [77, d], 0.01, 0.0]]
        for i in 0..<2 {
            let p = "transformer.resblocks.\(i)."
            rows += [[p + "ln_1.weight", [d], 0.2, 1.0], [p + "ln_1.bias", [d], 0.1, 0.0],
                     [p + "attn.in_proj_weight", [3 * d, d], 0.03, 0.0], [p + "attn.in_proj_bias", [3 * d], 0.1, 0.0],
                     [p + "attn.out_proj.weight", [d, d], 0.03, 0.0], [p + "attn.out_proj.bias", [d], 0.1, 0.0],
                     [p + "ln_2.weight", [d], 0.2, 1.0], [p + "ln_2.bias", [d], 0.1, 0.0],
                     [p + "mlp.c_fc.weight", [mlp, d], 0.03, 0.0], [p + "mlp.c_fc.bias", [mlp], 0.1, 0.0],
                     [p + "mlp.c_proj.weight", [d, mlp], 0.09, 0.0], [p + "mlp.c_proj.bias", [d], 0.1, 0.0]]
        }
        rows += [["ln_final.weight", [d], 0.2, 1.0], ["ln_final.bias", [d], 0.1, 0.0], ["text_projection", [d, 16], 0.03, 0.0],
                 ["logit_scale", [1], 0.1, 4.6], ["visual.proj", [16, 16], 0.1, 0.0]]
        return try SeededWeights.make(rows: rows, seed: 77, origin: "open_clip-tiny")
    }

    /// LoadVid2VidModel's outputs for the tiny files (`text_encoder`/`vae` empty when not wanted).
    static func load(text: Bool = true, vae: Bool = true) throws -> NodeOutputs {
        let f = try files()
        return try LoadVid2VidModel().run(NodeInputs([
            "unet": .string(f.unet), "text_encoder": .string(text ? f.textEncoder : ""), "vae": .string(vae ? f.vae : ""),
            "vocab": .string(f.vocab), "config": .string(f.config),
        ]), context: TestNodeContext())
    }

    /// `values` with the ports of `links` (port: output) linked to the outputs of `loaded` (graph node "load"), as the
    /// executor hands them over: the value, or for an output left empty the reason, which fails the reader.
    static func inputs(_ values: [String: Value], linking links: [String: String], to loaded: NodeOutputs) -> NodeInputs {
        var values = values
        var empty: [String: EmptyOutput] = [:]
        for (port, output) in links {
            if let value = loaded.values[output] {
                values[port] = value
            } else {
                empty[port] = EmptyOutput(nodeID: "load", output: output, reason: loaded.emptyReasons[output])
            }
        }
        return NodeInputs(values, empty: empty)
    }

    /// `TextEncode` with the `clip` output of `loaded`.
    static func encode(_ loaded: NodeOutputs, _ text: String) throws -> Value {
        try TextEncode().run(inputs(["text": .string(text)], linking: ["clip": "clip"], to: loaded),
                             context: TestNodeContext()).values["conditioning"]!
    }

    /// `count` frames of `width`×`height`, smooth and different from frame to frame, RGB in [0, 1].
    static func video(count: Int, width: Int, height: Int) -> Frames {
        Frames(frames: (0..<count).map { i in
            var values = [Float](repeating: 0, count: 3 * height * width)
            for c in 0..<3 {
                for y in 0..<height {
                    for x in 0..<width {
                        values[(c * height + y) * width + x] = 0.5 + 0.4 * sin(Float(x + 2 * y + 3 * c + i) * 0.3)
                    }
                }
            }
            return Frame(image: Tensor(shape: [3, height, width], data: values), index: i, time: Double(i) / 8)
        }, info: FrameStreamInfo(width: width, height: height, frameRate: (8, 1), frameCount: count))
    }

    static func refineInputs(_ loaded: NodeOutputs, frames: Frames, params: [String: Value] = [:]) throws -> NodeInputs {
        var values: [String: Value] = [
            "frames": .object(frames), "positive": try encode(loaded, "a tiny red fox, "), "negative": try encode(loaded, ""),
        ]
        for spec in RefineVideo.schema.inputs where values[spec.name] == nil { values[spec.name] = spec.defaultValue }
        // A canvas the tiny UNet (3 levels) and the 2× VAE take: latent 20×14 (14 → 8 → 5).
        values["width"] = .int(40)
        values["height"] = .int(28)
        values["steps"] = .int(3)
        values["chunk"] = .int(4)
        values["overlap"] = .int(2)
        for (k, v) in params { values[k] = v }
        return inputs(values, linking: ["unet": "unet", "vae": "vae"], to: loaded)
    }

    static func frames(_ outputs: NodeOutputs) throws -> [Frame] {
        guard case .object(let object)? = outputs.values["frames"], let frames = object as? Frames else {
            throw NodeError.failed("no frames output")
        }
        return try frames.collect()
    }
}

@Suite("StreamingT2V refiner nodes", .serialized)
struct RefinerNodeTests {
    @Test("LoadVid2VidModel reads the three files and reports their sizes")
    func loadsTheThreeFiles() throws {
        let loaded = try TinyRefiner.load()
        guard case .object(let u)? = loaded.values["unet"], let unet = u as? UNetValue else { Issue.record("no unet"); return }
        #expect(unet.vid2vid?.dim == 32)
        #expect(unet.kindDescription == "MS-Vid2Vid-XL UNet")
        guard case .object(let c)? = loaded.values["clip"], let clip = c as? CLIPValue else { Issue.record("no clip"); return }
        // Penultimate layer: one of the two blocks runs; the width and MLP come from the weights.
        #expect(clip.config.numHiddenLayers == 1 && clip.config.hiddenSize == 1024 && clip.config.intermediateSize == 128)
        let conditioning = try TinyRefiner.encode(loaded, "a tiny red fox, ")
        guard case .object(let e) = conditioning, let embeddings = (e as? Conditioning)?.embeddings else { Issue.record("no conditioning"); return }
        #expect(embeddings.shape == [1, 77, 1024])
        guard case .object(let v)? = loaded.values["vae"], let vae = v as? VAEValue else { Issue.record("no vae"); return }
        #expect(vae.downsamplingFactor == 2 && vae.config.scalingFactor == 0.18215)
    }

    @Test("without text_encoder and vae, only the UNet loads; reading the others names the param to set")
    func optionalComponents() throws {
        let loaded = try TinyRefiner.load(text: false, vae: false)
        #expect(loaded.values["clip"] == nil && loaded.values["vae"] == nil)
        let message = MediaTestSupport.errorMessage { _ = try TinyRefiner.encode(loaded, "x") } ?? ""
        #expect(message.hasPrefix(#"input "clip": node "load" left its output "clip" empty: "#), "\(message)")
        #expect(message.contains("text_encoder") && message.contains("open_clip_pytorch_model.bin"), "\(message)")
        let inputs = try TinyRefiner.refineInputs(try TinyRefiner.load(vae: false), frames: TinyRefiner.video(count: 4, width: 8, height: 8))
        let refineMessage = MediaTestSupport.errorMessage { _ = try RefineVideo().run(inputs, context: TestNodeContext()) } ?? ""
        #expect(refineMessage.contains("vae") && refineMessage.contains("v2-1_512-ema-pruned.ckpt"), "\(refineMessage)")
    }

    @Test("files given to the wrong param are named for what they are")
    func swappedFiles() throws {
        let f = try TinyRefiner.files()
        func message(unet: String, text: String = "", vae: String = "") -> String {
            MediaTestSupport.errorMessage {
                _ = try LoadVid2VidModel().run(NodeInputs(["unet": .string(unet), "text_encoder": .string(text), "vae": .string(vae),
                                                           "vocab": .string(f.vocab), "config": .string(f.config)]),
                                          context: TestNodeContext())
            } ?? ""
        }
        let vaeAsUNet = message(unet: f.vae)
        #expect(vaeAsUNet.contains("`unet`") && vaeAsUNet.contains("give it to `vae`"), "\(vaeAsUNet)")
        let unetAsText = message(unet: f.unet, text: f.unet)
        #expect(unetAsText.contains("`text_encoder`") && unetAsText.contains("give it to `unet`"), "\(unetAsText)")
        let textAsVAE = message(unet: f.unet, vae: f.textEncoder)
        #expect(textAsVAE.contains("`vae`") && textAsVAE.contains("give it to `text_encoder`"), "\(textAsVAE)")
        // A file of none of the three kinds (an SD UNet's names) says what it holds.
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let other = dir.appendingPathComponent("other.safetensors").path
        try SafeTensors.write([(name: "down_blocks.0.resnets.0.conv1.weight", tensor: Tensor(zeros: [4, 4, 3, 3]))], to: other)
        let foreign = message(unet: other)
        #expect(foreign.contains("none of the three files") && foreign.contains("down_blocks.0.resnets.0.conv1.weight"), "\(foreign)")
    }

    @Test("PredictNoise through a graph reproduces the original Vid2VidSDUNet's output")
    func predictNoiseGraph() throws {
        let f = try TinyRefiner.files()
        let io = TinyRefiner.diffusionFixture("vid2vid_unet_io.safetensors").path
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("v.safetensors").path
        let t = try CheckpointFile.open(io).tensor("t").scalars[0]
        let graph = """
        {"version": 1, "nodes": {
          "v2v": {"type": "LoadVid2VidModel", "params": {"unet": \(JSONValue.quote(f.unet)), "config": \(JSONValue.quote(f.config))}},
          "x": {"type": "LoadLatent", "params": {"path": \(JSONValue.quote(io)), "key": "x"}},
          "y": {"type": "LoadConditioning", "params": {"path": \(JSONValue.quote(io)), "key": "y"}},
          "v": {"type": "PredictNoise", "inputs": {"unet": "v2v.unet", "positive": "y", "latent": "x"}, "params": {"timestep": \(t)}},
          "save": {"type": "SaveLatent", "inputs": {"latent": "v"}, "params": {"path": \(JSONValue.quote(out))}}
        }}
        """
        try MediaTestSupport.runGraph(graph, registry: try StreamingT2VGraphTests.registry())
        let got = try CheckpointFile.open(out).tensor("latent")
        let expected = try CheckpointFile.open(io).tensor("out")
        #expect(got.shape == expected.shape)
        let error = StreamingT2VFixtures.relativeError(got, expected)
        print("PredictNoise (MS-Vid2Vid-XL) vs Vid2VidSDUNet: relative \(error)")
        #expect(error <= 1e-4)
    }

    private func placement(_ g: RefineVideo.Geometry) -> [Int] { [g.contentWidth, g.contentHeight, g.left, g.top] }

    @Test("the canvas follows the original's resize_to_fit and pad_to_fit")
    func geometry() throws {
        // 256² (StreamingT2V's frames) → 720² centred on 1280×720.
        let square = try RefineVideo.Geometry(sourceWidth: 256, sourceHeight: 256, width: 1280, height: 720)
        #expect(placement(square) == [720, 720, 280, 0])
        // Wider than the canvas: width limits, the height is truncated as Python's int() does (1280·405/720 = 720).
        let wide = try RefineVideo.Geometry(sourceWidth: 720, sourceHeight: 405, width: 1280, height: 720)
        #expect(placement(wide) == [1280, 720, 0, 0])
        let wider = try RefineVideo.Geometry(sourceWidth: 1000, sourceHeight: 400, width: 1280, height: 720)
        #expect(placement(wider) == [1280, 512, 0, 104])
        // An odd margin: the extra column goes right (the canvas stays width × height).
        let odd = try RefineVideo.Geometry(sourceWidth: 3, sourceHeight: 4, width: 40, height: 28)
        #expect(placement(odd) == [21, 28, 9, 0])
        let canvas = odd.canvas(Tensor(repeating: 1, shape: [3, 4, 3]))
        #expect(canvas.shape == [3, 28, 40])
        let s = canvas.scalars
        #expect(s[9] > 0.99 && s[8] == 0 && s[29] > 0.99 && s[30] == 0)
    }

    @Test("RefineVideo refines any length ≥ chunk, crops the padding, and is deterministic per seed")
    func refineRuns() throws {
        let loaded = try TinyRefiner.load()
        let video = TinyRefiner.video(count: 7, width: 8, height: 8)
        let first = try TinyRefiner.frames(RefineVideo().run(try TinyRefiner.refineInputs(loaded, frames: video), context: TestNodeContext()))
        #expect(first.count == 7)
        #expect(first.allSatisfy { $0.width == 28 && $0.height == 28 && $0.channels == 3 })
        #expect(first.allSatisfy { $0.image.scalars.allSatisfy { $0 >= 0 && $0 <= 1 } })
        let again = try TinyRefiner.frames(RefineVideo().run(try TinyRefiner.refineInputs(loaded, frames: video), context: TestNodeContext()))
        for (a, b) in zip(first, again) { #expect(StreamingT2VFixtures.maxAbsError(a.image, b.image) <= 1e-4) }
        let reseeded = try TinyRefiner.frames(RefineVideo().run(
            try TinyRefiner.refineInputs(loaded, frames: video, params: ["seed": .int(1)]), context: TestNodeContext()))
        #expect(zip(first, reseeded).contains { StreamingT2VFixtures.maxAbsError($0.image, $1.image) > 1e-3 })
        let padded = try TinyRefiner.frames(RefineVideo().run(
            try TinyRefiner.refineInputs(loaded, frames: video, params: ["crop_padding": .bool(false)]), context: TestNodeContext()))
        #expect(padded.allSatisfy { $0.width == 40 && $0.height == 28 })
    }

    @Test("bad inputs: too few frames, sizes the UNet cannot take, a UNet of another kind")
    func badInputs() throws {
        let loaded = try TinyRefiner.load()
        func message(_ frames: Frames, _ params: [String: Value] = [:], unet: Value? = nil) throws -> String {
            var inputs = try TinyRefiner.refineInputs(loaded, frames: frames, params: params).values
            if let unet { inputs["unet"] = unet }
            return MediaTestSupport.errorMessage { _ = try RefineVideo().run(NodeInputs(inputs), context: TestNodeContext()) } ?? ""
        }
        let few = try message(TinyRefiner.video(count: 3, width: 8, height: 8))
        #expect(few.contains("3 frames") && few.contains("chunk = 4"), "\(few)")
        // Latent 16 rows: 16 → 9, odd above the lowest level.
        let size = try message(TinyRefiner.video(count: 4, width: 8, height: 8), ["height": .int(32)])
        #expect(size.contains("40×32") && size.contains("even height"), "\(size)")
        let odd = try message(TinyRefiner.video(count: 4, width: 8, height: 8), ["width": .int(41)])
        #expect(odd.contains("width") && odd.contains("multiple of 2"), "\(odd)")
        let sd = UNetValue(config: .sd15, weights: Weights(origin: "sd"))
        let other = try message(TinyRefiner.video(count: 4, width: 8, height: 8), unet: .object(sd))
        #expect(other.contains("LoadVid2VidModel") && other.contains("image UNet"), "\(other)")
    }

    @Test("Sample refuses the MS-Vid2Vid-XL UNet by name")
    func sampleRefuses() throws {
        let loaded = try TinyRefiner.load(text: false, vae: false)
        var values: [String: Value] = [:]
        for spec in Sample.schema.inputs { values[spec.name] = spec.defaultValue }
        values["unet"] = loaded.values["unet"]!
        let message = MediaTestSupport.errorMessage { _ = try Sample().run(NodeInputs(values), context: TestNodeContext()) } ?? ""
        #expect(message.contains("RefineVideo"), "\(message)")
    }

    @Test("Text joins prefix, text and suffix; an input linked to an empty output fails its reader with the reason")
    func textAndUnavailable() throws {
        let out = try Text().run(NodeInputs(["text": .string("a fox"), "prefix": .string(""), "suffix": .string(", ")]), context: TestNodeContext())
        guard case .string(let s)? = out.values["text"] else { Issue.record("no text"); return }
        #expect(s == "a fox, ")
        let inputs = NodeInputs([:], empty: ["clip": EmptyOutput(nodeID: "load", output: "clip", reason: "set text_encoder")])
        #expect(throws: NodeError.self) { _ = try inputs.get("clip", .clip) }
        #expect((try? inputs.get("clip", .clip)) == nil)
        let message = MediaTestSupport.errorMessage { _ = try inputs.get("clip", .clip) } ?? ""
        #expect(message == #"input "clip": node "load" left its output "clip" empty: set text_encoder"#)
    }
}
