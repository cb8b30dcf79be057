import Foundation
import LapseTensor

/// DPM-Solver++ (Lu et al. 2022) multistep, "2M": matching diffusers' `DPMSolverMultistepScheduler` with
/// `algorithm_type "dpmsolver++"`, `solver_type "midpoint"`, `final_sigmas_type "zero"` and `lower_order_final`.
///
/// Keeps the previous step's x₀ prediction, so steps must be taken in order (starting at any index).
public struct DPMSolverMultistepScheduler: DiffusionScheduler, Sendable {
    /// The configuration it was built from.
    public let config: SchedulerConfig
    /// Training noise schedule.
    public let schedule: NoiseSchedule
    /// Integer timesteps, highest first.
    public let integerTimesteps: [Int]
    /// σ per step and a final 0.
    public let sigmas: [Float]
    private var previousOriginal: Tensor?
    private var nextIndex: Int?
    private var lowerOrderCount = 0

    /// Sets up `steps` inference steps.
    public init(config: SchedulerConfig, steps: Int) throws {
        try config.validate("DPM++ 2M", steps: steps)
        guard (1...2).contains(config.solverOrder) else {
            throw DiffusionError.badConfig(component: "DPM++ 2M", field: "solver_order",
                                           reason: "\(config.solverOrder) is not supported (1 or 2)")
        }
        self.config = config
        schedule = NoiseSchedule(config)
        let T = config.numTrainTimesteps
        switch config.timestepSpacing ?? .linspace {
        case .linspace:
            integerTimesteps = Array(Spacing.linspace(0, Double(T - 1), steps + 1).reversed().dropLast())
                .map { Int(Spacing.npRound($0)) }
        case .leading:
            let ratio = T / (steps + 1)
            integerTimesteps = (1...steps).reversed().map { $0 * ratio + config.stepsOffset }
        case .trailing:
            integerTimesteps = Spacing.arangeDown(Double(T), 0, -Double(T) / Double(steps)).map { Int(Spacing.npRound($0)) - 1 }
        }
        let table = schedule.sigmas
        sigmas = integerTimesteps.map { table[$0] } + [0]
    }

    public var timesteps: [Float] { integerTimesteps.map(Float.init) }
    public var initNoiseSigma: Float { 1 }
    public var usesNoise: Bool { false }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) throws -> Tensor {
        try check(stepIndex)
        return sample
    }

    private func check(_ i: Int) throws {
        guard integerTimesteps.indices.contains(i) else {
            throw DiffusionError.schedulerState(scheduler: "DPM++ 2M", reason: "step index \(i) outside 0..<\(integerTimesteps.count)")
        }
    }

    /// (α_t, σ_t) of the variance-preserving process at Karras σ.
    private static func alphaSigma(_ sigma: Float) -> (Float, Float) {
        let alpha = 1 / (sigma * sigma + 1).squareRoot()
        return (alpha, sigma * alpha)
    }

    public mutating func step(modelOutput: Tensor, stepIndex i: Int, sample: Tensor, noise: Tensor?) throws -> Tensor {
        try check(i)
        try checkSameShape("DPM++ 2M", sample, modelOutput)
        if let expected = nextIndex, expected != i {
            throw DiffusionError.schedulerState(scheduler: "DPM++ 2M", reason: "step \(i) taken after step \(expected - 1); steps must be consecutive")
        }
        let n = integerTimesteps.count
        // A zero final σ always ends with a first-order step; short schedules also take the one before at second order.
        let lowerOrderFinal = i == n - 1
        let (alphaS0, sigmaS0) = Self.alphaSigma(sigmas[i])
        let original: Tensor
        switch config.predictionType {
        case .epsilon: original = elementwise(sample, modelOutput) { x, m in (x - sigmaS0 * m) / alphaS0 }
        case .vPrediction: original = elementwise(sample, modelOutput) { x, m in alphaS0 * x - sigmaS0 * m }
        case .sample: original = modelOutput
        }
        let (alphaT, sigmaT) = Self.alphaSigma(sigmas[i + 1])
        let lambdaT = Foundation.log(alphaT) - Foundation.log(sigmaT)
        let lambdaS0 = Foundation.log(alphaS0) - Foundation.log(sigmaS0)
        let h = lambdaT - lambdaS0
        let ratio = sigmaT / sigmaS0
        let c = alphaT * (Foundation.exp(-h) - 1)
        let result: Tensor
        if config.solverOrder == 1 || lowerOrderCount < 1 || lowerOrderFinal || previousOriginal == nil {
            result = elementwise(sample, original) { x, d0 in ratio * x - c * d0 }
        } else {
            let (alphaS1, sigmaS1) = Self.alphaSigma(sigmas[i - 1])
            let lambdaS1 = Foundation.log(alphaS1) - Foundation.log(sigmaS1)
            let r0 = (lambdaS0 - lambdaS1) / h
            let inverseR0 = 1 / r0
            result = elementwise(sample, original, previousOriginal!) { x, m0, m1 in
                let d1 = inverseR0 * (m0 - m1)
                return ratio * x - c * m0 - 0.5 * c * d1
            }
        }
        previousOriginal = original
        lowerOrderCount = min(lowerOrderCount + 1, config.solverOrder)
        nextIndex = i + 1
        return result
    }

    public func addNoise(to original: Tensor, noise: Tensor, stepIndex: Int) throws -> Tensor {
        try check(stepIndex)
        try checkSameShape("DPM++ 2M", original, noise)
        let (alpha, sigma) = Self.alphaSigma(sigmas[stepIndex])
        return elementwise(original, noise) { x, z in alpha * x + sigma * z }
    }
}
