import Foundation
import Testing
import LapseGraph
import LapseTensor
import LapseTestSupport
import DiffusionPlugin

/// One `Kind.from_config(config)` run recorded by Tools/fixtures/scheduler_config.py.
struct SchedulerConfigCase: Decodable, CustomTestStringConvertible {
    /// The fields of diffusers' effective config that a `SchedulerConfig` holds.
    struct Effective: Decodable {
        let num_train_timesteps: Int
        let beta_start: Double
        let beta_end: Double
        let beta_schedule: String
        let steps_offset: Int
        let timestep_spacing: String
        let prediction_type: String
        let clip_sample: Bool?
        let set_alpha_to_one: Bool?
        let solver_order: Int?
    }

    let config: String
    let kind: String
    let steps: Int
    let eta: Float
    let noise_seed: UInt64
    let shape: [Int]
    let effective_config: Effective
    let timesteps: [Float]
    let init_noise_sigma: Float
    let sigmas: [Float]?
    let sample: [Float]
    let model_outputs: [[Float]]
    let outputs: [[Float]]

    var testDescription: String { "\(kind).from_config(\(config)), \(steps) steps, eta \(eta)" }

    static let all: [SchedulerConfigCase] = {
        struct File: Decodable { let cases: [SchedulerConfigCase] }
        guard let data = try? Data(contentsOf: DiffusionFixtures.url("scheduler_config_cases.json")),
              let file = try? JSONDecoder().decode(File.self, from: data) else { return [] }
        return file.cases
    }()

    static func path(_ config: String) -> String {
        DiffusionFixtures.url("scheduler_config/\(config)/scheduler_config.json").path
    }
}

/// `Kind.from_config` parity with diffusers 0.27.2, the `scheduler_config` / `beta_schedule = auto` parameters of
/// `Sample`, and the errors a bad config gives.
@Suite(.serialized) struct SchedulerConfigTests {
    @Test func fixtureLoaded() {
        #expect(SchedulerConfigCase.all.count == 11, "scheduler_config_cases.json missing or unreadable")
    }

