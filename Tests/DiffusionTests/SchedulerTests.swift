import Foundation
import Testing
import LapseTensor
import DiffusionPlugin

/// One diffusers run recorded by Tools/fixtures/diffusion.py.
struct SchedulerCase: Decodable, CustomTestStringConvertible {
    let kind: String
    let name: String
    let config: SchedulerConfig
    let steps: Int
    let noise_seed: UInt64
    let shape: [Int]
    let eta: Float
    let timesteps: [Float]
    let init_noise_sigma: Float
    let sigmas: [Float]?
    let alphas_cumprod: [Float]
    let sample: [Float]
    let model_outputs: [[Float]]
    let scaled_inputs: [[Float]]
    let outputs: [[Float]]
    let noises: [[Float]]
    let add_noise_index: Int?
    let add_noise: [Float]?

    var testDescription: String { name }

    static let all: [SchedulerCase] = {
        struct File: Decodable { let cases: [SchedulerCase] }
        guard let data = try? Data(contentsOf: DiffusionFixtures.url("schedulers.json")),
              let file = try? JSONDecoder().decode(File.self, from: data) else { return [] }
        return file.cases
    }()

    func makeScheduler() throws -> any DiffusionScheduler {
        let kind = try #require(SchedulerKind(rawValue: kind))
        return try kind.make(config: config, steps: steps, eta: eta)
    }
}

/// Norm-relative error max|a − b| / max|b|: the measure the ≤ 1e-5 parity bound is stated in.
func normRelativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "sizes differ: \(a.count) vs \(b.count)")
    let scale = max(b.map(abs).max() ?? 0, 1e-12)
    return zip(a, b).map { abs($0 - $1) }.max().map { $0 / scale } ?? 0
}

/// Parity of the DDIM, Euler, Euler-ancestral and DPM++ 2M schedulers with diffusers.
@Suite struct SchedulerTests {
    @Test func fixtureLoaded() {
        #expect(SchedulerCase.all.count == 16, "schedulers.json missing or unreadable")
    }

    @Test func magicTimeDDIM25StepsRunFrom961To1() throws {
        let ddim = try DDIMScheduler(config: .magicTime, steps: 25)
        #expect(ddim.integerTimesteps == Array(stride(from: 961, through: 1, by: -40)))
        #expect(ddim.integerTimesteps.first == 961 && ddim.integerTimesteps.last == 1)
        struct File: Decodable { let magictime_ddim_25: [Int] }
        let file = try JSONDecoder().decode(File.self, from: Data(contentsOf: DiffusionFixtures.url("schedulers.json")))
        #expect(ddim.integerTimesteps == file.magictime_ddim_25)
    }

    @Test(arguments: SchedulerCase.all)
    func scheduleMatchesDiffusers(_ c: SchedulerCase) throws {
        let scheduler = try c.makeScheduler()
        #expect(scheduler.timesteps == c.timesteps)
        #expect(abs(scheduler.initNoiseSigma - c.init_noise_sigma) <= 1e-5 * c.init_noise_sigma)
        let schedule = NoiseSchedule(c.config)
        #expect(normRelativeError(schedule.alphasCumprod, c.alphas_cumprod) <= 1e-6)
        if let expected = c.sigmas {
            let sigmas: [Float]
            switch scheduler {
            case let s as EulerDiscreteScheduler: sigmas = s.sigmas
            case let s as EulerAncestralDiscreteScheduler: sigmas = s.sigmas
            case let s as DPMSolverMultistepScheduler: sigmas = s.sigmas
            default: Issue.record("unexpected scheduler \(type(of: scheduler))"); return
            }
            #expect(sigmas.count == expected.count)
            #expect(normRelativeError(sigmas, expected) <= 1e-5, "sigmas \(sigmas.prefix(4)) vs \(expected.prefix(4))")
        }
    }

