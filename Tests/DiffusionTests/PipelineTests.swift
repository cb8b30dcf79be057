import Foundation
import Testing
import LapseGraph
import LapseTensor
import LapseWeights
import LapseTestSupport
import DiffusionPlugin
import MagicTimePlugin
import MediaPlugin
import APISRPlugin

/// The tiny MagicTime model set of Tools/fixtures/magictime_e2e.py, written at test time in the official files'
/// formats and key names: an LDM single-file `.safetensors` (UNet `model.diffusion_model.*`, VAE
/// `first_stage_model.*`, CLIP `cond_stage_model.transformer.*`) and an original-AnimateDiff motion module.
enum MagicTimeTinyModels {
    struct Paths {
        let directory: URL
        let checkpoint: String
        let motion: String
    }

    static func manifest() throws -> [String: Any] {
        try #require(try DiffusionFixtures.json("e2e_manifest.json") as? [String: Any])
    }

    /// Regenerates seeded rows `[name, shape, scale, offset, single-file name, single-file shape]` under their
    /// single-file names (bit-identical to the script's `torch.rand` draws).
    static func seeded(_ section: [String: Any], into weights: inout Weights) throws {
        let seeded = try SeededWeights.make(rows: try #require(section["tensors"] as? [[Any]]),
                                            seed: try #require(section["seed"] as? Int)) { row in
            (row[4] as? String).flatMap { name in (row[5] as? [Int]).map { (name, $0) } }
        }
        for key in seeded.keys { weights[key] = try seeded.tensor(key) }
    }

