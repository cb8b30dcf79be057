import Foundation
import Testing
import LapseGraph
import LapseTensor
import LapseWeights
import LapseTestSupport
import DiffusionPlugin

/// The seeded tiny ModelScope UNet of Tools/fixtures/modelscope_unet3d.py: weights regenerated from the manifest
/// with TorchGenerator (bit-identical to the script's `torch.rand`), inputs and diffusers' outputs from
/// unet3d_io.safetensors. The pipeline's VAE and CLIP rows are magictime_e2e.py's (e2e_manifest.json).
enum UNet3DFixtures {
    static func manifest() throws -> [String: Any] {
        try #require(try DiffusionFixtures.json("unet3d_manifest.json") as? [String: Any])
    }

    static func section(_ name: String) throws -> [String: Any] { try #require(try manifest()[name] as? [String: Any]) }

    /// Seeded rows `[name, shape, scale, offset, …]` regenerated under their diffusers/transformers names.
    static func seeded(_ section: [String: Any], seed: Int? = nil) throws -> Weights {
        try SeededWeights.make(section: section, seed: seed)
    }

    static func configJSON(_ name: String) throws -> Data {
        try JSONSerialization.data(withJSONObject: try #require(try section(name)["config"]))
    }

    static func unetWeights() throws -> Weights { try seeded(try section("unet")) }

    static func model() throws -> UNet3DConditionModel {
        try UNet3DConditionModel(config: try UNet3DConditionConfig.decode(json: try configJSON("unet")), weights: try unetWeights())
    }

    nonisolated(unsafe) private static var ioCache: CheckpointFile?
    private static let lock = NSLock()

    static func io(_ name: String) throws -> Tensor {
        lock.lock()
        defer { lock.unlock() }
        if ioCache == nil { ioCache = try CheckpointFile.open(DiffusionFixtures.url("unet3d_io.safetensors").path) }
        return try ioCache!.tensor(name)
    }

    /// Which file formats `writeFolder` uses.
    enum Format {
        case safetensors, fp16Safetensors, bin, fp16Bin
    }

    /// A text-to-video-ms-1.7b-style diffusers folder of the tiny model set: model_index.json, unet/, vae/,
    /// text_encoder/ (each config.json + weights in `format`), scheduler/scheduler_config.json. No tokenizer/:
    /// the prompts use CLIP's vocabulary file, as the fixture script tokenizes them.
    static func writeFolder(format: Format) throws -> URL {
        let dir = try TestSupport.makeTemporaryDirectory().appendingPathComponent("text-to-video-tiny")
        let e2e = try #require(try DiffusionFixtures.json("e2e_manifest.json") as? [String: Any])
        let components: [(String, Data, Weights)] = [
            ("unet", try configJSON("unet"), try unetWeights()),
            ("vae", try configJSON("vae"), try seeded(try #require(e2e["vae"] as? [String: Any]))),
            ("text_encoder", try configJSON("text_encoder"), try seeded(try #require(e2e["clip"] as? [String: Any]))),
        ]
        for (name, config, weights) in components {
            let folder = dir.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try config.write(to: folder.appendingPathComponent("config.json"))
            let base = name == "text_encoder" ? (format == .bin || format == .fp16Bin ? "pytorch_model" : "model") : "diffusion_pytorch_model"
            switch format {
            case .safetensors:
                try SafeTensors.write(weights, to: folder.appendingPathComponent(base + ".safetensors").path)
            case .fp16Safetensors:
                try SafeTensors.write(weights, dtype: .f16, to: folder.appendingPathComponent(base + ".fp16.safetensors").path)
            case .bin:
                try TorchStateDict.write(weights, half: false, to: folder.appendingPathComponent(base + ".bin"))
            case .fp16Bin:
                try TorchStateDict.write(weights, half: true, to: folder.appendingPathComponent(base + ".fp16.bin"))
            }
        }
        let scheduler = dir.appendingPathComponent("scheduler")
        try FileManager.default.createDirectory(at: scheduler, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: try #require(try manifest()["scheduler"]))
            .write(to: scheduler.appendingPathComponent("scheduler_config.json"))
        let index: [String: Any] = ["_class_name": "TextToVideoSDPipeline", "unet": ["diffusers", "UNet3DConditionModel"],
                                    "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
                                    "scheduler": ["diffusers", "DDIMScheduler"], "tokenizer": ["transformers", "CLIPTokenizer"]]
        try JSONSerialization.data(withJSONObject: index).write(to: dir.appendingPathComponent("model_index.json"))
        return dir
    }

    static func load(_ folder: URL) throws -> NodeOutputs {
        try LoadCheckpoint().run(NodeInputs(["path": .string(folder.path), "config": .string(""),
                                             "vocab": .string(try DiffusionFixtures.clipVocabulary().path)]),
                                 context: TestNodeContext())
    }
}

/// A PyTorch zip state dict (`torch.save(state_dict)`) of float32 or float16 tensors, one storage per tensor, as
/// diffusers' `.bin` files are.
enum TorchStateDict {
    static func write(_ weights: Weights, half: Bool, to url: URL) throws {
        var p: [UInt8] = [0x80, 0x02]
        func str(_ s: String) { p += [0x58] + withUnsafeBytes(of: UInt32(s.utf8.count).littleEndian, Array.init) + Array(s.utf8) }
        func global(_ module: String, _ name: String) { p += [0x63] + Array("\(module)\n\(name)\n".utf8) }
        func int(_ v: Int) { p += [0x4A] + withUnsafeBytes(of: Int32(v).littleEndian, Array.init) }  // BININT
        func tuple(_ values: [Int]) { p += [0x28]; values.forEach(int); p += [0x74] }
        global("collections", "OrderedDict"); p += [0x29, 0x52, 0x28]  // OrderedDict(), MARK
        var entries: [(name: String, data: [UInt8])] = []
        for (index, key) in weights.keys.sorted().enumerated() {
            let tensor = try weights.tensor(key)
            let shape = tensor.shape
            var strides = [Int](repeating: 1, count: shape.count)
            for d in stride(from: shape.count - 2, through: 0, by: -1) { strides[d] = strides[d + 1] * shape[d + 1] }
            str(key)
            global("torch._utils", "_rebuild_tensor_v2")
            p += [0x28, 0x28]
            str("storage"); global("torch", half ? "HalfStorage" : "FloatStorage"); str("\(index)"); str("cpu"); int(tensor.count)
            p += [0x74, 0x51]  // TUPLE, BINPERSID
            int(0); tuple(shape); tuple(strides)
            p += [0x89]  // False
            global("collections", "OrderedDict"); p += [0x29, 0x52]
            p += [0x74, 0x52]  // TUPLE, REDUCE
            var data: [UInt8] = []
            for v in tensor.scalars {
                if half {
                    data += withUnsafeBytes(of: Float16(v).bitPattern.littleEndian, Array.init)
                } else {
                    data += withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init)
                }
            }
            entries.append(("archive/data/\(index)", data))
        }
        p += [0x75, 0x2E]  // SETITEMS, STOP
        let zip = StoredZip.archive([("archive/data.pkl", p), ("archive/byteorder", Array("little".utf8))] + entries)
        try Data(zip).write(to: url)
    }
}

/// Records the attn2 paths a hook saw.
final class PathLog: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [String] = []
    func add(_ path: String) { lock.lock(); seen.append(path); lock.unlock() }
    var paths: [String] { lock.lock(); defer { lock.unlock() }; return seen }
}

@Suite("ModelScope UNet3DConditionModel", .serialized)
struct UNet3DTests {
    /// ‖a − b‖ / ‖b‖, the relative error the UNet parity tests use.
    static func relative(_ a: Tensor, _ b: Tensor) -> Float { normRelativeError(a.scalars, b.scalars) }

    @Test("forward matches diffusers' UNet3DConditionModel")
    func forward() throws {
        let model = try UNet3DFixtures.model()
        let out = try model(try UNet3DFixtures.io("sample"), timestep: 481, context: try UNet3DFixtures.io("context"))
        let expected = try UNet3DFixtures.io("out")
        #expect(out.shape == expected.shape)
        let error = Self.relative(out, expected)
        print("UNet3D forward: relative error (max |Δ| / max |ref|) \(error), max abs \(maxAbsDiff(out, expected))")
        #expect(error <= 1e-4)
    }

    @Test("encoderFeatures gives diffusers' down_block_res_samples and mid output, with a tensor added after transformer_in")
    func encoderFeatures() throws {
        let model = try UNet3DFixtures.model()
        let features = try model.encoderFeatures(try UNet3DFixtures.io("cam_sample"), timestep: 250,
                                                 context: try UNet3DFixtures.io("cam_context"),
                                                 addAfterTransformerIn: try UNet3DFixtures.io("cam_add"))
        #expect(features.residuals.count == 6)
        var worst: Float = 0
        for (i, r) in features.residuals.enumerated() {
            let expected = try UNet3DFixtures.io("cam_res\(i)")
            #expect(r.shape == expected.shape, "residual \(i)")
            worst = max(worst, Self.relative(r, expected))
        }
        let mid = try UNet3DFixtures.io("cam_mid")
        worst = max(worst, Self.relative(features.mid, mid))
        print("UNet3D encoder features: max relative error \(worst)")
        #expect(worst <= 1e-4)
    }

    @Test("skip and mid hooks rewrite as diffusers' additional residuals do")
    func skipAndMidHooks() throws {
        let model = try UNet3DFixtures.model()
        let extra = try model.encoderFeatures(try UNet3DFixtures.io("extra_sample"), timestep: 90,
                                              context: try UNet3DFixtures.io("extra_context"))
        let hooks = UNetHooks(skips: { skips in zip(skips, extra.residuals).map { $0 + $1 } },
                              midOutput: { $0 + extra.mid })
        let out = try model(try UNet3DFixtures.io("sample"), timestep: 481, context: try UNet3DFixtures.io("context"), hooks: hooks)
        let error = Self.relative(out, try UNet3DFixtures.io("out_added"))
        print("UNet3D skip/mid hooks: max relative error \(error)")
        #expect(error <= 1e-4)
        // A hook that changes the skip list's shape is refused by name.
        let bad = UNetHooks(skips: { Array($0.dropLast()) })
        #expect(throws: DiffusionError.self) {
            _ = try model(try UNet3DFixtures.io("sample"), timestep: 481, context: try UNet3DFixtures.io("context"), hooks: bad)
        }
    }

    @Test("cross-attention hook sees every spatial attn2 by its diffusers path and may change the token count")
    func crossAttentionHook() throws {
        let model = try UNet3DFixtures.model()
        let manifest = try UNet3DFixtures.manifest()
        let paths = try #require(manifest["mixed_paths"] as? [String])
        let factors = try #require(manifest["mix_factors"] as? [Double])
        let table = Dictionary(uniqueKeysWithValues: zip(paths, factors.map(Float.init)))
        let log = PathLog()
        let hooks = UNetHooks(crossAttentionContext: { path, ctx in
            log.add(path)
            guard let factor = table[path] else { throw DiffusionError.badInput(component: "test", reason: "unexpected \(path)") }
            return slice(ctx, axis: 1, start: 0, end: 77) + factor * slice(ctx, axis: 1, start: 3, end: 80)
        })
        let out = try model(try UNet3DFixtures.io("sample"), timestep: 481, context: try UNet3DFixtures.io("context80"), hooks: hooks)
        #expect(Set(log.paths) == Set(paths) && log.paths.count == paths.count)
        let error = Self.relative(out, try UNet3DFixtures.io("out_mixed"))
        print("UNet3D attn2 hook: max relative error \(error)")
        #expect(error <= 1e-4)
    }

    @Test("LoadCheckpoint + TextEncode + EmptyLatentVideo + Sample (DDIM) + VAEDecode match TextToVideoSDPipeline")
    func pipeline() throws {
        let manifest = try UNet3DFixtures.manifest()
        let folder = try UNet3DFixtures.writeFolder(format: .safetensors)
        defer { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
        let ctx = TestNodeContext()
        let loaded = try UNet3DFixtures.load(folder)
        let unet = try NodeInputs(loaded.values).get("unet", .unet)
        #expect(unet.unet3D != nil && unet.config.blockOutChannels == [64, 128])
        let clip = try #require(loaded.values["clip"])
        func encode(_ text: String) throws -> Value {
            try #require(try TextEncode().run(NodeInputs(["clip": clip, "text": .string(text)]), context: ctx).values["conditioning"])
        }
        let positive = try encode(try #require(manifest["prompt"] as? String))
        let negative = try encode(try #require(manifest["negative"] as? String))
        let embeds = try UNet3DFixtures.io("pipe_embeds")
        let pos = try NodeInputs(["c": positive]).get("c", .conditioning).embeddings
        #expect(Self.relative(pos, slice(embeds, axis: 0, start: 0, end: 1)) <= 1e-4)

        let size = try #require(manifest["size"] as? Int), frames = try #require(manifest["frames"] as? Int)
        let empty = try EmptyLatentVideo().run(NodeInputs(["width": .int(size), "height": .int(size), "frames": .int(frames),
                                                           "batch": .int(1)]), context: ctx)
        let latent = try #require(empty.values["latent"]), unetValue = try #require(loaded.values["unet"])
        let seed = try #require(manifest["seed"] as? Int), steps = try #require(manifest["steps"] as? Int)
        let guidance = try #require(manifest["guidance"] as? Double)
        let sampled = try Sample().run(NodeInputs([
            "unet": unetValue, "positive": positive, "negative": negative, "latent": latent,
            "seed": .int(seed), "steps": .int(steps), "guidance": .float(guidance), "scheduler": .string("ddim"), "eta": .float(0),
            "beta_schedule": .string("auto"), "scheduler_config": .string("auto"), "denoise": .float(1),
        ]), context: ctx)
        let latents = try NodeInputs(sampled.values).get("latent", .latent).tensor
        let latentError = maxAbsDiff(latents, try UNet3DFixtures.io("pipe_latents"))
        let vae = try #require(loaded.values["vae"]), sampledLatent = try #require(sampled.values["latent"])
        let decoded = try VAEDecode().run(NodeInputs(["vae": vae, "latent": sampledLatent, "tile": .int(0)]), context: ctx)
        let stream = try NodeInputs(decoded.values).get("frames", .frames)
        let images = try stream.collect().map(\.image)
        let expected = try UNet3DFixtures.io("pipe_frames")
        #expect(images.count == frames)
        let got = concat(images.map { $0.reshaped([1] + $0.shape) }, axis: 0)
        let frameError = maxAbsDiff(got, expected)
        print("UNet3D pipeline: latents max abs \(latentError), frames max abs \(frameError)")
        #expect(latentError <= 1e-3)
        #expect(frameError <= 1e-3)

        // η = 1: the pipeline draws each step's noise frame-major, and Sample must draw the same numbers.
        let stochastic = try Sample().run(NodeInputs([
            "unet": unetValue, "positive": positive, "negative": negative, "latent": latent,
            "seed": .int(seed), "steps": .int(steps), "guidance": .float(guidance), "scheduler": .string("ddim"), "eta": .float(1),
            "beta_schedule": .string("auto"), "scheduler_config": .string("auto"), "denoise": .float(1),
        ]), context: ctx)
        let eta1 = try NodeInputs(stochastic.values).get("latent", .latent).tensor
        let eta1Error = maxAbsDiff(eta1, try UNet3DFixtures.io("pipe_eta1_latents"))
        print("UNet3D pipeline, η = 1: latents max abs \(eta1Error)")
        #expect(eta1Error <= 1e-3)
    }

    @Test("folders with only fp16 variant files or .bin files load", arguments: [
        UNet3DFixtures.Format.fp16Safetensors, .bin, .fp16Bin,
    ])
    func variantsLoad(format: UNet3DFixtures.Format) throws {
        let folder = try UNet3DFixtures.writeFolder(format: format)
        defer { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
        let loaded = try UNet3DFixtures.load(folder)
        let unet = try NodeInputs(loaded.values).get("unet", .unet)
        let config = try #require(unet.unet3D)
        let model = try UNet3DConditionModel(config: config, weights: unet.weights)
        let out = try model(try UNet3DFixtures.io("sample"), timestep: 481, context: try UNet3DFixtures.io("context"))
        let expected = try UNet3DFixtures.io("out")
        let scale = expected.scalars.map(abs).max() ?? 1
        let error = maxAbsDiff(out, expected) / scale
        print("UNet3D \(format): max abs error / max |out| = \(error)")
        let half = format == .fp16Safetensors || format == .fp16Bin
        #expect(error <= (half ? 2e-2 : 1e-5))
    }

    @Test("a truncated unet file is refused naming the file")
    func truncatedUNet() throws {
        let folder = try UNet3DFixtures.writeFolder(format: .safetensors)
        defer { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
        let file = folder.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        let data = try Data(contentsOf: file)
        try data.prefix(data.count / 2).write(to: file)
        var message = "no error"
        do { _ = try UNet3DFixtures.load(folder) } catch { message = error.localizedDescription }
        #expect(message.contains("unet/diffusion_pytorch_model.safetensors"), "\(message)")
    }

    @Test("a wrong block type or a missing temporal weight is refused by name")
    func refusals() throws {
        let config = try UNet3DConditionConfig.decode(json: try UNet3DFixtures.configJSON("unet"))
        var bad = config
        bad.downBlockTypes[0] = "CrossAttnDownBlock2D"
        #expect(throws: DiffusionError.self) { _ = try UNet3DConditionModel(config: bad, weights: Weights(origin: "x")) }
        var missing = try UNet3DFixtures.unetWeights()
        missing["down_blocks.0.temp_convs.1.conv4.3.weight"] = nil
        var message = "no error"
        do { _ = try UNet3DConditionModel(config: config, weights: missing) } catch { message = error.localizedDescription }
        #expect(message.contains("down_blocks.0.temp_convs.1.conv4.3.weight"), "\(message)")
    }
}

private func maxAbsDiff(_ a: Tensor, _ b: Tensor) -> Float {
    zip(a.scalars, b.scalars).reduce(0) { max($0, abs($1.0 - $1.1)) }
}
