import DiffusionPlugin
import Foundation
import LapseTensor

// StreamingT2V stage 3 (MS-Vid2Vid-XL refiner) sampling, independent of the network: modelscope's video_to_video
// `GaussianDiffusion_SDEdit.sample` with DPM++(2M) SDE and StreamingT2V's randomized blending inside every
// evaluation. Numbers follow the original's float32 torch arithmetic; docs/diffusion.md ("StreamingT2V refiner
// sampling") states the math and the rule for lengths the original cannot take.

/// The `logsnr_cosine_interp` noise schedule of modelscope's video_to_video (MS-Vid2Vid-XL): VP σ per integer
/// timestep, with zero terminal SNR.
///
/// logSNR(t) is an interpolation between two shifted cosine schedules (shift 2·ln(1/scale), scale 2 at high noise →
/// 4 at low noise), σ = sqrt(sigmoid(−logSNR)); zero terminal SNR then rescales σ linearly so its maximum is 1.
/// Computed in float32 in the original's operation order, so tables match torch to the last bits or close to them.
public struct LogSNRCosineInterpSchedule: Sendable {
    /// VP noise level σ[t] (the noisy sample is α·x₀ + σ·ε), t = 0…count−1, increasing.
    public let sigmas: [Float]
    /// α[t] = sqrt(1 − σ[t]²).
    public let alphas: [Float]
    /// log of the VE noise level σ/α per t (+∞ where α = 0), the table `_t_to_sigma`/`_sigma_to_t` interpolate.
    public let logVESigmas: [Float]

    /// The schedule of `noise_schedule('logsnr_cosine_interp', n, zero_terminal_snr, scale_min, scale_max)`.
    public init(count n: Int = 1000, logSNRMin: Double = -15, logSNRMax: Double = 15, scaleMin: Double = 2,
                scaleMax: Double = 4, zeroTerminalSNR: Bool = true) {
        precondition(n >= 2, "a schedule needs at least two timesteps")
        // torch.linspace(1, 0, n) in float32: the first half counts up from the start, the second down from the end.
        let step = Float(0 - 1) / Float(n - 1)
        let t: [Float] = (0..<n).map { i in i < n / 2 ? 1 + step * Float(i) : 0 - step * Float(n - 1 - i) }
        let tMin = atan(exp(-0.5 * logSNRMin)), tMax = atan(exp(-0.5 * logSNRMax))
        let span = Float(tMax - tMin), start = Float(tMin)
        let cosine = t.map { -2 * logf(tanf(start + $0 * span)) }
        let shiftMin = Float(2 * log(1 / scaleMin)), shiftMax = Float(2 * log(1 / scaleMax))
        var sigmas = (0..<n).map { i -> Float in
            let logSNR = t[i] * (cosine[i] + shiftMin) + (1 - t[i]) * (cosine[i] + shiftMax)
            return (1 / (1 + expf(logSNR))).squareRoot()
        }
        if zeroTerminalSNR, let lo = sigmas.min(), let hi = sigmas.max(), hi != 1 {
            let scale = (1 - lo) / (hi - lo)
            sigmas = sigmas.map { lo + scale * ($0 - lo) }
        }
        self.sigmas = sigmas
        alphas = sigmas.map { (1 - $0 * $0).squareRoot() }
        logVESigmas = sigmas.map { logf((($0 * $0) / (1 - $0 * $0)).squareRoot()) }
    }

    /// Number of timesteps.
    public var count: Int { sigmas.count }

    /// The VE noise level at fractional timestep `t` (`_t_to_sigma`): log-linear interpolation, +∞ at α = 0.
    public func veSigma(at t: Float) -> Float {
        let lo = Int(t.rounded(.down)), hi = Int(t.rounded(.up)), w = t - t.rounded(.down)
        let logSigma = (1 - w) * logVESigmas[lo] + w * logVESigmas[hi]
        return logSigma.isNaN || logSigma.isInfinite ? .infinity : expf(logSigma)
    }

