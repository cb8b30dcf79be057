import Foundation
import LapseTensor

/// How the training betas grow over the diffusion timesteps.
public enum BetaSchedule: String, Codable, Sendable, CaseIterable {
    /// Betas evenly spaced from `betaStart` to `betaEnd` (MagicTime's DDIM config).
    case linear
    /// Square roots evenly spaced, then squared (the Stable Diffusion 1.5 training schedule).
    case scaledLinear = "scaled_linear"
}

/// How the inference timesteps are picked among the training timesteps (diffusers' `timestep_spacing`).
public enum TimestepSpacing: String, Codable, Sendable, CaseIterable {
    /// `arange(n) * (T / n)` reversed, plus `steps_offset` (DDIM's default; SD1.5/AnimateDiff configs).
    case leading
    /// `linspace(0, T - 1, n)` reversed.
    case linspace
    /// `arange(T, 0, -T / n)` rounded, minus 1.
    case trailing
}

/// What the denoising network predicts.
public enum PredictionType: String, Codable, Sendable, CaseIterable {
    /// The added noise ε (SD1.5, AnimateDiff, MagicTime).
    case epsilon
    /// The velocity v = α·ε − σ·x₀ (SD2-v style models).
    case vPrediction = "v_prediction"
    /// The clean sample x₀ directly.
    case sample
}

/// Scheduler settings, decoded from a diffusers `scheduler_config.json` (keys as diffusers writes them).
///
/// Missing keys take the Stable Diffusion 1.5 values (betas 0.00085…0.012 `scaled_linear`, `steps_offset` 1,
/// `clip_sample` false, `set_alpha_to_one` false); `timestep_spacing` left unset means each scheduler's diffusers
/// default (`leading` for DDIM, `linspace` for the others).
public struct SchedulerConfig: Codable, Sendable, Equatable {
    /// Number of training timesteps T.
    public var numTrainTimesteps: Int = 1000
    /// First training beta.
    public var betaStart: Double = 0.00085
    /// Last training beta.
    public var betaEnd: Double = 0.012
    /// Shape of the beta curve.
    public var betaSchedule: BetaSchedule = .scaledLinear
    /// Added to `leading` timesteps (1 in SD configs, so the last step is t = 1).
    public var stepsOffset: Int = 1
    /// Inference timestep spacing; nil = the scheduler's diffusers default.
    public var timestepSpacing: TimestepSpacing?
    /// What the network predicts.
    public var predictionType: PredictionType = .epsilon
    /// DDIM: use ᾱ = 1 for the step after the last (true) or ᾱ₀ (false).
    public var setAlphaToOne: Bool = false
    /// DDIM: clamp the predicted x₀ to ±`clipSampleRange`.
    public var clipSample: Bool = false
    /// DDIM: the clamp bound when `clipSample` is set.
    public var clipSampleRange: Double = 1.0
    /// DPM-Solver: multistep order (1 or 2).
    public var solverOrder: Int = 2
    /// DPM-Solver: drop to lower order for the last steps when there are fewer than 15.
    public var lowerOrderFinal: Bool = true

    /// The Stable Diffusion 1.5 configuration.
    public init() {}

    /// MagicTime's DDIM configuration: betas 0.00085…0.012 `linear`, `steps_offset` 1, `clip_sample` false,
    /// `set_alpha_to_one` true.
    public static let magicTime: SchedulerConfig = {
        var c = SchedulerConfig()
        c.betaSchedule = .linear
        c.setAlphaToOne = true
        return c
    }()