    static func write() throws -> Paths {
        let dir = try TestSupport.makeTemporaryDirectory()
        var checkpoint = try UNetVAEFixtures.section("unet", layout: .singleFile).weights
        let m = try manifest()
        try seeded(try #require(m["vae"] as? [String: Any]), into: &checkpoint)
        try seeded(try #require(m["clip"] as? [String: Any]), into: &checkpoint)
        let checkpointPath = dir.appendingPathComponent("tiny-sd15.safetensors").path
        try SafeTensors.write(checkpoint, to: checkpointPath)
        let motionPath = dir.appendingPathComponent("tiny_v3_mm.safetensors").path
        try SafeTensors.write(try UNetVAEFixtures.section("motion", layout: .singleFile).weights, to: motionPath)
        return Paths(directory: dir, checkpoint: checkpointPath, motion: motionPath)
    }

    static func registry() throws -> NodeRegistry {
        let registry = NodeRegistry()
        try DiffusionPlugin.register(into: registry)
        try MagicTimePlugin.register(into: registry)
        try MediaPlugin.register(into: registry)
        try APISRPlugin.register(into: registry)
        return registry
    }

    /// `--set` overrides that point a MagicTime graph at the tiny set: 4 frames at 64², 3 DDIM steps.
    static func overrides(_ paths: Paths, output: String) throws -> [ParamOverride] {
        let m = try manifest()
        let vocab = try DiffusionFixtures.clipVocabulary().path
        let texts: [String] = [
            "ckpt.path=\(paths.checkpoint)", "ckpt.config=\(DiffusionFixtures.url("e2e_config.json").path)", "ckpt.vocab=\(vocab)",
            "motion.path=\(paths.motion)", "motion.config=\(DiffusionFixtures.url("e2e_motion_config.json").path)",
            "positive.text=\(try #require(m["prompt"] as? String))", "negative.text=\(try #require(m["negative"] as? String))",
            "latent.width=\(try #require(m["size"] as? Int))", "latent.height=\(try #require(m["size"] as? Int))",
            "latent.frames=\(try #require(m["frames"] as? Int))",
            "sample.seed=\(try #require(m["seed"] as? Int))", "sample.steps=\(try #require(m["steps"] as? Int))",
            "sample.guidance=\(try #require(m["guidance"] as? Double))", "save.path=\(output)",
            // The diffusers reference runs AnimateDiff without MagicTime's adapters: the merge node passes through.
            "magic.spatial=", "magic.temporal=", "magic.text_encoder=",
        ]
        return try texts.map { try ParamOverride.parse($0) }
    }
}

/// graphs/magictime.json end to end on the tiny model set vs diffusers' AnimateDiffPipeline (MagicTime's DDIM,
/// per-frame motion GroupNorm) with the same seed.
@Suite(.serialized) struct PipelineTests {
    static let repoRoot = DiffusionFixtures.repoRoot

    func run(graph: String, extra: [String] = []) throws -> (RunSummary, MagicTimeTinyModels.Paths, String) {
        let paths = try MagicTimeTinyModels.write()
        let output = paths.directory.appendingPathComponent("out.mp4").path
        let data = try Data(contentsOf: Self.repoRoot.appendingPathComponent("graphs/\(graph)"))
        let overrides = try MagicTimeTinyModels.overrides(paths, output: output) + extra.map { try ParamOverride.parse($0) }
        let registry = try MagicTimeTinyModels.registry()
        let validated = try GraphValidator(registry: registry, baseDirectory: Self.repoRoot)
            .validate(data: data, name: graph, overrides: overrides).get()
        // The tests read intermediate values (the sampled latents, the decoded stream) from the summary.
        return (try Executor(registry: registry, options: ExecutionOptions(keepsIntermediateResults: true)).run(validated), paths, output)
    }

    @Test func magictimeGraphMatchesDiffusersAnimateDiffPipeline() throws {
        let (summary, paths, output) = try run(graph: "magictime.json")
        defer { try? FileManager.default.removeItem(at: paths.directory) }
        let expected = try CheckpointFile.open(DiffusionFixtures.url("e2e_expected.safetensors").path)

        let sampled = try #require(summary.outputs["sample"]?.values["latent"])
        guard case .object(let l) = sampled, let latent = l as? LatentValue else { Issue.record("no latent"); return }
        let refLatents = try expected.tensor("latents")
        #expect(latent.tensor.shape == refLatents.shape)
        let latentError = zip(latent.tensor.scalars, refLatents.scalars).map { abs($0 - $1) }.max() ?? .infinity
        #expect(latentError < 1e-3, "final latents max abs error \(latentError)")

        guard case .object(let f)? = summary.outputs["decode"]?.values["frames"], let stream = f as? Frames else {
            Issue.record("no frames")
            return
        }
        let frames = try stream.collect()
        let reference = try expected.tensor("frames")  // [F, 3, H, W]
        #expect(frames.count == reference.shape[0])
        #expect(stream.info.fps == 8)
        let perFrame = reference.shape[1] * reference.shape[2] * reference.shape[3]
        let ref = reference.scalars
        var worst: Float = 0
        for (i, frame) in frames.enumerated() {
            #expect(frame.image.shape == Array(reference.shape.dropFirst()))
            for (a, b) in zip(frame.image.scalars, ref[(i * perFrame)..<((i + 1) * perFrame)]) { worst = max(worst, abs(a - b)) }
        }
        #expect(worst < 1e-3, "decoded frames max abs error \(worst)")
        print("magictime e2e vs diffusers: latents max abs \(latentError), frames max abs \(worst)")
        let written = try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int ?? 0
        #expect(written > 0, "SaveVideo wrote no mp4")
    }

    /// Generation chained with upscaling: decoded frames stream into the real Real-ESRGAN animevideov3 ×2 network
    /// (fetched by scripts/fetch-assets.sh) and each upscaled frame equals that network applied to diffusers' frames.
    @Test func magictimeThenUpscaleStreamsDecodedFramesIntoTheUpscaler() throws {
        let x2 = Self.repoRoot.appendingPathComponent("models/realesrgan/realesr-animevideov3-x2.param").path
        try #require(FileManager.default.fileExists(atPath: x2), "\(x2) is missing: run scripts/fetch-assets.sh")
        let (summary, paths, output) = try run(graph: "magictime-then-upscale.json", extra: ["upscaler.path=\(x2)"])
        defer { try? FileManager.default.removeItem(at: paths.directory) }
        let written = try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int ?? 0
        #expect(written > 0, "SaveVideo wrote no mp4")

        guard case .object(let f)? = summary.outputs["upscale"]?.values["frames"], let stream = f as? Frames else {
            Issue.record("no upscaled frames")
            return
        }
        let frames = try stream.collect()
        let reference = try CheckpointFile.open(DiffusionFixtures.url("e2e_expected.safetensors").path).tensor("frames")
        let (count, h, w) = (reference.shape[0], reference.shape[2], reference.shape[3])
        #expect(frames.count == count)
        let upscaler = TiledUpscaler(network: try UpscaleModelLoader.load(path: x2).network)
        var worst: Float = 0
        for (i, frame) in frames.enumerated() {
            #expect(frame.image.shape == [3, 2 * h, 2 * w])
            let source = slice(reference, axis: 0, start: i, end: i + 1)
            let expected = try upscaler.upscale(source)
            for (a, b) in zip(frame.image.scalars, expected.scalars) { worst = max(worst, abs(a - b)) }
        }
        #expect(worst < 1e-3, "upscaled frames max abs error \(worst)")
        print("magictime → APISR ×2: \(frames.count) frames at \(2 * w)×\(2 * h), max abs error vs upscaled diffusers frames \(worst)")
    }

    @Test func graphsValidateWithTheirDefaults() throws {
        // Paths of the official files are not checked (they are large downloads); everything else is.
        let registry = try MagicTimeTinyModels.registry()
        for graph in ["magictime.json", "magictime-then-upscale.json"] {
            let data = try Data(contentsOf: Self.repoRoot.appendingPathComponent("graphs/\(graph)"))
            let result = GraphValidator(registry: registry, baseDirectory: Self.repoRoot, checkInputFiles: false)
                .validate(data: data, name: graph)
            if case .failure(let failure) = result { Issue.record("\(graph): \(failure)") }
        }
    }
}