    @Test(arguments: SchedulerConfigCase.all)
    func fromConfigTakesTheFileKeysAndTheKindsDefaults(_ c: SchedulerConfigCase) throws {
        let kind = try #require(SchedulerKind(rawValue: c.kind))
        let config = try SchedulerConfigFile.read(SchedulerConfigCase.path(c.config)).schedulerConfig(for: kind)
        let e = c.effective_config
        #expect(config.numTrainTimesteps == e.num_train_timesteps)
        #expect(config.betaStart == e.beta_start && config.betaEnd == e.beta_end)
        #expect(config.betaSchedule.rawValue == e.beta_schedule)
        #expect(config.stepsOffset == e.steps_offset)
        #expect(config.timestepSpacing?.rawValue == e.timestep_spacing)
        #expect(config.predictionType.rawValue == e.prediction_type)
        if let clip = e.clip_sample { #expect(config.clipSample == clip) }
        if let one = e.set_alpha_to_one { #expect(config.setAlphaToOne == one) }
        if let order = e.solver_order { #expect(config.solverOrder == order) }
    }

    @Test(arguments: SchedulerConfigCase.all)
    func fromConfigSchedulesStepLikeDiffusers(_ c: SchedulerConfigCase) throws {
        let kind = try #require(SchedulerKind(rawValue: c.kind))
        let config = try SchedulerConfigFile.read(SchedulerConfigCase.path(c.config)).schedulerConfig(for: kind)
        var scheduler = try kind.make(config: config, steps: c.steps, eta: c.eta)
        #expect(scheduler.timesteps == c.timesteps)
        #expect(abs(scheduler.initNoiseSigma - c.init_noise_sigma) <= 1e-6 * max(1, c.init_noise_sigma))
        let sigmas = (scheduler as? EulerDiscreteScheduler)?.sigmas ?? (scheduler as? EulerAncestralDiscreteScheduler)?.sigmas
            ?? (scheduler as? DPMSolverMultistepScheduler)?.sigmas
        if let expected = c.sigmas, let sigmas { #expect(normRelativeError(sigmas, expected) <= 1e-6) }
        let generator = TorchGenerator(seed: c.noise_seed)
        var x = Tensor(shape: c.shape, data: c.sample)
        var worst: Float = 0
        for (i, m) in c.model_outputs.enumerated() {
            x = try scheduler.step(modelOutput: Tensor(shape: c.shape, data: m), stepIndex: i, sample: x, generator: generator)
            worst = max(worst, normRelativeError(x.scalars, c.outputs[i]))
        }
        #expect(worst <= 1e-5, "\(c.testDescription): \(worst)")
        print("\(c.testDescription): max error relative to the output's max magnitude \(worst)")
    }

    @Test func streamingT2VStage1IsDPMSolverWithItsOwnDefaultsFromModelScopesDDIMConfig() throws {
        let file = try SchedulerConfigFile.read(SchedulerConfigCase.path("modelscope"))
        #expect(file.className == "DDIMScheduler")
        let dpm = try file.schedulerConfig(for: .dpmpp2m)
        #expect(dpm.timestepSpacing == .linspace && dpm.solverOrder == 2 && dpm.lowerOrderFinal)
        #expect(dpm.betaSchedule == .scaledLinear && dpm.stepsOffset == 1)
        let ddim = try file.schedulerConfig(for: .ddim)
        #expect(ddim.timestepSpacing == .leading && !ddim.setAlphaToOne && !ddim.clipSample)
        // A DPM config read for DDIM: DDIM's own clip_sample / set_alpha_to_one defaults (true), the file's spacing.
        let saved = try SchedulerConfigFile.read(SchedulerConfigCase.path("dpm_saved")).schedulerConfig(for: .ddim)
        #expect(saved.clipSample && saved.setAlphaToOne && saved.timestepSpacing == .leading && saved.predictionType == .vPrediction)
    }

    // MARK: - magictime

    @Test func magictimeKeywordIsTheBuiltInMagicTimeConfigForEveryKind() throws {
        struct File: Decodable { let magictime_ddim_25: [Int] }
        let file = try JSONDecoder().decode(File.self, from: Data(contentsOf: DiffusionFixtures.url("schedulers.json")))
        let ddim = try DDIMScheduler(config: SchedulerConfigFile.magicTime.schedulerConfig(for: .ddim), steps: 25)
        #expect(ddim.integerTimesteps == file.magictime_ddim_25)
        // What Sample ran before scheduler_config existed: SchedulerConfig.magicTime for every kind.
        let x = TorchGenerator(seed: 9).randn([1, 4, 2, 3, 3]), eps = TorchGenerator(seed: 10).randn([1, 4, 2, 3, 3])
        for kind in SchedulerKind.allCases {
            var old = try kind.make(config: .magicTime, steps: 7, eta: 0.3)
            var new = try kind.make(config: SchedulerConfigFile.magicTime.schedulerConfig(for: kind), steps: 7, eta: 0.3)
            #expect(old.timesteps == new.timesteps && old.initNoiseSigma == new.initNoiseSigma, "\(kind)")
            var a = x, b = x
            for i in 0..<3 {
                a = try old.step(modelOutput: eps, stepIndex: i, sample: a, generator: TorchGenerator(seed: UInt64(i)))
                b = try new.step(modelOutput: eps, stepIndex: i, sample: b, generator: TorchGenerator(seed: UInt64(i)))
            }
            #expect(a.scalars == b.scalars, "\(kind)")
        }
    }

    static func sampled(_ unet: UNetValue, _ params: [String: Value], scheduler: String = "ddim") throws -> [Float] {
        var values = NodesTests.sampleInputs(unet: unet, latent: Tensor(zeros: [1, 4, 1, 8, 8]), steps: 2, scheduler: scheduler).values
        values["beta_schedule"] = .string("auto")  // the default; scheduler_config is left out unless given
        for (k, v) in params { values[k] = v }
        let out = try Sample().run(NodeInputs(values), context: TestNodeContext())
        return try NodeInputs(out.values).get("latent", .latent).tensor.scalars
    }

    @Test func sampleAutoIsMagicTimeForAUNetWithoutFolderConfig() throws {
        let unet = try NodesTests.shared.get().unet
        #expect(unet.schedulerConfig == nil)
        for kind in ["ddim", "dpmpp_2m"] {
            let auto = try Self.sampled(unet, ["scheduler_config": .string("auto"), "beta_schedule": .string("auto")], scheduler: kind)
            let defaults = try Self.sampled(unet, [:], scheduler: kind)
            let magic = try Self.sampled(unet, ["scheduler_config": .string("magictime"), "beta_schedule": .string("auto")], scheduler: kind)
            // graphs/magictime.json's explicit setting, as before the parameter existed.
            let before = try Self.sampled(unet, ["beta_schedule": .string("linear")], scheduler: kind)
            // Equal up to summation order: when other tests run at the same time, OpenBLAS may split a GEMM over a
            // different number of threads, which moves results by ~1e-5. Another schedule moves them by far more.
            let worst = [auto, defaults, before].map { zip($0, magic).map { abs($0 - $1) }.max() ?? 0 }.max() ?? 0
            #expect(worst <= 1e-4, "\(kind): max abs difference \(worst)")
        }
    }

    @Test func sampleAutoUsesTheUNetsFolderConfigAndExplicitParamsOverrideIt() throws {
        var unet = try NodesTests.shared.get().unet
        let path = SchedulerConfigCase.path("modelscope")
        unet.schedulerConfig = try SchedulerConfigFile.read(path)
        let auto = try Self.sampled(unet, ["scheduler_config": .string("auto")])
        let byPath = try Self.sampled(unet, ["scheduler_config": .string(path)])
        let magic = try Self.sampled(unet, ["scheduler_config": .string("magictime")])
        #expect(auto == byPath)
        #expect(auto != magic)
        // beta_schedule other than auto wins over the file's scaled_linear.
        let linear = try Self.sampled(unet, ["scheduler_config": .string("auto"), "beta_schedule": .string("linear")])
        #expect(linear != auto)
        // A UNet value keeps its config through ApplyLoRA.
        let lora = try LoRAFile.load(LoRAFixtures.path("lora_kohya_diffusers.safetensors"), format: .kohya)
        var tiny = try LoRAFixtures.unetValue()
        tiny.schedulerConfig = unet.schedulerConfig
        let (merged, _) = try LoRAMerge.apply(lora, to: tiny, strength: 0.5)
        #expect(merged.schedulerConfig?.source == path)
    }

    // MARK: - Errors

    static func write(_ json: String) throws -> String {
        let dir = try TestSupport.makeTemporaryDirectory()
        let path = dir.appendingPathComponent("scheduler_config.json").path
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return error.localizedDescription }
        return "no error"
    }

    @Test func badFilesNameTheFileTheKeyAndTheProblem() throws {
        let cases: [(String, [String])] = [
            (#"{"num_train_timesteps": 1000,\#n "beta_schedule": "cosine"}"#, ["beta_schedule", "cosine", "line 2"]),
            (#"{"steps_offset": "1"}"#, ["steps_offset", "expected an integer", "\"1\""]),
            (#"{"clip_sample": 0}"#, ["clip_sample", "true or false"]),
            (#"{"beta_start": 0.1, "beta_end": 0.01}"#, ["beta_start/beta_end"]),
            (#"{"trained_betas": [0.1, 0.2]}"#, ["trained_betas", "not supported"]),
            (#"{"beta_start": 0.1,"#, ["invalid JSON"]),
            ("[1, 2]", ["JSON object"]),
        ]
        for (json, parts) in cases {
            let path = try Self.write(json)
            let text = Self.message { _ = try SchedulerConfigFile.read(path).schedulerConfig(for: .ddim) }
            #expect(text.contains(path), "\(json): \(text)")
            for part in parts { #expect(text.contains(part), "\(json): \(text)") }
        }
        let missing = Self.message { _ = try SchedulerConfigFile.read("/nonexistent/scheduler_config.json") }
        #expect(missing.contains("/nonexistent/scheduler_config.json"), "\(missing)")
    }

    @Test func unsupportedOptionsAreRefusedOnlyByTheKindsThatReadThem() throws {
        let karras = try SchedulerConfigFile.read(try Self.write(#"{"use_karras_sigmas": true, "algorithm_type": "sde-dpmsolver++"}"#))
        _ = try karras.schedulerConfig(for: .ddim)  // not DDIM options: diffusers drops them
        _ = try karras.schedulerConfig(for: .eulerAncestral)
        let dpm = Self.message { _ = try karras.schedulerConfig(for: .dpmpp2m) }
        #expect(dpm.contains("use_karras_sigmas") || dpm.contains("algorithm_type"), "\(dpm)")
        let euler = Self.message { _ = try karras.schedulerConfig(for: .euler) }
        #expect(euler.contains("use_karras_sigmas") && euler.contains("not supported"), "\(euler)")
        // diffusers' own aliases and no-op settings are accepted.
        let aliases = try SchedulerConfigFile.read(try Self.write(
            #"{"algorithm_type": "deis", "solver_type": "bh2", "euler_at_final": true, "lambda_min_clipped": -5.1, "beta_schedule": "scaled_linear"}"#))
        _ = try aliases.schedulerConfig(for: .dpmpp2m)
        let clipping = try SchedulerConfigFile.read(try Self.write(#"{"lambda_min_clipped": 0}"#))
        #expect(Self.message { _ = try clipping.schedulerConfig(for: .dpmpp2m) }.contains("lambda_min_clipped"))
        #expect(throws: DiffusionError.self) {
            try SchedulerConfigFile.read(try Self.write(#"{"solver_order": 3}"#)).schedulerConfig(for: .dpmpp2m)
        }
        // Keys diffusers marks as defaults when it saves are not taken from the file.
        let defaults = try SchedulerConfigFile.read(try Self.write(
            #"{"timestep_spacing": "leading", "_use_default_values": ["timestep_spacing"]}"#))
        #expect(try defaults.schedulerConfig(for: .dpmpp2m).timestepSpacing == .linspace)
    }

    @Test func sampleNamesAMissingOrBadConfigFile() throws {
        let unet = try NodesTests.shared.get().unet
        let missing = Self.message { _ = try Self.sampled(unet, ["scheduler_config": .string("/nonexistent/sched.json")]) }
        #expect(missing.contains("/nonexistent/sched.json"), "\(missing)")
        let bad = try Self.write(#"{"prediction_type": "flow"}"#)
        let text = Self.message { _ = try Self.sampled(unet, ["scheduler_config": .string(bad)]) }
        #expect(text.contains(bad) && text.contains("prediction_type") && text.contains("flow"), "\(text)")
    }

    @Test func validationChecksConfigPathsButNotTheKeywords() throws {
        let paths = try MagicTimeTinyModels.write()
        defer { try? FileManager.default.removeItem(at: paths.directory) }
        let registry = try MagicTimeTinyModels.registry()
        let data = try Data(contentsOf: DiffusionFixtures.repoRoot.appendingPathComponent("graphs/magictime.json"))
        let base = try MagicTimeTinyModels.overrides(paths, output: paths.directory.appendingPathComponent("o.mp4").path)
        for value in ["auto", "magictime", SchedulerConfigCase.path("modelscope"), "missing-scheduler.json"] {
            let result = GraphValidator(registry: registry, baseDirectory: DiffusionFixtures.repoRoot)
                .validate(data: data, name: "magictime.json", overrides: base + [try ParamOverride.parse("sample.scheduler_config=\(value)")])
            switch result {
            case .success: #expect(value != "missing-scheduler.json")
            case .failure(let failure):
                #expect(value == "missing-scheduler.json", "\(value): \(failure)")
                #expect("\(failure)".contains("input file not found") && "\(failure)".contains("scheduler_config"), "\(failure)")
            }
        }
    }
}