    enum CodingKeys: String, CodingKey {
        case numTrainTimesteps = "num_train_timesteps", betaStart = "beta_start", betaEnd = "beta_end"
        case betaSchedule = "beta_schedule", stepsOffset = "steps_offset", timestepSpacing = "timestep_spacing"
        case predictionType = "prediction_type", setAlphaToOne = "set_alpha_to_one", clipSample = "clip_sample"
        case clipSampleRange = "clip_sample_range", solverOrder = "solver_order", lowerOrderFinal = "lower_order_final"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = SchedulerConfig()
        numTrainTimesteps = try c.decodeIfPresent(Int.self, forKey: .numTrainTimesteps) ?? d.numTrainTimesteps
        betaStart = try c.decodeIfPresent(Double.self, forKey: .betaStart) ?? d.betaStart
        betaEnd = try c.decodeIfPresent(Double.self, forKey: .betaEnd) ?? d.betaEnd
        betaSchedule = try c.decodeIfPresent(BetaSchedule.self, forKey: .betaSchedule) ?? d.betaSchedule
        stepsOffset = try c.decodeIfPresent(Int.self, forKey: .stepsOffset) ?? d.stepsOffset
        timestepSpacing = try c.decodeIfPresent(TimestepSpacing.self, forKey: .timestepSpacing)
        predictionType = try c.decodeIfPresent(PredictionType.self, forKey: .predictionType) ?? d.predictionType
        setAlphaToOne = try c.decodeIfPresent(Bool.self, forKey: .setAlphaToOne) ?? d.setAlphaToOne
        clipSample = try c.decodeIfPresent(Bool.self, forKey: .clipSample) ?? d.clipSample
        clipSampleRange = try c.decodeIfPresent(Double.self, forKey: .clipSampleRange) ?? d.clipSampleRange
        solverOrder = try c.decodeIfPresent(Int.self, forKey: .solverOrder) ?? d.solverOrder
        lowerOrderFinal = try c.decodeIfPresent(Bool.self, forKey: .lowerOrderFinal) ?? d.lowerOrderFinal
        try SchedulerConfig.rejectUnsupportedOptions(try decoder.container(keyedBy: AnyKey.self))
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// diffusers options that change the schedule or the update but are not implemented here: refusing them
    /// beats silently sampling with a different scheduler than the config describes.
    private static func rejectUnsupportedOptions(_ c: KeyedDecodingContainer<AnyKey>) throws {
        func fail(_ key: String, _ value: String, _ supported: String) -> DiffusionError {
            .badConfig(component: "scheduler config", field: key, reason: "\(value) is not supported (only \(supported))")
        }
        for key in ["thresholding", "rescale_betas_zero_snr", "use_karras_sigmas", "use_exponential_sigmas",
                    "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas", "euler_at_final", "use_dynamic_shifting"] {
            if let value = try? c.decodeIfPresent(Bool.self, forKey: AnyKey(stringValue: key)), value {
                throw fail(key, "true", "false")
            }
        }
        let required = ["algorithm_type": "dpmsolver++", "solver_type": "midpoint", "final_sigmas_type": "zero",
                        "interpolation_type": "linear", "timestep_type": "discrete"]
        for (key, expected) in required.sorted(by: { $0.key < $1.key }) {
            if let value = try? c.decodeIfPresent(String.self, forKey: AnyKey(stringValue: key)), value != expected {
                throw fail(key, "\"\(value)\"", "\"\(expected)\"")
            }
        }
        for key in ["trained_betas", "variance_type", "sigma_min", "sigma_max"] {
            let k = AnyKey(stringValue: key)
            if c.contains(k), !((try? c.decodeNil(forKey: k)) ?? false) { throw fail(key, "a value", "null") }
        }
    }

    /// Checks ranges a scheduler relies on.
    func validate(_ scheduler: String, steps: Int) throws {
        guard numTrainTimesteps >= 2 else {
            throw DiffusionError.badConfig(component: scheduler, field: "num_train_timesteps", reason: "\(numTrainTimesteps) < 2")
        }
        guard betaStart > 0, betaEnd >= betaStart, betaEnd < 1 else {
            throw DiffusionError.badConfig(component: scheduler, field: "beta_start/beta_end",
                                           reason: "need 0 < beta_start <= beta_end < 1, got \(betaStart)…\(betaEnd)")
        }
        guard steps >= 1, steps <= numTrainTimesteps else {
            throw DiffusionError.badConfig(component: scheduler, field: "steps",
                                           reason: "\(steps) not in 1…\(numTrainTimesteps)")
        }
    }
}

/// The training noise schedule: betas and their cumulative products ᾱ, computed in float32 as diffusers does.
public struct NoiseSchedule: Sendable {
    /// β per training timestep.
    public let betas: [Float]
    /// ᾱ_t = Π(1 − β) per training timestep.
    public let alphasCumprod: [Float]