    /// The fractional timestep of VE noise level `sigma` (`_sigma_to_t`), the inverse of `veSigma(at:)`.
    public func timestep(ofVESigma sigma: Float) -> Float {
        if sigma == .infinity { return Float(count - 1) }
        let logSigma = logf(sigma)
        // The last index whose table value is ≤ log σ (argmax of the cumulative count), kept below the last pair.
        var low = 0
        for (i, v) in logVESigmas.enumerated() where logSigma - v >= 0 { low = i }
        low = min(low, count - 2)
        let lowValue = logVESigmas[low], highValue = logVESigmas[low + 1]
        let w = min(max((lowValue - logSigma) / (lowValue - highValue), 0), 1)
        return (1 - w) * Float(low) + w * Float(low + 1)
    }
}

/// Where the refiner's Gaussian noise comes from: the SDEdit start noise and the solver's Brownian increments.
public protocol RefinerNoiseSource: AnyObject {
    /// Standard-normal noise of the latents' `shape` that takes the clean latents to the start level (drawn once for
    /// the whole video, so overlapping chunks share it).
    func startNoise(shape: [Int]) throws -> Tensor
    /// The normalised Brownian increment (W(σ') − W(σ)) / sqrt|σ' − σ| of solver step `step` — standard normal —
    /// of the latents' `shape`; asked only for steps that add noise, in increasing order.
    func stepNoise(step: Int, shape: [Int]) throws -> Tensor
}

/// Where the blending offsets come from.
public protocol RefinerOffsetSource: AnyObject {
    /// The offset r ∈ [0, `bound`) of chunk `chunk` (≥ 1) at solver evaluation `evaluation`; asked in evaluation
    /// order, chunks in order within an evaluation, never for the first chunk or when `bound` is 1 or less.
    func offset(evaluation: Int, chunk: Int, bound: Int) throws -> Int
}

/// The refiner's default noise: one `TorchGenerator(seed)` (torch's CPU generator) drawing `randn(latent shape)`
/// for the start noise first, then one `randn(latent shape)` per solver step that adds noise, in step order.
///
/// The original draws its Brownian increments from a torchsde `BrownianTree` (entropy 0), whose increments over
/// disjoint steps are independent standard normals after normalisation, as these draws are; the tree's own bits are
/// not reproduced.
public final class SeededRefinerNoise: RefinerNoiseSource {
    private let generator: TorchGenerator

    /// Noise from `TorchGenerator(seed: seed)`.
    public init(seed: UInt64) { generator = TorchGenerator(seed: seed) }

    /// Noise drawn from `generator` from its current state on, so a caller's earlier draws (RefineVideo's posterior
    /// noise) and these share one seeded stream without repeating it.
    public init(generator: TorchGenerator) { self.generator = generator }

    public func startNoise(shape: [Int]) throws -> Tensor { generator.randn(shape) }
    public func stepNoise(step: Int, shape: [Int]) throws -> Tensor { generator.randn(shape) }
}

/// Given noise (a parity test's recording of the original's): the start noise and the step increments in order.
public final class RecordedRefinerNoise: RefinerNoiseSource {
    private let start: Tensor
    private var steps: [Tensor]
    private var used = 0

    /// `start` for the SDEdit noise, then `steps[0]`, `steps[1]`, … for the solver steps that add noise.
    public init(start: Tensor, steps: [Tensor]) {
        self.start = start
        self.steps = steps
    }

    public func startNoise(shape: [Int]) throws -> Tensor { start }

    public func stepNoise(step: Int, shape: [Int]) throws -> Tensor {
        guard used < steps.count else {
            throw DiffusionError.badInput(component: "RefineVideo",
                                          reason: "recorded noise has \(steps.count) step increments; step \(step) needs one more")
        }
        defer { used += 1 }
        return steps[used]
    }
}

