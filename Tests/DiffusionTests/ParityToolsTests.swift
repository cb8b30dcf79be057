import Foundation
import Testing
import LapseGraph
import LapseTensor
import LapseWeights
import LapseTestSupport
import DiffusionPlugin

/// The node-level parity tools: `LoadLatent` / `SaveLatent` / `LoadConditioning` round trips and refusals, and
/// `PredictNoise` against the stored diffusers outputs of the tiny seeded UNets (unet_vae_io.safetensors for the SD
/// UNet and AnimateDiff, unet3d_io.safetensors for ModelScope's UNet3D), directly and through a graph.
@Suite("Parity tools: LoadLatent, SaveLatent, LoadConditioning, PredictNoise", .serialized)
struct ParityToolsTests {
    static func run<N: Node>(_ node: N, _ values: [String: Value]) throws -> NodeOutputs {
        try node.run(NodeInputs(values), context: TestNodeContext())
    }

    static func latent(_ outputs: NodeOutputs, _ port: String = "latent") throws -> LatentValue {
        try NodeInputs(outputs.values).get(port, .latent)
    }

    static func load(_ path: String, key: String = "latent") throws -> LatentValue {
        try latent(try run(LoadLatent(), ["path": .string(path), "key": .string(key)]))
    }

    static func loadConditioning(_ path: String, key: String = "conditioning") throws -> Conditioning {
        let out = try run(LoadConditioning(), ["path": .string(path), "key": .string(key)])
        return try NodeInputs(out.values).get("conditioning", .conditioning)
    }