    /// Runs every step on the recorded model outputs, feeding back our own samples; noise comes from the fixture
    /// (explicit) or from a TorchGenerator seeded like diffusers' `torch.Generator().manual_seed(s)`.
    @Test(arguments: SchedulerCase.all, [false, true])
    func stepsMatchDiffusers(_ c: SchedulerCase, generatorNoise: Bool) throws {
        var scheduler = try c.makeScheduler()
        let generator = TorchGenerator(seed: c.noise_seed)
        var x = Tensor(shape: c.shape, data: c.sample)
        var noiseIndex = 0
        var worst: Float = 0
        for i in 0..<c.timesteps.count {
            let scaled = try scheduler.scaleModelInput(x, stepIndex: i)
            // The fixture stores scaled inputs for Euler schedulers only; the others must not scale.
            worst = max(worst, normRelativeError(scaled.scalars, c.scaled_inputs.isEmpty ? x.scalars : c.scaled_inputs[i]))
            let m = Tensor(shape: c.shape, data: c.model_outputs[i])
            if generatorNoise {
                x = try scheduler.step(modelOutput: m, stepIndex: i, sample: x, generator: generator)
            } else {
                var noise: Tensor?
                if scheduler.usesNoise {
                    noise = Tensor(shape: c.shape, data: c.noises[noiseIndex])
                    noiseIndex += 1
                }
                x = try scheduler.step(modelOutput: m, stepIndex: i, sample: x, noise: noise)
            }
            let err = normRelativeError(x.scalars, c.outputs[i])
            worst = max(worst, err)
            #expect(err <= 1e-5, "\(c.name) step \(i) (t=\(c.timesteps[i])): relative error \(err)")
        }
        #expect(noiseIndex == (generatorNoise ? 0 : c.noises.count))
        #expect(worst <= 1e-5)
    }

    @Test(arguments: SchedulerCase.all.filter { $0.add_noise != nil })
    func addNoiseMatchesDiffusers(_ c: SchedulerCase) throws {
        let scheduler = try c.makeScheduler()
        let noisy = try scheduler.addNoise(to: Tensor(shape: c.shape, data: c.sample),
                                           noise: Tensor(shape: c.shape, data: c.model_outputs[0]),
                                           stepIndex: try #require(c.add_noise_index))
        #expect(normRelativeError(noisy.scalars, try #require(c.add_noise)) <= 1e-5)
    }

    @Test func rejectsBadUse() throws {
        #expect(throws: DiffusionError.self) { try DDIMScheduler(config: .magicTime, steps: 0) }
        #expect(throws: DiffusionError.self) { try DDIMScheduler(config: .magicTime, steps: 10, eta: -1) }
        var bad = SchedulerConfig()
        bad.solverOrder = 3
        #expect(throws: DiffusionError.self) { try DPMSolverMultistepScheduler(config: bad, steps: 10) }
        var ddim = try DDIMScheduler(config: .magicTime, steps: 5, eta: 0.5)
        let x = Tensor(zeros: [1, 4, 2, 2])
        #expect(throws: DiffusionError.self) { try ddim.step(modelOutput: x, stepIndex: 0, sample: x, noise: nil) }
        #expect(throws: DiffusionError.self) { try ddim.step(modelOutput: x, stepIndex: 5, sample: x, noise: x) }
        var dpm = try DPMSolverMultistepScheduler(config: SchedulerConfig(), steps: 5)
        _ = try dpm.step(modelOutput: x, stepIndex: 0, sample: x, noise: nil)
        #expect(throws: DiffusionError.self) { try dpm.step(modelOutput: x, stepIndex: 2, sample: x, noise: nil) }
    }

    @Test func configDecodesDiffusersJSON() throws {
        let json = #"{"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear","#
            + #" "steps_offset": 1, "clip_sample": false, "set_alpha_to_one": true}"#
        let config = try JSONDecoder().decode(SchedulerConfig.self, from: Data(json.utf8))
        #expect(config == .magicTime)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(SchedulerConfig.self, from: Data(#"{"beta_schedule": "cosine"}"#.utf8))
        }
        for unsupported in [#"{"use_karras_sigmas": true}"#, #"{"algorithm_type": "sde-dpmsolver++"}"#,
                            #"{"trained_betas": [0.1, 0.2]}"#, #"{"thresholding": true}"#] {
            #expect(throws: DiffusionError.self) {
                try JSONDecoder().decode(SchedulerConfig.self, from: Data(unsupported.utf8))
            }
        }
        #expect(SchedulerKind.startIndex(steps: 25, denoise: 1) == 0)
        #expect(SchedulerKind.startIndex(steps: 25, denoise: 0.6) == 10)
    }
}
