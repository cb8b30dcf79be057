import Foundation
import LapseTensor

/// Timesteps and σ's of the discrete Euler-family schedulers (diffusers' `EulerDiscreteScheduler` and
/// `EulerAncestralDiscreteScheduler` with linear interpolation and a final σ of 0).
struct KarrasDiscretization: Sendable {
    /// Fractional timesteps (float32), highest first.
    let timesteps: [Float]
    /// σ per step plus a trailing 0.
    let sigmas: [Float]
    /// Standard deviation of the initial noise.
    let initNoiseSigma: Float

    init(config: SchedulerConfig, schedule: NoiseSchedule, steps: Int) {
        let T = config.numTrainTimesteps
        let spacing = config.timestepSpacing ?? .linspace
        switch spacing {
        case .linspace:
            timesteps = Spacing.linspace(0, Double(T - 1), steps).reversed().map { Float($0) }
        case .leading:
            let ratio = T / steps
            timesteps = (0..<steps).reversed().map { Float($0 * ratio) + Float(config.stepsOffset) }
        case .trailing:
            timesteps = Spacing.arangeDown(Double(T), 0, -Double(T) / Double(steps)).map { Float(Spacing.npRound($0)) - 1 }
        }
        let table = schedule.sigmas
        sigmas = timesteps.map { NoiseSchedule.interpolate(table, at: Double($0)) } + [0]
        let maxSigma = sigmas.max() ?? 0
        initNoiseSigma = spacing == .leading ? (maxSigma * maxSigma + 1).squareRoot() : maxSigma
    }

    func check(_ scheduler: String, _ i: Int) throws {
        guard timesteps.indices.contains(i) else {
            throw DiffusionError.schedulerState(scheduler: scheduler, reason: "step index \(i) outside 0..<\(timesteps.count)")
        }
    }

    func scale(_ sample: Tensor, _ i: Int) -> Tensor {
        let s = sigmas[i], d = (s * s + 1).squareRoot()
        return elementwise(sample) { $0 / d }
    }

    func addNoise(_ original: Tensor, _ noise: Tensor, _ i: Int) -> Tensor {
        let s = sigmas[i]
        return elementwise(original, noise) { x, z in x + z * s }
    }
}

/// Euler's method on the probability-flow ODE in σ (Karras et al. 2022), matching diffusers'
/// `EulerDiscreteScheduler` with default options (no churn, linear σ interpolation, final σ 0).
public struct EulerDiscreteScheduler: DiffusionScheduler, Sendable {
    /// The configuration it was built from.
    public let config: SchedulerConfig
    /// Training noise schedule.
    public let schedule: NoiseSchedule
    let grid: KarrasDiscretization

    /// Sets up `steps` inference steps.
    public init(config: SchedulerConfig, steps: Int) throws {
        try config.validate("Euler", steps: steps)
        self.config = config
        schedule = NoiseSchedule(config)
        grid = KarrasDiscretization(config: config, schedule: schedule, steps: steps)
    }

    public var timesteps: [Float] { grid.timesteps }
    /// σ per step and a final 0.
    public var sigmas: [Float] { grid.sigmas }
    public var initNoiseSigma: Float { grid.initNoiseSigma }
    public var usesNoise: Bool { false }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) throws -> Tensor {
        try grid.check("Euler", stepIndex)
        return grid.scale(sample, stepIndex)
    }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, noise: Tensor?) throws -> Tensor {
        try grid.check("Euler", stepIndex)
        try checkSameShape("Euler", sample, modelOutput)
        let sigma = grid.sigmas[stepIndex]
        let dt = grid.sigmas[stepIndex + 1] - sigma
        let original = karrasOriginal(config.predictionType, sample: sample, modelOutput: modelOutput, sigma: sigma)
        return elementwise(sample, original) { x, x0 in x + ((x - x0) / sigma) * dt }
    }

    public func addNoise(to original: Tensor, noise: Tensor, stepIndex: Int) throws -> Tensor {
        try grid.check("Euler", stepIndex)
        try checkSameShape("Euler", original, noise)
        return grid.addNoise(original, noise, stepIndex)
    }
}