    /// The message of the error `body` throws, or "no error".
    static func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return error.localizedDescription }
        return "no error"
    }

    static func maxAbs(_ a: Tensor, _ b: Tensor) -> Float { zip(a.scalars, b.scalars).map { abs($0 - $1) }.max() ?? 0 }

    /// A safetensors file with one tensor of any dtype, written byte by byte (the writer stores floats only).
    static func writeRaw(_ url: URL, name: String, dtype: String, shape: [Int], bytes: [UInt8]) throws {
        var header = Array("{\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[0,\(bytes.count)]}}".utf8)
        while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }
        let length = withUnsafeBytes(of: UInt64(header.count).littleEndian, Array.init)
        try Data(length + header + bytes).write(to: url)
    }

    // MARK: - Round trips

    @Test("SaveLatent → LoadLatent is bit-exact and keeps the frame rate")
    func roundTrip() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("latent.safetensors").path
        let tensor = try UNet3DFixtures.io("sample")
        _ = try Self.run(SaveLatent(), ["latent": .object(LatentValue(tensor: tensor, frameRate: 12.5)), "path": .string(path)])
        let file = try CheckpointFile.open(path)
        #expect(file.keys == ["latent"] && file.dtype(of: "latent") == .f32 && file.shape(of: "latent") == [2, 4, 3, 8, 8])
        let back = try Self.load(path)
        #expect(back.tensor.shape == tensor.shape)
        #expect(back.tensor.scalars.map(\.bitPattern) == tensor.scalars.map(\.bitPattern))
        #expect(back.frameRate == 12.5)
        // Saving again replaces the file (atomic writer), and a second round trip is still exact.
        _ = try Self.run(SaveLatent(), ["latent": .object(back), "path": .string(path)])
        #expect(try Self.load(path).tensor.scalars.map(\.bitPattern) == tensor.scalars.map(\.bitPattern))
    }

    @Test("F16 and BF16 files are widened exactly; a 4-D image latent is one frame; other keys are read")
    func halfPrecisionFiles() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let video = try UNet3DFixtures.io("sample")
        let f16 = dir.appendingPathComponent("f16.safetensors").path
        try SafeTensors.write([(name: "latent", tensor: video)], dtype: .f16, to: f16)
        let half = try Self.load(f16)
        #expect(half.tensor.shape == video.shape)
        #expect(half.tensor.scalars == video.scalars.map { Float(Float16($0)) })
        #expect(half.frameRate == 8)

        let bf16 = dir.appendingPathComponent("bf16.safetensors").path
        try SafeTensors.write([(name: "x", tensor: video)], dtype: .bf16, to: bf16)
        let brain = try Self.load(bf16, key: "x")
        let expected = video.scalars.map { v -> Float in  // round to nearest even on the top 16 bits
            let bits = v.bitPattern
            return Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000)
        }
        #expect(brain.tensor.scalars == expected)

        let image = try UNetVAEFixtures.io("unet_sample")  // [2, 4, 8, 8]
        let imagePath = dir.appendingPathComponent("image.safetensors").path
        try SafeTensors.write([(name: "latent", tensor: image)], to: imagePath)
        let one = try Self.load(imagePath)
        #expect(one.tensor.shape == [2, 4, 1, 8, 8] && one.tensor.scalars == image.scalars)

        let embeds = try UNet3DFixtures.io("context")  // [2, 77, 32]
        let condPath = dir.appendingPathComponent("cond.safetensors").path
        try SafeTensors.write([(name: "conditioning", tensor: embeds), (name: "single", tensor: embeds.reshaped([154, 32]))],
                              dtype: .f16, to: condPath)
        let conditioning = try Self.loadConditioning(condPath)
        #expect(conditioning.embeddings.shape == [2, 77, 32] && conditioning.prompts == ["", ""])
        #expect(conditioning.embeddings.scalars == embeds.scalars.map { Float(Float16($0)) })
        #expect(try Self.loadConditioning(condPath, key: "single").embeddings.shape == [1, 154, 32])
    }

    // MARK: - Refusals

    @Test("bad files and keys are refused naming the file, the key and what is there")
    func refusals() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("two.safetensors").path
        try SafeTensors.write([(name: "latents", tensor: Tensor(zeros: [1, 4, 2, 8, 8])), (name: "noise", tensor: Tensor(zeros: [3, 8]))],
                              to: path)
        let missing = Self.message { _ = try Self.load(path) }
        #expect(missing.contains(path) && missing.contains("\"latent\"") && missing.contains("\"latents\"") && missing.contains("\"noise\""),
                "\(missing)")
        let rank = Self.message { _ = try Self.load(path, key: "noise") }
        #expect(rank.contains(path) && rank.contains("noise") && rank.contains("[3, 8]") && rank.contains("[B, C, F, h, w]"), "\(rank)")
        let condRank = Self.message { _ = try Self.loadConditioning(path, key: "latents") }
        #expect(condRank.contains(path) && condRank.contains("[1, 4, 2, 8, 8]") && condRank.contains("[B, tokens, width]"), "\(condRank)")
        let condMissing = Self.message { _ = try Self.loadConditioning(path) }
        #expect(condMissing.contains("\"conditioning\"") && condMissing.contains("\"latents\""), "\(condMissing)")
        #expect(Self.message { _ = try Self.load(path, key: "") }.contains("empty"))

        let ints = dir.appendingPathComponent("ints.safetensors")
        try Self.writeRaw(ints, name: "latent", dtype: "I64", shape: [1, 1, 1, 1, 2], bytes: [UInt8](repeating: 1, count: 16))
        let dtype = Self.message { _ = try Self.load(ints.path) }
        #expect(dtype.contains(ints.path) && dtype.contains("I64"), "\(dtype)")

        let torch = dir.appendingPathComponent("latent.pt")
        try TorchStateDict.write(Weights(["latent": Tensor(zeros: [1, 4, 1, 8, 8])]), half: false, to: torch)
        let format = Self.message { _ = try Self.load(torch.path) }
        #expect(format.contains(torch.path) && format.contains("safetensors"), "\(format)")

        let absent = dir.appendingPathComponent("absent.safetensors").path
        #expect(Self.message { _ = try Self.load(absent) }.contains(absent))
        let text = dir.appendingPathComponent("notes.safetensors")
        try Data("not a tensor file at all".utf8).write(to: text)
        #expect(Self.message { _ = try Self.load(text.path) }.contains(text.path))
    }

    // MARK: - PredictNoise against diffusers

    /// ModelScope's UNet3D (unet3d_io: 2 videos × 3 frames, t = 481, diffusers' `UNet3DConditionModel` output).
    @Test("PredictNoise on the ModelScope UNet3D reproduces diffusers")
    func predictUNet3D() throws {
        let config = try UNet3DConditionConfig.decode(json: try UNet3DFixtures.configJSON("unet"))
        let unet = UNetValue(unet3D: config, weights: try UNet3DFixtures.unetWeights())
        let out = try Self.latent(try Self.run(PredictNoise(), [
            "unet": .object(unet), "latent": .object(LatentValue(tensor: try UNet3DFixtures.io("sample"), frameRate: 8)),
            "positive": .object(Conditioning(embeddings: try UNet3DFixtures.io("context"), prompts: ["", ""])),
            "timestep": .float(481),
        ]))
        let expected = try UNet3DFixtures.io("out")
        #expect(out.tensor.shape == expected.shape)
        let error = normRelativeError(out.tensor.scalars, expected.scalars)
        print("PredictNoise UNet3D: relative error \(error), max abs \(Self.maxAbs(out.tensor, expected))")
        #expect(error <= 1e-4)
    }

    /// The SD image UNet per frame (unet_vae_io: two latents at t = 10 and 981; each is one PredictNoise run, read
    /// through LoadLatent as a 4-D image latent).
    @Test("PredictNoise on the SD image UNet reproduces diffusers, one image latent per timestep")
    func predictImageUNet() throws {
        let section = try UNetVAEFixtures.section("unet", layout: .diffusers)
        let unet = UNetValue(config: try UNet2DConditionConfig.decode(json: section.config), weights: section.weights)
        let samples = try UNetVAEFixtures.io("unet_sample"), contexts = try UNetVAEFixtures.io("unet_context")
        let expected = try UNetVAEFixtures.io("unet_out"), timesteps = try UNetVAEFixtures.timesteps("unet_timesteps")
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var worst: Float = 0, worstAbs: Float = 0
        for b in 0..<2 {
            let path = dir.appendingPathComponent("sample\(b).safetensors").path
            try SafeTensors.write([(name: "latent", tensor: slice(samples, axis: 0, start: b, end: b + 1))], to: path)
            let out = try Self.latent(try Self.run(PredictNoise(), [
                "unet": .object(unet), "latent": .object(try Self.load(path)),
                "positive": .object(Conditioning(embeddings: slice(contexts, axis: 0, start: b, end: b + 1), prompts: [""])),
                "timestep": .float(Double(timesteps[b])),
            ]))
            #expect(out.tensor.shape == [1, 4, 1, 8, 8])
            let reference = slice(expected, axis: 0, start: b, end: b + 1)
            worst = max(worst, normRelativeError(out.tensor.scalars, reference.scalars))
            worstAbs = max(worstAbs, Self.maxAbs(out.tensor, reference))
        }
        print("PredictNoise image UNet: relative error \(worst), max abs \(worstAbs)")
        #expect(worst <= 1e-4)
    }

    /// AnimateDiff (the tiny UNet + motion adapter, per-frame motion GroupNorm as `UNetValue` builds it; 4 frames at
    /// t = 500, reference `motion_out_per_frame`).
    @Test("PredictNoise on the AnimateDiff video UNet reproduces diffusers")
    func predictAnimateDiff() throws {
        let section = try UNetVAEFixtures.section("unet", layout: .diffusers)
        let motion = try UNetVAEFixtures.section("motion", layout: .diffusers)
        let unet = UNetValue(config: try UNet2DConditionConfig.decode(json: section.config), weights: section.weights,
                             motion: MotionWeights(config: try MotionAdapterConfig.decode(json: motion.config), weights: motion.weights))
        let out = try Self.latent(try Self.run(PredictNoise(), [
            "unet": .object(unet), "latent": .object(LatentValue(tensor: try UNetVAEFixtures.io("motion_sample"), frameRate: 8)),
            "positive": .object(Conditioning(embeddings: try UNetVAEFixtures.io("motion_context"), prompts: [""])),
            "timestep": .float(Double(try UNetVAEFixtures.timesteps("motion_timesteps")[0])),
        ]))
        let expected = try UNetVAEFixtures.io("motion_out_per_frame")
        #expect(out.tensor.shape == expected.shape)
        let error = normRelativeError(out.tensor.scalars, expected.scalars)
        print("PredictNoise AnimateDiff: relative error \(error), max abs \(Self.maxAbs(out.tensor, expected))")
        #expect(error <= 1e-4)
    }

    @Test("PredictNoise refuses latents, conditioning and timesteps the UNet cannot take, by port")
    func predictRefusals() throws {
        let config = try UNet3DConditionConfig.decode(json: try UNet3DFixtures.configJSON("unet"))
        let unet = Value.object(UNetValue(unet3D: config, weights: try UNet3DFixtures.unetWeights()))
        let context = Value.object(Conditioning(embeddings: try UNet3DFixtures.io("context"), prompts: ["", ""]))
        let latent = Value.object(LatentValue(tensor: try UNet3DFixtures.io("sample"), frameRate: 8))
        let channels = Self.message {
            _ = try Self.run(PredictNoise(), ["unet": unet, "positive": context, "timestep": .float(1),
                                              "latent": .object(LatentValue(tensor: Tensor(zeros: [2, 3, 3, 8, 8]), frameRate: 8))])
        }
        #expect(channels.contains("latent") && channels.contains("[2, 3, 3, 8, 8]") && channels.contains("[B, 4, F, h, w]"), "\(channels)")
        let width = Self.message {
            _ = try Self.run(PredictNoise(), ["unet": unet, "latent": latent, "timestep": .float(1),
                                              "positive": .object(Conditioning(embeddings: Tensor(zeros: [1, 77, 31]), prompts: [""]))])
        }
        #expect(width.contains("positive") && width.contains("32"), "\(width)")
        let batch = Self.message {
            _ = try Self.run(PredictNoise(), ["unet": unet, "latent": latent, "timestep": .float(1),
                                              "positive": .object(Conditioning(embeddings: Tensor(zeros: [3, 77, 32]), prompts: ["", "", ""]))])
        }
        #expect(batch.contains("positive") && batch.contains("batch of 2"), "\(batch)")
        for bad in [-1.0, 1000.5, .nan] {
            let message = Self.message { _ = try Self.run(PredictNoise(), ["unet": unet, "latent": latent, "positive": context, "timestep": .float(bad)]) }
            #expect(message.contains("timestep") && message.contains("1000"), "\(message)")
        }
    }

    // MARK: - Through a graph

    @Test("graphs/predict-noise.json (LoadCheckpoint + LoadConditioning + LoadLatent → PredictNoise → SaveLatent) reproduces diffusers")
    func graph() throws {
        let folder = try UNet3DFixtures.writeFolder(format: .safetensors)
        let dir = folder.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: dir) }
        let latentPath = dir.appendingPathComponent("latent.safetensors").path
        let condPath = dir.appendingPathComponent("conditioning.safetensors").path
        let output = dir.appendingPathComponent("out/eps.safetensors").path
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("out"), withIntermediateDirectories: true)
        try SafeTensors.write([(name: "latent", tensor: try UNet3DFixtures.io("sample"))], to: latentPath)
        try SafeTensors.write([(name: "conditioning", tensor: try UNet3DFixtures.io("context"))], to: condPath)

        let registry = NodeRegistry()
        try DiffusionPlugin.register(into: registry)
        let root = DiffusionFixtures.repoRoot
        let data = try Data(contentsOf: root.appendingPathComponent("graphs/predict-noise.json"))
        let files = try [
            "base.path=\(folder.path)", "base.vocab=\(try DiffusionFixtures.clipVocabulary().path)",
            "conditioning.path=\(condPath)", "latent.path=\(latentPath)", "save.path=\(output)",
        ].map { try ParamOverride.parse($0) }
        let overrides = files + [try ParamOverride.parse("predict.timestep=481")]
        let validated = try GraphValidator(registry: registry, baseDirectory: root)
            .validate(data: data, name: "predict-noise.json", overrides: overrides).get()
        let summary = try Executor(registry: registry).run(validated)
        #expect(summary.executed.contains("predict") && summary.executed.contains("save"))

        let written = try CheckpointFile.open(output)
        #expect(written.keys == ["latent"])
        let prediction = try written.tensor("latent"), expected = try UNet3DFixtures.io("out")
        #expect(prediction.shape == expected.shape)
        let error = normRelativeError(prediction.scalars, expected.scalars)
        print("PredictNoise graph (UNet3D): relative error \(error), max abs \(Self.maxAbs(prediction, expected))")
        #expect(error <= 1e-4)

        // The timestep is required and range-checked before anything runs.
        var text = try #require(String(data: data, encoding: .utf8))
        text = text.replacingOccurrences(of: #", "params": {"timestep": 981}"#, with: "")
        #expect(text.contains("\"predict\"") && !text.contains("981"))
        let noTimestep = GraphValidator(registry: registry, baseDirectory: root)
            .validate(data: Data(text.utf8), name: "no-timestep.json", overrides: files)
        guard case .failure(let failure) = noTimestep else { Issue.record("a graph without timestep validated"); return }
        #expect(failure.localizedDescription.contains("timestep"), "\(failure.localizedDescription)")
        let outOfRange = GraphValidator(registry: registry, baseDirectory: root)
            .validate(data: data, name: "predict-noise.json", overrides: files + [try ParamOverride.parse("predict.timestep=2000")])
        guard case .failure(let rangeFailure) = outOfRange else { Issue.record("timestep 2000 validated"); return }
        #expect(rangeFailure.localizedDescription.contains("timestep"), "\(rangeFailure.localizedDescription)")
    }
}