/// The refiner's default offsets: Python's `random` (MT19937 seeded by `random.seed(seed)`) drawing
/// `random.randint(0, bound − 1)` per non-first chunk per evaluation — the original's generator and call.
public final class SeededRefinerOffsets: RefinerOffsetSource {
    private let random: PythonRandom

    /// Offsets from `random.seed(seed)`.
    public init(seed: UInt64) { random = PythonRandom(seed: seed) }

    public func offset(evaluation: Int, chunk: Int, bound: Int) throws -> Int { random.randbelow(bound) }
}

/// Given offsets (a parity test's recording of the original's), consumed in the order they are asked for.
public final class RecordedRefinerOffsets: RefinerOffsetSource {
    private let offsets: [Int]
    private var used = 0

    /// `offsets` in the order the sampler asks (evaluations in order, non-first chunks in order within each).
    public init(_ offsets: [Int]) { self.offsets = offsets }

    public func offset(evaluation: Int, chunk: Int, bound: Int) throws -> Int {
        guard used < offsets.count else {
            throw DiffusionError.badInput(component: "RefineVideo",
                                          reason: "recorded offsets ran out at evaluation \(evaluation), chunk \(chunk)")
        }
        defer { used += 1 }
        return offsets[used]
    }
}

/// Python's `random.Random`: MT19937 seeded through `init_by_array` as `random.seed(int)` does, with `getrandbits`
/// and `randrange`'s rejection sampling, so seeded draws equal CPython's.
///
/// Separate from `TorchGenerator` (same twister, different seeding and output rules), whose state is private.
public final class PythonRandom {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624

    /// The state `random.seed(seed)` leaves (the seed's 32-bit words, least significant first, as the key).
    public init(seed: UInt64) {
        var key = [UInt32(truncatingIfNeeded: seed)]
        if seed >> 32 != 0 { key.append(UInt32(seed >> 32)) }
        initGenrand(19_650_218)
        var i = 1, j = 0
        for _ in 0..<max(624, key.count) {
            let prev = state[i - 1] ^ (state[i - 1] >> 30)
            state[i] = (state[i] ^ (prev &* 1_664_525)) &+ key[j] &+ UInt32(j)
            i += 1
            j += 1
            if i >= 624 { state[0] = state[623]; i = 1 }
            if j >= key.count { j = 0 }
        }
        for _ in 0..<623 {
            let prev = state[i - 1] ^ (state[i - 1] >> 30)
            state[i] = (state[i] ^ (prev &* 1_566_083_941)) &- UInt32(i)
            i += 1
            if i >= 624 { state[0] = state[623]; i = 1 }
        }
        state[0] = 0x8000_0000
        index = 624
    }

    private func initGenrand(_ s: UInt32) {
        state[0] = s
        for i in 1..<624 { state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i) }
    }

    /// `genrand_uint32`: the next tempered 32-bit output.
    public func next32() -> UInt32 {
        if index >= 624 {
            for i in 0..<624 {
                let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7fff_ffff)
                state[i] = state[(i + 397) % 624] ^ (y >> 1) ^ (y & 1 == 0 ? 0 : 0x9908_b0df)
            }
            index = 0
        }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9d2c_5680
        y ^= (y << 15) & 0xefc6_0000
        y ^= y >> 18
        return y
    }

    /// `random._randbelow(n)` for 1 ≤ n < 2³¹: `getrandbits(n.bit_length())` until below n, so
    /// `random.randint(a, b)` is `a + randbelow(b − a + 1)`.
    public func randbelow(_ n: Int) -> Int {
        precondition(n >= 1 && n < 1 << 31, "randbelow needs 1 ≤ n < 2^31")
        let bits = Int.bitWidth - n.leadingZeroBitCount
        while true {
            let r = Int(next32() >> UInt32(32 - bits))
            if r < n { return r }
        }
    }
}

