import Foundation
import Testing
import LapseGraph
import LapseTensor
import LapseWeights
import LapseTestSupport
import DiffusionPlugin

/// The checkpoint / motion / latent / sampling / VAE nodes one by one on the tiny model set: bad input gives
/// errors that say what is wrong, progress and the image (no motion) path work.
@Suite(.serialized) struct NodesTests {
    struct Loaded {
        let unet: UNetValue, vae: VAEValue, motion: MotionWeights
    }

    static let shared: Result<Loaded, Error> = Result {
        let paths = try MagicTimeTinyModels.write()
        defer { try? FileManager.default.removeItem(at: paths.directory) }
        let ctx = TestNodeContext()
        let out = try LoadCheckpoint().run(NodeInputs([
            "path": .string(paths.checkpoint), "config": .string(DiffusionFixtures.url("e2e_config.json").path),
            "vocab": .string(try DiffusionFixtures.clipVocabulary().path)]), context: ctx)
        let motion = try LoadMotionModule().run(NodeInputs([
            "path": .string(paths.motion), "config": .string(DiffusionFixtures.url("e2e_motion_config.json").path)]), context: ctx)
        guard case .object(let u)? = out.values["unet"], var unet = u as? UNetValue,
              case .object(let v)? = out.values["vae"], var vae = v as? VAEValue,
              case .object(let m)? = motion.values["motion"], var mm = m as? MotionWeights else {
            throw DiffusionFixtures.FixtureError.malformed("loaders gave no UNet/VAE/motion values")
        }
        // The files go away with the directory: keep the tensors in memory.
        func resident(_ w: Weights) throws -> Weights {
            var r = Weights(origin: w.origin)
            for key in w.keys { r[key] = try w.tensor(key) }
            return r
        }
        unet.weights = try resident(unet.weights)
        vae.weights = try resident(vae.weights)
        mm.weights = try resident(mm.weights)
        return Loaded(unet: unet, vae: vae, motion: mm)
    }

    static func conditioning(_ width: Int = 32) -> Conditioning {
        Conditioning(embeddings: TorchGenerator(seed: 3).randn([1, 77, width]), prompts: ["x"])
    }