    /// Builds the schedule of `config`.
    public init(_ config: SchedulerConfig) {
        let n = config.numTrainTimesteps
        switch config.betaSchedule {
        case .linear:
            betas = NoiseSchedule.torchLinspace(Float(config.betaStart), Float(config.betaEnd), n)
        case .scaledLinear:
            betas = NoiseSchedule.torchLinspace(Float(config.betaStart.squareRoot()), Float(config.betaEnd.squareRoot()), n)
                .map { $0 * $0 }
        }
        // torch.cumprod on CPU accumulates float32 inputs in double and rounds each output.
        var product = 1.0
        alphasCumprod = betas.map { beta in
            product *= Double(1 - beta)
            return Float(product)
        }
    }

    /// `torch.linspace(start, end, n, dtype=float32)`: float arithmetic from the start for the first half and
    /// from the end for the second, so both endpoints are exact.
    static func torchLinspace(_ start: Float, _ end: Float, _ n: Int) -> [Float] {
        guard n > 1 else { return [start] }
        let step = (end - start) / Float(n - 1)
        let half = n / 2
        return (0..<n).map { i in i < half ? start + step * Float(i) : end - step * Float(n - 1 - i) }
    }

    /// Karras-style σ = √((1 − ᾱ)/ᾱ) per training timestep, in float32 as the Euler/DPM schedulers compute it.
    public var sigmas: [Float] {
        alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
    }

    /// `np.interp(t, arange(T), sigmas)` in double, rounded to float32.
    static func interpolate(_ table: [Float], at t: Double) -> Float {
        if t <= 0 { return table[0] }
        if t >= Double(table.count - 1) { return table[table.count - 1] }
        let j = Int(t.rounded(.down))
        let lo = Double(table[j]), hi = Double(table[j + 1])
        return Float((hi - lo) * (t - Double(j)) + lo)
    }
}

/// A denoising scheduler: the timesteps to evaluate the network at and the update from one to the next.
///
/// Steps are addressed by index into `timesteps` (not by timestep value), and must be taken in order; multistep
/// schedulers keep history between calls.
public protocol DiffusionScheduler {
    /// Timesteps to pass to the network, one per step, highest noise first.
    var timesteps: [Float] { get }
    /// Factor to scale unit-variance initial noise by (σ_max-related for Euler schedulers, 1 otherwise).
    var initNoiseSigma: Float { get }
    /// Whether `step` consumes random noise (ancestral sampling, DDIM with η > 0).
    var usesNoise: Bool { get }
    /// The network input for step `stepIndex` (identity except for Euler schedulers, which divide by √(σ²+1)).
    func scaleModelInput(_ sample: Tensor, stepIndex: Int) throws -> Tensor
    /// The sample after step `stepIndex`, given the network's output there; `noise` (shape of the sample) is
    /// required when `usesNoise`.
    mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, noise: Tensor?) throws -> Tensor
    /// `original` noised to the level of step `stepIndex` (image-to-image / partial `denoise`).
    func addNoise(to original: Tensor, noise: Tensor, stepIndex: Int) throws -> Tensor
}

extension DiffusionScheduler {
    /// `step` drawing its noise (when needed) from `generator` with `randn(sample shape)`, as diffusers'
    /// `randn_tensor(shape, generator=…)` does on the CPU.
    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor,
                              generator: TorchGenerator?) throws -> Tensor {
        var noise: Tensor?
        if usesNoise {
            guard let generator else {
                throw DiffusionError.schedulerState(scheduler: "\(Self.self)", reason: "this configuration samples noise; pass a generator")
            }
            noise = generator.randn(modelOutput.shape)
        }
        return try step(modelOutput: modelOutput, stepIndex: stepIndex, sample: sample, noise: noise)
    }
}

/// The sampler choices of the `Sample` node.
public enum SchedulerKind: String, Codable, Sendable, CaseIterable {
    case ddim
    case euler
    case eulerAncestral = "euler_ancestral"
    case dpmpp2m = "dpmpp_2m"