/// What one solver evaluation saw and produced, for progress reports and tests.
public struct RefinerStep {
    /// Solver step index, 0 …
    public let index: Int
    /// Number of solver steps (network evaluations).
    public let count: Int
    /// The integer timestep the network received.
    public let timestep: Int
    /// The network input `x·c_in` (`[B, C, F, h, w]`; the raw noisy latents at a pure-noise start).
    public let modelInput: Tensor
    /// The blended x₀ prediction of the whole video.
    public let denoised: Tensor
    /// The solver state after the step (VE-scaled latents; the final x₀ after the last step).
    public let sample: Tensor
}

/// StreamingT2V's stage-3 sampling (MS-Vid2Vid-XL, modelscope's video_to_video with StreamingT2V's blending patch):
/// SDEdit from `noiseLevel − 1`, DPM++(2M) SDE (midpoint, η = 1) on the trailing step list, v-prediction, CFG with
/// guide rescale, and randomized blending of chunked x₀ predictions inside every evaluation.
///
/// The network stays outside: `refine` calls `denoise` once per chunk and pass. Any video of at least `chunk` frames
/// works; chunks start at 0, stride, 2·stride, … (stride = chunk − overlap) while they fit, and when the last of those
/// does not end at the video's end, one more chunk is placed at `frames − chunk` (see docs/diffusion.md).
public struct RefinerSampler: Sendable {
    /// Solver steps = network evaluations (30, the original's 'fast' mode).
    public let steps: Int
    /// SDEdit strength: the video is noised to timestep `noiseLevel − 1` of 1000 (600 → t0 = 599).
    public let noiseLevel: Int
    /// Classifier-free guidance scale (1 runs the positive pass only, as the original does).
    public let guidance: Float
    /// Guide rescale ρ: the guided v is scaled by ρ·std(v₊)/std(v) + 1 − ρ, stds over each chunk.
    public let guideRescale: Float
    /// Frames per network call.
    public let chunk: Int
    /// Frames shared by neighbouring chunks; random cuts fall in the first `overlap` frames of each later chunk.
    public let overlap: Int
    /// The noise schedule (1000 steps).
    public let schedule: LogSNRCosineInterpSchedule
    /// The trailing step list, `steps + 1` fractional timesteps before the penultimate σ is dropped.
    public let stepTimesteps: [Float]
    /// The VE σ's the solver walks: one per evaluation, then 0 (the penultimate point of `stepTimesteps` dropped).
    public let solverSigmas: [Float]
    /// The integer timestep the network gets at each evaluation (599, 580, …, 38 for the defaults).
    public let modelTimesteps: [Int]

    /// One network pass: the v-prediction for noisy latents `[B, C, chunk, h, w]` at `timestep`, with the positive
    /// (`conditional` true) or negative conditioning; must return the same shape.
    public typealias Denoise = (_ latents: Tensor, _ timestep: Int, _ conditional: Bool) throws -> Tensor