    static func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return error.localizedDescription }
        return "no error"
    }

    @Test func loadCheckpointReadsSizesFromTheWeights() throws {
        let loaded = try Self.shared.get()
        #expect(loaded.unet.config.blockOutChannels == [32, 64] && loaded.unet.config.layersPerBlock == 1)
        #expect(loaded.unet.config.crossAttentionDim == 32)
        #expect(loaded.vae.config.blockOutChannels == [16, 16, 32, 32] && loaded.vae.downsamplingFactor == 8)
        #expect(loaded.motion.config.blockOutChannels == [32, 64] && loaded.motion.config.motionMaxSeqLength == 32)
    }

    @Test func loadCheckpointWithoutAVAENamesTheMissingComponent() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("unet-only.safetensors").path
        try SafeTensors.write(try UNetVAEFixtures.section("unet", layout: .singleFile).weights, to: path)
        let text = Self.message {
            _ = try LoadCheckpoint().run(NodeInputs(["path": .string(path), "config": .string(""),
                                                     "vocab": .string(try DiffusionFixtures.clipVocabulary().path)]),
                                         context: TestNodeContext())
        }
        #expect(text.contains("no VAE weights") && text.contains("first_stage_model"), "\(text)")
    }

    @Test func loadCheckpointNamesAMissingUNetTensorAtLoad() throws {
        let paths = try MagicTimeTinyModels.write()
        defer { try? FileManager.default.removeItem(at: paths.directory) }
        var weights = try Weights.load(paths.checkpoint)
        let victim = try #require(weights.keys.last { $0.hasPrefix("model.diffusion_model.output_blocks.") && $0.hasSuffix(".weight") })
        weights[victim] = nil
        let damaged = paths.directory.appendingPathComponent("damaged.safetensors").path
        try SafeTensors.write(weights, to: damaged)
        let text = Self.message {
            _ = try LoadCheckpoint().run(NodeInputs([
                "path": .string(damaged), "config": .string(DiffusionFixtures.url("e2e_config.json").path),
                "vocab": .string(try DiffusionFixtures.clipVocabulary().path)]), context: TestNodeContext())
        }
        #expect(text.contains("UNet2DConditionModel") && text.contains("missing weight") && text.contains("damaged.safetensors"),
                "\(text)")
    }

    @Test func loadMotionModuleRejectsAFileWithoutMotionModules() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("not-motion.safetensors").path
        try SafeTensors.write([(name: "model.diffusion_model.conv_in.weight", tensor: Tensor(zeros: [2, 4, 3, 3]))], to: path)
        let text = Self.message { _ = try LoadMotionModule().run(NodeInputs(["path": .string(path), "config": .string("")]), context: TestNodeContext()) }
        #expect(text.contains("motion_modules."), "\(text)")
    }

    @Test func motionModuleForAnotherBaseIsRefused() throws {
        let loaded = try Self.shared.get()
        var sdxlLike = loaded.motion
        sdxlLike.config.blockOutChannels = [320, 640, 1280]
        let text = Self.message {
            _ = try ApplyMotionModule().run(NodeInputs(["unet": .object(loaded.unet), "motion": .object(sdxlLike)]), context: TestNodeContext())
        }
        #expect(text.contains("[32, 64]") && text.contains("[320, 640, 1280]"), "\(text)")
    }

    @Test func sizesMustBeMultiplesOfEight() {
        let text = Self.message {
            _ = try EmptyLatentVideo().run(NodeInputs(["width": .int(60), "height": .int(64), "frames": .int(4), "batch": .int(1)]),
                                           context: TestNodeContext())
        }
        #expect(text.contains("width 60") && text.contains("multiple of 8"), "\(text)")
    }

    @Test func moreThan32FramesExplainsTheMotionModuleLimit() throws {
        let loaded = try Self.shared.get()
        var unet = loaded.unet
        unet.motion = loaded.motion
        let text = Self.message {
            _ = try Sample().run(Self.sampleInputs(unet: unet, latent: Tensor(zeros: [1, 4, 33, 8, 8])), context: TestNodeContext())
        }
        #expect(text.contains("33 frames") && text.contains("32"), "\(text)")
    }

    static func sampleInputs(unet: UNetValue, latent: Tensor, steps: Int = 2, scheduler: String = "ddim", guidance: Double = 7.5) -> NodeInputs {
        NodeInputs(["unet": .object(unet), "positive": .object(conditioning()), "negative": .object(conditioning()),
                    "latent": .object(LatentValue(tensor: latent, frameRate: 8)), "seed": .int(5), "steps": .int(steps),
                    "guidance": .float(guidance), "scheduler": .string(scheduler), "eta": .float(0),
                    "beta_schedule": .string("scaled_linear"), "denoise": .float(1)])
    }

    @Test func imageUNetSamplesEveryFrameAndReportsSteps() throws {
        let loaded = try Self.shared.get()
        let ctx = TestNodeContext()
        let out = try Sample().run(Self.sampleInputs(unet: loaded.unet, latent: Tensor(zeros: [1, 4, 2, 8, 8]), steps: 3,
                                                     scheduler: "euler_ancestral"), context: ctx)
        guard case .object(let l)? = out.values["latent"], let latent = l as? LatentValue else { Issue.record("no latent"); return }
        #expect(latent.tensor.shape == [1, 4, 2, 8, 8])
        #expect(latent.tensor.scalars.allSatisfy { $0.isFinite })
        #expect(ctx.progressReports.map(\.step) == [1, 2, 3])
        // Without motion modules the two frames are sampled independently: the same noise would give the same frame.
        let frames = chunk(latent.tensor, 2, axis: 2)
        #expect(frames[0].scalars != frames[1].scalars)
    }

    /// Guidance in two UNet passes gives the joint pass's latents (but for summation order); `auto` splits only
    /// past 64 MiB of first-block activation; anything else is refused naming the param.
    @Test func guidanceInTwoPassesMatchesTheJointBatch() throws {
        let loaded = try Self.shared.get()
        func sampled(_ batching: String) throws -> Tensor {
            var values = Self.sampleInputs(unet: loaded.unet, latent: Tensor(zeros: [1, 4, 2, 8, 8]), steps: 3).values
            values["guidance_batch"] = .string(batching)
            let out = try Sample().run(NodeInputs(values), context: TestNodeContext())
            guard case .object(let l)? = out.values["latent"], let latent = l as? LatentValue else { throw NodeError.failed("no latent") }
            return latent.tensor
        }
        let joint = try sampled("joint"), split = try sampled("split")
        let scale = joint.scalars.map(abs).max() ?? 1
        let worst = zip(joint.scalars, split.scalars).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= 1e-5 * scale, "max |joint − split| \(worst), max |joint| \(scale)")
        let auto = try sampled("auto")
        #expect(zip(auto.scalars, joint.scalars).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "tiny latents stay joint")

        #expect(!GuidanceBatching.auto.splits(latentShape: [1, 4, 16, 32, 32], firstBlockChannels: 320), "256² × 16: 42 MB")
        #expect(GuidanceBatching.auto.splits(latentShape: [1, 4, 16, 64, 64], firstBlockChannels: 320), "512² × 16: 168 MB")
        #expect(GuidanceBatching.split.splits(latentShape: [1, 4, 1, 8, 8], firstBlockChannels: 32))
        let text = Self.message { _ = try sampled("halves") }
        #expect(text.contains("guidance_batch") && text.contains("\"halves\" is not auto, joint or split"), "\(text)")
    }

    @Test func sampleStopsBetweenStepsWhenCancelled() throws {
        let loaded = try Self.shared.get()
        let ctx = TestNodeContext()
        ctx.cancel()
        #expect(throws: CancellationError.self) {
            _ = try Sample().run(Self.sampleInputs(unet: loaded.unet, latent: Tensor(zeros: [1, 4, 1, 8, 8])), context: ctx)
        }
    }

    @Test func vaeEncodeThenDecodeKeepsShapesAndTilingMatchesWholeFrames() throws {
        let loaded = try Self.shared.get()
        let images = (0..<2).map { Frame(image: TorchGenerator(seed: UInt64($0)).rand([3, 64, 64]), index: $0) }
        let enc = try VAEEncode().run(NodeInputs(["vae": .object(loaded.vae), "frames": .object(Frames(frames: images))]),
                                      context: TestNodeContext())
        guard case .object(let l)? = enc.values["latent"], let latent = l as? LatentValue else { Issue.record("no latent"); return }
        #expect(latent.tensor.shape == [1, 4, 2, 8, 8])
        func decode(_ tile: Int) throws -> [Frame] {
            let out = try VAEDecode().run(NodeInputs(["vae": .object(loaded.vae), "latent": .object(latent), "tile": .int(tile)]),
                                          context: TestNodeContext())
            guard case .object(let f)? = out.values["frames"], let frames = f as? Frames else { throw NodeError.failed("no frames") }
            return try frames.collect()
        }
        let whole = try decode(0), sameSize = try decode(64), tiled = try decode(32)
        #expect(whole.count == 2 && whole[0].image.shape == [3, 64, 64])
        #expect(whole[1].image.scalars == sameSize[1].image.scalars)  // a tile covering the frame is no tiling
        #expect(tiled[1].image.shape == [3, 64, 64])
        #expect(tiled[1].image.scalars.allSatisfy { (0...1).contains($0) })
        let badSize = Self.message {
            _ = try VAEEncode().run(NodeInputs(["vae": .object(loaded.vae),
                                                "frames": .object(Frames(frames: [Frame(image: Tensor(zeros: [3, 60, 64]))]))]),
                                    context: TestNodeContext())
        }
        #expect(badSize.contains("multiple of 8"), "\(badSize)")
    }
}
