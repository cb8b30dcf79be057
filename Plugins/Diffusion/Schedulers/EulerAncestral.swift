import Foundation
import LapseTensor

/// Ancestral Euler sampling (k-diffusion's `sample_euler_ancestral`), matching diffusers'
/// `EulerAncestralDiscreteScheduler`: an Euler step down to σ_down, then fresh noise of size σ_up.
public struct EulerAncestralDiscreteScheduler: DiffusionScheduler, Sendable {
    /// The configuration it was built from.
    public let config: SchedulerConfig
    /// Training noise schedule.
    public let schedule: NoiseSchedule
    let grid: KarrasDiscretization

    /// Sets up `steps` inference steps.
    public init(config: SchedulerConfig, steps: Int) throws {
        try config.validate("Euler ancestral", steps: steps)
        self.config = config
        schedule = NoiseSchedule(config)
        grid = KarrasDiscretization(config: config, schedule: schedule, steps: steps)
    }

    public var timesteps: [Float] { grid.timesteps }
    /// σ per step and a final 0.
    public var sigmas: [Float] { grid.sigmas }
    public var initNoiseSigma: Float { grid.initNoiseSigma }
    /// Every step draws noise (diffusers draws it even on the last step, where σ_up is 0, which keeps generator
    /// streams aligned).
    public var usesNoise: Bool { true }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) throws -> Tensor {
        try grid.check("Euler ancestral", stepIndex)
        return grid.scale(sample, stepIndex)
    }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, noise: Tensor?) throws -> Tensor {
        try grid.check("Euler ancestral", stepIndex)
        guard let noise else {
            throw DiffusionError.schedulerState(scheduler: "Euler ancestral", reason: "step \(stepIndex) needs noise")
        }
        try checkSameShape("Euler ancestral", sample, modelOutput, noise)
        let from = grid.sigmas[stepIndex], to = grid.sigmas[stepIndex + 1]
        let up = (to * to * (from * from - to * to) / (from * from)).squareRoot()
        let down = (to * to - up * up).squareRoot()
        let dt = down - from
        let original = karrasOriginal(config.predictionType, sample: sample, modelOutput: modelOutput, sigma: from)
        return elementwise(sample, original, noise) { x, x0, z in (x + ((x - x0) / from) * dt) + z * up }
    }

    public func addNoise(to original: Tensor, noise: Tensor, stepIndex: Int) throws -> Tensor {
        try grid.check("Euler ancestral", stepIndex)
        try checkSameShape("Euler ancestral", original, noise)
        return grid.addNoise(original, noise, stepIndex)
    }
}