    /// Validates the settings (errors name the RefineVideo parameter) and builds the step list.
    public init(steps: Int = 30, noiseLevel: Int = 600, guidance: Float = 7.5, guideRescale: Float = 0.2,
                chunk: Int = 24, overlap: Int = 8) throws {
        func bad(_ field: String, _ reason: String) -> DiffusionError {
            .badConfig(component: "RefineVideo", field: field, reason: reason)
        }
        guard steps >= 1 else { throw bad("steps", "\(steps) must be at least 1") }
        guard (1...1000).contains(noiseLevel) else {
            throw bad("noise_level", "\(noiseLevel) must be in 1…1000 (timesteps of the 1000-step schedule)")
        }
        guard guidance.isFinite else { throw bad("guidance", "must be a finite number") }
        guard (0...1).contains(guideRescale) else { throw bad("guide_rescale", "\(guideRescale) must be in 0…1") }
        guard chunk >= 1 else { throw bad("chunk", "\(chunk) must be at least 1") }
        guard (0..<chunk).contains(overlap) else {
            throw bad("overlap", "\(overlap) must be in 0…\(chunk - 1) (less than chunk = \(chunk))")
        }
        self.steps = steps
        self.noiseLevel = noiseLevel
        self.guidance = guidance
        self.guideRescale = guideRescale
        self.chunk = chunk
        self.overlap = overlap
        let schedule = LogSNRCosineInterpSchedule()
        self.schedule = schedule
        // sample(): steps + 1 points (the penultimate is dropped below) by torch.arange(t_max, t_min − 1, −Δ) with
        // Δ = (t_max − t_min + 1) / points in double; arange's length is ceil((end − start) / step) in double and its
        // values start + i·step rounded to float32, then clamped to [t_min, t_max].
        let tMax = Double(noiseLevel - 1), tMin = 0.0, points = Double(steps + 1)
        let delta = -((tMax - tMin + 1) / points)
        let length = Int(((tMin - 1 - tMax) / delta).rounded(.up))
        stepTimesteps = (0..<length).map { i in min(max(Float(tMax + Double(i) * delta), Float(tMin)), Float(tMax)) }
        var sigmas = stepTimesteps.map { schedule.veSigma(at: $0) } + [0]
        sigmas.remove(at: sigmas.count - 2)
        solverSigmas = sigmas
        // model_fn: t = round(_sigma_to_t(σ)), half to even as torch.round.
        modelTimesteps = sigmas.dropLast().map { Int(schedule.timestep(ofVESigma: $0).rounded(.toNearestOrEven)) }
    }

    /// The factor the solver's start applies to the noised latents: σ_ve(t0) (4.1648 at t0 = 599, where 1/α = 4.2831
    /// would be the exact VE scaling; the original's quirk, kept).
    public var startScale: Float { solverSigmas[0] }

    /// Start frames of the chunks for a video of `frames` frames: 0, stride, … while a chunk fits, then `frames −
    /// chunk` if the last one ends early. Throws for fewer than `chunk` frames.
    public func chunkStarts(frames: Int) throws -> [Int] {
        guard frames >= chunk else {
            throw DiffusionError.badInput(component: "RefineVideo",
                                          reason: "\(frames) frames is fewer than chunk = \(chunk); give at least \(chunk) frames or lower chunk")
        }
        let stride = chunk - overlap
        var starts = Array(Swift.stride(from: 0, through: frames - chunk, by: stride))
        if starts.last! + chunk < frames { starts.append(frames - chunk) }
        return starts
    }

