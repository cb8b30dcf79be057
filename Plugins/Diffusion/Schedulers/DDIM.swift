import Foundation
import LapseTensor

/// DDIM (Song et al. 2020), matching diffusers' `DDIMScheduler` (`clip_sample`, `set_alpha_to_one`, `steps_offset`,
/// η noise, the three timestep spacings and prediction types).
public struct DDIMScheduler: DiffusionScheduler, Sendable {
    /// The configuration it was built from.
    public let config: SchedulerConfig
    /// Training noise schedule.
    public let schedule: NoiseSchedule
    /// Integer timesteps, highest first.
    public let integerTimesteps: [Int]
    /// Stochasticity: 0 is deterministic DDIM, 1 is DDPM-like.
    public let eta: Float
    private let finalAlphaCumprod: Float
    private let stepsCount: Int

    /// Sets up `steps` inference steps.
    public init(config: SchedulerConfig, steps: Int, eta: Float = 0) throws {
        try config.validate("DDIM", steps: steps)
        guard eta >= 0 else { throw DiffusionError.badConfig(component: "DDIM", field: "eta", reason: "\(eta) < 0") }
        self.config = config
        self.eta = eta
        schedule = NoiseSchedule(config)
        stepsCount = steps
        finalAlphaCumprod = config.setAlphaToOne ? 1 : schedule.alphasCumprod[0]
        let T = config.numTrainTimesteps
        switch config.timestepSpacing ?? .leading {
        case .linspace:
            integerTimesteps = Spacing.linspace(0, Double(T - 1), steps).reversed().map { Int(Spacing.npRound($0)) }
        case .leading:
            let ratio = T / steps
            integerTimesteps = (0..<steps).reversed().map { $0 * ratio + config.stepsOffset }
        case .trailing:
            integerTimesteps = Spacing.arangeDown(Double(T), 0, -Double(T) / Double(steps)).map { Int(Spacing.npRound($0)) - 1 }
        }
    }

    public var timesteps: [Float] { integerTimesteps.map(Float.init) }
    public var initNoiseSigma: Float { 1 }
    public var usesNoise: Bool { eta > 0 }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) throws -> Tensor {
        try checkIndex(stepIndex)
        return sample
    }

    private func checkIndex(_ i: Int) throws {
        guard integerTimesteps.indices.contains(i) else {
            throw DiffusionError.schedulerState(scheduler: "DDIM", reason: "step index \(i) outside 0..<\(integerTimesteps.count)")
        }
    }

    /// ᾱ at a training timestep, with the configured value for "before the first".
    private func alphaCumprod(_ t: Int) -> Float { t >= 0 ? schedule.alphasCumprod[t] : finalAlphaCumprod }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, noise: Tensor?) throws -> Tensor {
        try checkIndex(stepIndex)
        try checkSameShape("DDIM", sample, modelOutput)
        let t = integerTimesteps[stepIndex]
        // diffusers steps back by T / n whatever the spacing, not to the next listed timestep.
        let prev = t - config.numTrainTimesteps / stepsCount
        let alphaT = schedule.alphasCumprod[t], alphaPrev = alphaCumprod(prev)
        let betaT = 1 - alphaT
        let sa = alphaT.squareRoot(), sb = betaT.squareRoot()
        var original: Tensor, epsilon: Tensor
        switch config.predictionType {
        case .epsilon:
            original = elementwise(sample, modelOutput) { x, m in (x - sb * m) / sa }
            epsilon = modelOutput
        case .sample:
            original = modelOutput
            epsilon = elementwise(sample, modelOutput) { x, m in (x - sa * m) / sb }
        case .vPrediction:
            original = elementwise(sample, modelOutput) { x, m in sa * x - sb * m }
            epsilon = elementwise(sample, modelOutput) { x, m in sa * m + sb * x }
        }
        if config.clipSample {
            let r = Float(config.clipSampleRange)
            original = elementwise(original) { min(max($0, -r), r) }
            // diffusers only re-derives ε from the clipped x₀ when asked (use_clipped_model_output); it is not.
        }
        let betaPrev = 1 - alphaPrev
        let variance = (betaPrev / betaT) * (1 - alphaT / alphaPrev)
        let std = eta * variance.squareRoot()
        let direction = (1 - alphaPrev - std * std).squareRoot()
        let sap = alphaPrev.squareRoot()
        if eta > 0 {
            guard let noise else {
                throw DiffusionError.schedulerState(scheduler: "DDIM", reason: "eta \(eta) > 0 needs noise for step \(stepIndex)")
            }
            try checkSameShape("DDIM", sample, noise)
            return elementwise(original, epsilon, noise) { x0, e, z in (sap * x0 + direction * e) + std * z }
        }
        return elementwise(original, epsilon) { x0, e in sap * x0 + direction * e }
    }

    public func addNoise(to original: Tensor, noise: Tensor, stepIndex: Int) throws -> Tensor {
        try checkIndex(stepIndex)
        try checkSameShape("DDIM", original, noise)
        let a = schedule.alphasCumprod[integerTimesteps[stepIndex]]
        let sa = a.squareRoot(), sb = (1 - a).squareRoot()
        return elementwise(original, noise) { x, z in sa * x + sb * z }
    }
}