    /// A scheduler of this kind set up for `steps` inference steps; `eta` is used by DDIM only.
    public func make(config: SchedulerConfig, steps: Int, eta: Float = 0) throws -> any DiffusionScheduler {
        switch self {
        case .ddim: return try DDIMScheduler(config: config, steps: steps, eta: eta)
        case .euler: return try EulerDiscreteScheduler(config: config, steps: steps)
        case .eulerAncestral: return try EulerAncestralDiscreteScheduler(config: config, steps: steps)
        case .dpmpp2m: return try DPMSolverMultistepScheduler(config: config, steps: steps)
        }
    }

    /// The first step index when only a fraction `denoise` (0…1) of the schedule is run, as diffusers'
    /// image-to-image pipelines pick it: `steps − min(Int(steps · denoise), steps)`.
    public static func startIndex(steps: Int, denoise: Double) -> Int {
        let initSteps = min(Int(Double(steps) * denoise), steps)
        return max(steps - initSteps, 0)
    }
}

// MARK: - Timestep spacing shared by the schedulers

enum Spacing {
    /// NumPy's `round` (half to even).
    static func npRound(_ x: Double) -> Double { x.rounded(.toNearestOrEven) }

    /// `np.linspace(start, stop, n)` in double (start + k·step, exact last value).
    static func linspace(_ start: Double, _ stop: Double, _ n: Int) -> [Double] {
        guard n > 1 else { return n == 1 ? [start] : [] }
        let step = (stop - start) / Double(n - 1)
        var v = (0..<n).map { start + Double($0) * step }
        v[n - 1] = stop
        return v
    }

    /// `np.arange(start, stop, step)` for a negative float step.
    static func arangeDown(_ start: Double, _ stop: Double, _ step: Double) -> [Double] {
        let count = Int(((stop - start) / step).rounded(.up))
        return (0..<max(count, 0)).map { start + Double($0) * step }
    }
}

// MARK: - Elementwise helpers (one pass, no intermediate tensors)

func checkSameShape(_ scheduler: String, _ tensors: Tensor...) throws {
    for t in tensors.dropFirst() where t.shape != tensors[0].shape {
        throw DiffusionError.badInput(component: scheduler, reason: "tensor shapes differ: \(tensors[0].shape) vs \(t.shape)")
    }
}

@inline(__always)
func elementwise(_ a: Tensor, _ f: (Float) -> Float) -> Tensor {
    var out = Tensor(zeros: a.shape)
    a.withUnsafeBufferPointer { pa in
        out.withUnsafeMutableBufferPointer { po in
            for i in 0..<po.count { po[i] = f(pa[i]) }
        }
    }
    return out
}

@inline(__always)
func elementwise(_ a: Tensor, _ b: Tensor, _ f: (Float, Float) -> Float) -> Tensor {
    var out = Tensor(zeros: a.shape)
    a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            out.withUnsafeMutableBufferPointer { po in
                for i in 0..<po.count { po[i] = f(pa[i], pb[i]) }
            }
        }
    }
    return out
}

@inline(__always)
func elementwise(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ f: (Float, Float, Float) -> Float) -> Tensor {
    var out = Tensor(zeros: a.shape)
    a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            c.withUnsafeBufferPointer { pc in
                out.withUnsafeMutableBufferPointer { po in
                    for i in 0..<po.count { po[i] = f(pa[i], pb[i], pc[i]) }
                }
            }
        }
    }
    return out
}

/// x₀ from a Karras-σ-parameterised sample (Euler family), per prediction type.
@inline(__always)
func karrasOriginal(_ prediction: PredictionType, sample: Tensor, modelOutput: Tensor, sigma: Float) -> Tensor {
    switch prediction {
    case .epsilon:
        return elementwise(sample, modelOutput) { x, m in x - sigma * m }
    case .vPrediction:
        let c = -sigma / (sigma * sigma + 1).squareRoot(), d = sigma * sigma + 1
        return elementwise(sample, modelOutput) { x, m in m * c + x / d }
    case .sample:
        return modelOutput
    }
}