    /// Refines clean latents `[B, C, F, h, w]` (F ≥ `chunk`): noises them to `noiseLevel − 1` with one noise tensor,
    /// solves back to x₀, and returns x₀ (same shape, still in the VAE's scaled latent space).
    ///
    /// `onStep` runs after every solver step (progress, cancellation by throwing, tests).
    public func refine(latents: Tensor, noise: RefinerNoiseSource, offsets: RefinerOffsetSource,
                       onStep: (RefinerStep) throws -> Void = { _ in }, denoise: Denoise) throws -> Tensor {
        guard latents.rank == 5 else {
            throw DiffusionError.badInput(component: "RefineVideo",
                                          reason: "latents have shape \(latents.shape); expected [B, C, frames, h, w]")
        }
        let shape = latents.shape
        let starts = try chunkStarts(frames: shape[2])
        func checked(_ t: Tensor, _ what: String) throws -> Tensor {
            guard t.shape == shape else {
                throw DiffusionError.badInput(component: "RefineVideo", reason: "\(what) has shape \(t.shape), expected \(shape)")
            }
            return t
        }

        // diffuse(): x_t = α[t0]·x₀ + σ[t0]·ε at the integer start timestep.
        let t0 = noiseLevel - 1
        let eps = try checked(noise.startNoise(shape: shape), "start noise")
        let a0 = schedule.alphas[t0], s0 = schedule.sigmas[t0]
        let noised = map2(latents, eps) { x, e in a0 * x + s0 * e }

        var evaluation = 0
        func modelFn(_ input: Tensor, _ sigma: Float) throws -> Tensor {
            defer { evaluation += 1 }
            return try blendedX0(input, timestep: modelTimesteps[evaluation], evaluation: evaluation, starts: starts,
                                 offsets: offsets, denoise: denoise)
        }

        // sample_dpmpp_2m_sde: x = noise·σ₀ (the noised latents times σ_ve(t0)), then per step i:
        // x₀ = model(x·c_in), c_in = 1/sqrt(σᵢ² + 1); to σᵢ₊₁ = 0 the step returns x₀.
        let sigmas = solverSigmas
        // At a pure-noise start (σ₀ = ∞) the first step reads the raw noisy latents instead.
        var x = sigmas[0].isFinite ? noised * sigmas[0] : noised
        var oldDenoised: Tensor?
        var hLast: Float = 0
        for i in 0..<(sigmas.count - 1) {
            let sigma = sigmas[i], next = sigmas[i + 1]
            let input: Tensor, denoised: Tensor
            if sigma == .infinity {
                // Pure-noise start: Euler from the raw noisy latents; no history is kept.
                input = noised
                denoised = try modelFn(noised, sigma)
                x = map2(denoised, noised) { d, n in d + next * n }
            } else {
                let cIn = 1 / (sigma * sigma + 1).squareRoot()
                input = x * cIn
                denoised = try modelFn(input, sigma)
                if next == 0 {
                    x = denoised
                } else {
                    // DPM-Solver++(2M) SDE, η = 1, midpoint: h = log σᵢ − log σᵢ₊₁.
                    let h = -logf(next) - (-logf(sigma))
                    let decay = next / sigma * expf(-h)
                    let mix = -expm1f(-h - h)
                    let correction: Float = oldDenoised == nil ? 0 : 0.5 * mix * (1 / (hLast / h))
                    let noiseScale = next * (-expm1f(-2 * h)).squareRoot()
                    let z = try checked(noise.stepNoise(step: i, shape: shape), "step \(i) noise")
                    x = dpmStep(x, denoised, oldDenoised ?? denoised, z, decay: decay, mix: mix,
                                correction: correction, noiseScale: noiseScale)
                    hLast = h
                }
                oldDenoised = denoised
            }
            try onStep(RefinerStep(index: i, count: sigmas.count - 1, timestep: modelTimesteps[i], modelInput: input,
                                   denoised: denoised, sample: x))
        }
        return x
    }

    /// One evaluation's x₀ for the whole video: each chunk denoised with CFG and guide rescale, x₀ = α[t]·x − σ[t]·v,
    /// and written from its offset r on (r = 0 for the first chunk, drawn for the others).
    private func blendedX0(_ input: Tensor, timestep t: Int, evaluation: Int, starts: [Int],
                           offsets: RefinerOffsetSource, denoise: Denoise) throws -> Tensor {
        let shape = input.shape
        let batch = shape[0], channels = shape[1], frames = shape[2], plane = shape[3] * shape[4]
        let alpha = schedule.alphas[t], sigma = schedule.sigmas[t]
        var x0 = Tensor(zeros: shape)
        for (k, start) in starts.enumerated() {
            let xChunk = slice(input, axis: 2, start: start, end: start + chunk)
            let v = try guidedV(xChunk, timestep: t, denoise: denoise)
            let r: Int
            if k == 0 || overlap <= 1 {
                r = 0
            } else {
                r = try offsets.offset(evaluation: evaluation, chunk: k, bound: overlap)
                guard (0..<overlap).contains(r) else {
                    throw DiffusionError.badInput(component: "RefineVideo",
                                                  reason: "blending offset \(r) is outside 0…\(overlap - 1)")
                }
            }
            let run = (chunk - r) * plane
            xChunk.withUnsafeBufferPointer { xs in
                v.withUnsafeBufferPointer { vs in
                    x0.withUnsafeMutableBufferPointer { out in
                        for bc in 0..<(batch * channels) {
                            let src = bc * chunk * plane + r * plane, dst = (bc * frames + start + r) * plane
                            for j in 0..<run { out[dst + j] = alpha * xs[src + j] - sigma * vs[src + j] }
                        }
                    }
                }
            }
        }
        return x0
    }

