import DiffusionPlugin
import Foundation
import LapseTensor
import LapseWeights
import StreamingT2VPlugin
import Testing

/// RefinerSampler against the original modelscope video_to_video code with StreamingT2V's blending patch
/// (Tools/fixtures/refiner_sampler.py): schedule tables, step list, and whole sampling runs with the original's
/// recorded Brownian increments and blending offsets and a tiny fake v-predictor both sides implement.
@Suite("StreamingT2V refiner sampler")
struct RefinerSamplerTests {
    private static let file = "refiner_sampler.safetensors"

    private static func fixture() throws -> CheckpointFile {
        try CheckpointFile.open(StreamingT2VFixtures.url(file).path)
    }

    /// max |a − b| / max |b|.
    private static func relativeError(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        let scale = b.map { abs($0) }.max() ?? 0
        let diff = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        return diff / max(scale, 1e-30)
    }

    @Test func scheduleAndStepListMatchTheOriginal() throws {
        let f = try Self.fixture()
        let sampler = try RefinerSampler()
        let sigmas = try f.tensor("main.sigmas").scalars
        let maxError = zip(sampler.schedule.sigmas, sigmas).map { abs($0 - $1) }.max()!
        print("refiner schedule: σ table max abs error \(maxError), solver σ's relative error "
              + "\(Self.relativeError(sampler.solverSigmas, try f.tensor("main.solver_sigmas").scalars))")
        #expect(maxError <= 1e-6, "σ table max error \(maxError)")
        #expect(sampler.schedule.sigmas[999] == 1)
        let stepT = try f.tensor("main.step_t").scalars
        #expect(sampler.stepTimesteps.count == stepT.count)
        #expect(sampler.stepTimesteps == stepT)
        let solver = try f.tensor("main.solver_sigmas").scalars
        #expect(sampler.solverSigmas.count == 31)
        #expect(Self.relativeError(sampler.solverSigmas, solver) <= 1e-6,
                "solver σ's \(Self.relativeError(sampler.solverSigmas, solver))")
        #expect(sampler.modelTimesteps == (try f.tensor("main.model_t").scalars.map { Int($0) }))
        #expect(sampler.modelTimesteps.first == 599 && sampler.modelTimesteps.last == 38)
        #expect(abs(sampler.startScale - 4.1648) < 1e-4)
    }

    @Test(arguments: ["main", "pure", "unguided"])
    func samplingMatchesTheOriginal(run: String) throws {
        let f = try Self.fixture()
        let runs = try #require(try JSONSerialization.jsonObject(with: Data(f.metadata["runs"]!.utf8)) as? [String: [String: Any]])
        let meta = try #require(runs[run])
        let shape = try #require(meta["shape"] as? [Int])
        let sampler = try RefinerSampler(steps: try #require(meta["steps"] as? Int),
                                         noiseLevel: try #require(meta["noise_level"] as? Int),
                                         guidance: Float(try #require(meta["guidance"] as? Double)))
        let solver = try f.tensor("\(run).solver_sigmas").scalars
        #expect(sampler.solverSigmas.count == solver.count)
        #expect(sampler.solverSigmas.first!.isInfinite == solver.first!.isInfinite)
        let finite = zip(sampler.solverSigmas, solver).filter { $0.1.isFinite }
        #expect(Self.relativeError(finite.map(\.0), finite.map(\.1)) <= 1e-6)
        #expect(sampler.modelTimesteps == (try f.tensor("\(run).model_t").scalars.map { Int($0) }))

        let latents = TorchGenerator(seed: UInt64(try #require(meta["latent_seed"] as? Int))).randn(shape)
        let start = TorchGenerator(seed: UInt64(try #require(meta["noise_seed"] as? Int))).randn(shape)
        let brownian = try f.tensor("\(run).brownian")
        let increments = brownian.count == 0 ? [] : (0..<brownian.shape[0]).map {
            slice(brownian, axis: 0, start: $0, end: $0 + 1).reshaped(shape)
        }
        let offsets = try f.tensor("\(run).offsets").scalars.dropLast().map { Int($0) }
        let model = try FakeVPredictor(f, run)
        var steps: [RefinerStep] = []
        let out = try sampler.refine(latents: latents, noise: RecordedRefinerNoise(start: start, steps: increments),
                                     offsets: RecordedRefinerOffsets(offsets), onStep: { steps.append($0) },
                                     denoise: model.callAsFunction)
        #expect(steps.count == sampler.steps)
        let expected = try f.tensor("\(run).final")
        let error = Self.relativeError(out.scalars, expected.scalars)
        print("refiner \(run): final max error \(error) relative to max |x0| \(expected.scalars.map { abs($0) }.max()!)")
        #expect(error <= 1e-5, "final x0 relative error \(error)")

        if run == "main" {
            let x0 = try f.tensor("main.x0_eval0").scalars
            #expect(Self.relativeError(steps[0].denoised.scalars, x0) <= 1e-5)
            // The fixture is sensitive to the blending: other offsets (each moved by one) give another video.
            let moved = offsets.map { ($0 + 1) % 8 }
            let other = try sampler.refine(latents: latents, noise: RecordedRefinerNoise(start: start, steps: increments),
                                           offsets: RecordedRefinerOffsets(moved), denoise: model.callAsFunction)
            #expect(Self.relativeError(other.scalars, expected.scalars) > 1e-3)
            let inMeans = try f.tensor("main.x_in_frame_means"), x0Means = try f.tensor("main.x0_frame_means")
            for (i, step) in steps.enumerated() {
                let a = frameMeans(step.modelInput), b = slice(inMeans, axis: 0, start: i, end: i + 1).scalars
                let c = frameMeans(step.denoised), d = slice(x0Means, axis: 0, start: i, end: i + 1).scalars
                #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) }, "evaluation \(i) input means")
                #expect(zip(c, d).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) }, "evaluation \(i) x0 means")
            }
        }
    }

    @Test func pythonRandomMatchesCPython() throws {
        let f = try Self.fixture()
        for seed: UInt64 in [0, 7, 1234, (1 << 40) + 3] {
            let expected = try f.tensor("python_random_seed\(seed)").scalars.map { Int($0) }
            let random = PythonRandom(seed: seed)
            #expect((0..<64).map { _ in random.randbelow(8) } == expected, "seed \(seed)")
        }
        // The main run's offsets came from random.seed(1234).randint(0, 7), one per evaluation.
        let offsets = SeededRefinerOffsets(seed: 1234)
        let recorded = try f.tensor("main.offsets").scalars.dropLast().map { Int($0) }
        #expect(try (0..<30).map { try offsets.offset(evaluation: $0, chunk: 1, bound: 8) } == recorded)
    }

    @Test func chunkStartsCoverAnyLength() throws {
        let sampler = try RefinerSampler()
        #expect(try sampler.chunkStarts(frames: 24) == [0])
        #expect(try sampler.chunkStarts(frames: 40) == [0, 16])
        #expect(try sampler.chunkStarts(frames: 37) == [0, 13])
        #expect(try sampler.chunkStarts(frames: 56) == [0, 16, 32])
        #expect(try sampler.chunkStarts(frames: 57) == [0, 16, 32, 33])
        #expect(throws: DiffusionError.self) { try sampler.chunkStarts(frames: 23) }
        #expect(throws: DiffusionError.self) { try RefinerSampler(chunk: 8, overlap: 8) }
        #expect(throws: DiffusionError.self) { try RefinerSampler(noiseLevel: 0) }
        #expect(throws: DiffusionError.self) { try RefinerSampler(steps: 0) }
    }

    /// 37 frames (the original would trim to 24): chunks at 0 and 13; every frame of every evaluation's x₀ comes from
    /// the chunk the offset rule says, and none is left unwritten.
    @Test func lengthTheOriginalWouldTrimIsCoveredByALastChunkAtTheEnd() throws {
        let sampler = try RefinerSampler(steps: 4, guidance: 1)
        let shape = [1, 2, 37, 2, 2]
        let latents = TorchGenerator(seed: 1).randn(shape)
        var calls = 0
        // The chunk's index (1, 2) as a constant v; guidance 1 makes one pass per chunk.
        let denoise: RefinerSampler.Denoise = { x, _, conditional in
            #expect(conditional)
            #expect(x.shape == [1, 2, 24, 2, 2])
            calls += 1
            return Tensor(repeating: Float((calls - 1) % 2 + 1), shape: x.shape)
        }
        let offsets = [3, 7, 0, 5]
        var checked = 0
        _ = try sampler.refine(latents: latents, noise: SeededRefinerNoise(seed: 2),
                               offsets: RecordedRefinerOffsets(offsets), onStep: { step in
            let t = step.timestep, alpha = sampler.schedule.alphas[t], sigma = sampler.schedule.sigmas[t]
            let cut = 13 + offsets[step.index]
            let input = step.modelInput.scalars, x0 = step.denoised.scalars
            for c in 0..<2 { for frame in 0..<37 { for p in 0..<4 {
                let j = (c * 37 + frame) * 4 + p
                let v: Float = frame < cut ? 1 : 2
                #expect(abs(x0[j] - (alpha * input[j] - sigma * v)) <= 1e-5, "frame \(frame)")
            } } }
            checked += 1
        }, denoise: denoise)
        #expect(checked == 4 && calls == 8)
    }

    /// The default sources: TorchGenerator(seed) draws the start noise, then one randn per noisy step.
    @Test func seededNoiseIsTorchGeneratorInOrder() throws {
        let sampler = try RefinerSampler(steps: 5, guidance: 3)
        let shape = [1, 2, 24, 2, 3]
        let latents = TorchGenerator(seed: 9).randn(shape)
        let denoise: RefinerSampler.Denoise = { x, t, conditional in x * (conditional ? 0.3 : 0.1) + Float(t) / 1000 }
        let a = try sampler.refine(latents: latents, noise: SeededRefinerNoise(seed: 4),
                                   offsets: SeededRefinerOffsets(seed: 0), denoise: denoise)
        let g = TorchGenerator(seed: 4)
        let start = g.randn(shape)
        let steps = (0..<4).map { _ in g.randn(shape) }
        let b = try sampler.refine(latents: latents, noise: RecordedRefinerNoise(start: start, steps: steps),
                                   offsets: RecordedRefinerOffsets([]), denoise: denoise)
        #expect(a.scalars == b.scalars)
    }
}

/// Per-frame means over (B, C, h, w) of `[B, C, F, h, w]`.
private func frameMeans(_ x: Tensor) -> [Float] {
    let s = x.shape, frames = s[2], plane = s[3] * s[4], values = x.scalars
    return (0..<frames).map { f in
        var sum: Float = 0
        for bc in 0..<(s[0] * s[1]) { for p in 0..<plane { sum += values[(bc * frames + f) * plane + p] } }
        return sum / Float(s[0] * s[1] * plane)
    }
}

/// The fixture's stand-in network: v = W_y·x (channels) + κ_y·mean over frames(x) + (t/1000)·b_y + (f/F)·ramp_y.
private struct FakeVPredictor {
    let w: [Bool: [Float]], kappa: [Bool: Float], b: [Bool: [Float]], ramp: [Bool: [Float]]

    init(_ f: CheckpointFile, _ run: String) throws {
        var w: [Bool: [Float]] = [:], kappa: [Bool: Float] = [:], b: [Bool: [Float]] = [:], ramp: [Bool: [Float]] = [:]
        for (conditional, tag) in [(true, "pos"), (false, "neg")] {
            w[conditional] = try f.tensor("\(run).W_\(tag)").scalars
            kappa[conditional] = try f.tensor("\(run).kappa_\(tag)").scalars[0]
            b[conditional] = try f.tensor("\(run).b_\(tag)").scalars
            ramp[conditional] = try f.tensor("\(run).ramp_\(tag)").scalars
        }
        (self.w, self.kappa, self.b, self.ramp) = (w, kappa, b, ramp)
    }

    func callAsFunction(_ x: Tensor, _ t: Int, _ conditional: Bool) throws -> Tensor {
        let s = x.shape, channels = s[1], frames = s[2], plane = s[3] * s[4]
        let xs = x.scalars, w = w[conditional]!, kappa = kappa[conditional]!, b = b[conditional]!, ramp = ramp[conditional]!
        var out = [Float](repeating: 0, count: xs.count)
        for batch in 0..<s[0] {
            let base = batch * channels * frames * plane
            for o in 0..<channels {
                var mean = [Float](repeating: 0, count: plane)
                for f in 0..<frames { for p in 0..<plane { mean[p] += xs[base + (o * frames + f) * plane + p] } }
                for p in 0..<plane { mean[p] /= Float(frames) }
                for f in 0..<frames {
                    for p in 0..<plane {
                        var v: Float = 0
                        for c in 0..<channels { v += w[o * channels + c] * xs[base + (c * frames + f) * plane + p] }
                        v += kappa * mean[p]
                        v += Float(t) / 1000 * b[o]
                        v += Float(f) / Float(frames) * ramp[o]
                        out[base + (o * frames + f) * plane + p] = v
                    }
                }
            }
        }
        return Tensor(shape: s, data: out)
    }
}