    /// v for one chunk: the positive pass, and unless guidance is 1 the negative pass, u + g·(c − u), rescaled by
    /// ρ·std(c)/(std(out) + 1e-12) + 1 − ρ per batch item (unbiased stds over the chunk, as torch's `std`).
    private func guidedV(_ x: Tensor, timestep: Int, denoise: Denoise) throws -> Tensor {
        func pass(_ conditional: Bool) throws -> Tensor {
            let v = try denoise(x, timestep, conditional)
            guard v.shape == x.shape else {
                throw DiffusionError.badInput(component: "RefineVideo",
                                              reason: "the network returned \(v.shape) for input \(x.shape)")
            }
            return v
        }
        let cond = try pass(true)
        if guidance == 1 { return cond }
        let uncond = try pass(false)
        var out = map2(uncond, cond) { [guidance] u, c in u + guidance * (c - u) }
        let batch = x.shape[0], n = x.count / batch
        cond.withUnsafeBufferPointer { cs in
            out.withUnsafeMutableBufferPointer { os in
                for b in 0..<batch {
                    let ratio = Self.std(cs, b * n, n) / (Self.std(UnsafeBufferPointer(os), b * n, n) + 1e-12)
                    let factor = Float(Double(guideRescale) * ratio + (1 - Double(guideRescale)))
                    for j in (b * n)..<((b + 1) * n) { os[j] *= factor }
                }
            }
        }
        return out
    }

    /// Unbiased standard deviation of `count` values from `start`, accumulated in double.
    private static func std(_ p: UnsafeBufferPointer<Float>, _ start: Int, _ count: Int) -> Double {
        guard count > 1 else { return .nan }
        var sum = 0.0
        for j in start..<(start + count) { sum += Double(p[j]) }
        let mean = sum / Double(count)
        var squares = 0.0
        for j in start..<(start + count) { let d = Double(p[j]) - mean; squares += d * d }
        return (squares / Double(count - 1)).squareRoot()
    }

    /// x ← decay·x + mix·d + correction·(d − d_prev) + noiseScale·z, one pass.
    private func dpmStep(_ x: Tensor, _ d: Tensor, _ previous: Tensor, _ z: Tensor, decay: Float, mix: Float,
                         correction: Float, noiseScale: Float) -> Tensor {
        var out = Tensor(zeros: x.shape)
        x.withUnsafeBufferPointer { xs in
            d.withUnsafeBufferPointer { ds in
                previous.withUnsafeBufferPointer { ps in
                    z.withUnsafeBufferPointer { zs in
                        out.withUnsafeMutableBufferPointer { os in
                            for j in 0..<os.count {
                                var v = decay * xs[j] + mix * ds[j]
                                v += correction * (ds[j] - ps[j])
                                os[j] = v + zs[j] * noiseScale
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// Elementwise f(a, b) over two tensors of one shape.
private func map2(_ a: Tensor, _ b: Tensor, _ f: (Float, Float) -> Float) -> Tensor {
    precondition(a.shape == b.shape, "map2: shapes \(a.shape) and \(b.shape) differ")
    var out = Tensor(zeros: a.shape)
    a.withUnsafeBufferPointer { xs in
        b.withUnsafeBufferPointer { ys in
            out.withUnsafeMutableBufferPointer { os in
                for j in 0..<os.count { os[j] = f(xs[j], ys[j]) }
            }
        }
    }
    return out
}
