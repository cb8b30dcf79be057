import Foundation
import LapseGraph
import LapseTensor

/// `Sample {seed, steps, guidance, scheduler, eta, beta_schedule, scheduler_config, denoise, guidance_batch}`
/// ← `unet`, `positive`, `negative`, `latent` → `latent`.
///
/// Mirrors diffusers' `AnimateDiffPipeline` / MagicTime's `AnimationPipeline`: noise from
/// `torch.Generator("cpu").manual_seed(seed)` as `randn([B, 4, F, h, w])` × `init_noise_sigma`, classifier-free
/// guidance as `uncond + g·(cond − uncond)` (skipped when `g ≤ 1`), on the batch `[uncond, cond]` or, for large
/// latents, as two passes (`guidance_batch`, `GuidanceBatching`). The scheduler is
/// built from `scheduler_config` as diffusers' `Kind.from_config` builds it: by default the config that came with the
/// UNet's diffusers folder, else MagicTime's DDIM config (betas 0.00085…0.012 linear, `steps_offset` 1,
/// `set_alpha_to_one`, no clipping).
public struct Sample: Node {
    /// The `scheduler_config` values that name no file.
    public static let schedulerConfigKeywords = ["auto", "magictime"]

    public static let schema = NodeSchema(
        type: "Sample", category: "video/diffusion",
        summary: "Denoises latents with a (video) UNet, classifier-free guidance and a DDIM/Euler/DPM++ scheduler",
        inputs: [
            InputSpec("unet", .unet, doc: "UNet, with motion modules for video"),
            InputSpec("positive", .conditioning, doc: "prompt embeddings"),
            InputSpec("negative", .conditioning, doc: "negative-prompt embeddings (the unconditional branch of guidance)"),
            InputSpec("latent", .latent, doc: "EmptyLatentVideo for text-to-video; encoded frames with denoise < 1"),
            InputSpec("seed", .int, default: .int(0), min: 0, doc: "torch.Generator(\"cpu\").manual_seed(seed) of the noise"),
            InputSpec("steps", .int, default: .int(25), min: 1, max: 1000, doc: "inference steps"),
            InputSpec("guidance", .float, default: .float(7.5), min: 0, max: 100, doc: "classifier-free guidance scale (≤ 1 disables it); diffusers' default, graphs set their model's"),
            InputSpec("scheduler", .string, default: .string("ddim"), allowed: SchedulerKind.allCases.map(\.rawValue),
                      doc: "sampler"),
            InputSpec("eta", .float, default: .float(0), min: 0, max: 1, doc: "DDIM stochasticity (0: deterministic)"),
            InputSpec("beta_schedule", .string, default: .string("auto"), allowed: ["auto", "scaled_linear", "linear"],
                      doc: "training noise schedule; auto: scheduler_config's (MagicTime uses linear, SD1.5 and ModelScope scaled_linear)"),
            InputSpec("scheduler_config", .string, default: .string("auto"), keywords: schedulerConfigKeywords,
                      doc: "auto: the UNet's diffusers folder's scheduler/scheduler_config.json, else MagicTime's; "
                          + "magictime; or a path to a diffusers scheduler_config.json"),
            InputSpec("denoise", .float, default: .float(1), min: 0, max: 1,
                      doc: "fraction of the schedule to run; < 1 starts from the input latents noised to that level"),
            InputSpec("guidance_batch", .string, default: .string("auto"), allowed: GuidanceBatching.allCases.map(\.rawValue),
                      doc: "joint: one UNet pass on [uncond, cond]; split: two passes, half the activation memory; "
                          + "auto: split when one pass's widest activation would pass \(GuidanceBatching.splitAboveBytes >> 20) MiB (512² × 16 frames)"),
        ],
        outputs: [OutputSpec("latent", .latent, doc: "denoised latents")],
        inputFileParams: ["scheduler_config"])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let unet = try inputs.get("unet", .unet)
        if unet.vid2vid != nil {
            // Its v-prediction on the logsnr_cosine_interp schedule fits none of Sample's schedulers.
            throw NodeError.invalidValue(port: "unet", reason: "the MS-Vid2Vid-XL UNet (LoadVid2VidModel) is sampled by RefineVideo, not Sample")
        }
        let positive = try inputs.get("positive", .conditioning)
        let negative = try inputs.get("negative", .conditioning)
        let input = try inputs.get("latent", .latent)
        let seed = try inputs.int("seed"), steps = try inputs.int("steps")
        let guidance = Float(try inputs.float("guidance")), eta = Float(try inputs.float("eta"))
        let denoise = try inputs.float("denoise")
        guard let kind = SchedulerKind(rawValue: try inputs.string("scheduler")) else {
            throw NodeError.invalidValue(port: "scheduler", reason: "\"\(try inputs.string("scheduler"))\" is not one of "
                                         + SchedulerKind.allCases.map(\.rawValue).joined(separator: ", "))
        }
        let betaSchedule = try inputs.string("beta_schedule")
        guard betaSchedule == "auto" || BetaSchedule(rawValue: betaSchedule) != nil else {
            throw NodeError.invalidValue(port: "beta_schedule", reason: "\"\(betaSchedule)\" is not auto, scaled_linear or linear")
        }
        guard steps >= 1 else { throw NodeError.invalidValue(port: "steps", reason: "\(steps) must be at least 1") }
        guard (0...1).contains(denoise) else { throw NodeError.invalidValue(port: "denoise", reason: "\(denoise) is outside 0…1") }

        let shape = input.tensor.shape
        let (batch, frames) = try unet.latentSize(shape)
        let cond = try Self.batched(positive.embeddings, batch: batch, port: "positive", width: unet.config.crossAttentionDim)
        let uncond = try Self.batched(negative.embeddings, batch: batch, port: "negative", width: unet.config.crossAttentionDim)
        guard cond.shape[1] == uncond.shape[1] else {
            throw NodeError.invalidValue(port: "negative", reason: "\(uncond.shape[1]) tokens, the positive prompt has \(cond.shape[1])")
        }

        // Callers that predate the parameter (and pass every other one) get its default.
        let file = try Self.schedulerConfigFile(inputs.has("scheduler_config") ? try inputs.string("scheduler_config") : "auto", unet: unet)
        var config = try file.schedulerConfig(for: kind)
        if let betas = BetaSchedule(rawValue: betaSchedule) { config.betaSchedule = betas }
        var scheduler = try kind.make(config: config, steps: steps, eta: eta)
        let start = denoise >= 1 ? 0 : SchedulerKind.startIndex(steps: steps, denoise: denoise)
        guard start < steps else {
            return NodeOutputs("latent", .latent, input)  // denoise 0: nothing to do
        }

        let useGuidance = guidance > 1
        let batching = inputs.has("guidance_batch") ? try GuidanceBatching.parse(try inputs.string("guidance_batch")) : .auto
        let split = useGuidance && batching.splits(latentShape: shape, firstBlockChannels: unet.config.blockOutChannels.first ?? 320)
        let model = try unet.makeModel()
        context.log("\(unet.kindDescription): \(batch)×\(frames) frames of "
                    + "\(shape[3])×\(shape[4]) latents, \(steps - start) \(kind.rawValue) steps (scheduler config \(file.source), "
                    + "\(config.betaSchedule.rawValue) betas), guidance \(guidance)\(split ? " in two passes" : ""), seed \(seed)")
        // The same draws diffusers makes: prepare_latents' randn first, then (ancestral / η > 0) one randn per step.
        let generator = TorchGenerator(seed: UInt64(bitPattern: Int64(seed)))
        var latents: Tensor
        if start == 0 {
            latents = generator.randn(shape) * scheduler.initNoiseSigma
        } else {
            latents = try scheduler.addNoise(to: input.tensor, noise: generator.randn(shape), stepIndex: start)
        }
        let jointContext = useGuidance && !split ? concat([uncond, cond], axis: 0) : cond
        let timesteps = scheduler.timesteps
        let total = steps - start
        for i in start..<steps {
            try context.checkCancellation()
            let scaled = try scheduler.scaleModelInput(latents, stepIndex: i)
            var eps: Tensor
            if split {
                // Two passes: the second starts after the first's activations are freed.
                let unconditional = try model(scaled, timestep: timesteps[i], context: uncond)
                let conditional = try model(scaled, timestep: timesteps[i], context: cond)
                eps = unconditional + guidance * (conditional - unconditional)
            } else if useGuidance {
                let parts = chunk(try model(concat([scaled, scaled], axis: 0), timestep: timesteps[i], context: jointContext), 2, axis: 0)
                eps = parts[0] + guidance * (parts[1] - parts[0])
            } else {
                eps = try model(scaled, timestep: timesteps[i], context: cond)
            }
            if unet.unet3D != nil, scheduler.usesNoise {
                // diffusers' TextToVideoSDPipeline folds the frames into the batch for the scheduler step, so its
                // per-step noise is drawn frame-major, [B·F, C, h, w].
                let noise = permute(generator.randn([batch, frames, shape[1], shape[3], shape[4]]), [0, 2, 1, 3, 4])
                latents = try scheduler.step(modelOutput: eps, stepIndex: i, sample: latents, noise: noise)
            } else {
                latents = try scheduler.step(modelOutput: eps, stepIndex: i, sample: latents, generator: generator)
            }
            context.progress(step: i - start + 1, total: total, unit: "step")
        }
        return NodeOutputs("latent", .latent, LatentValue(tensor: latents, frameRate: input.frameRate))
    }

    /// The scheduler configuration `scheduler_config` names: `auto` (the UNet's folder's, else MagicTime's),
    /// `magictime`, or a `scheduler_config.json` path.
    public static func schedulerConfigFile(_ value: String, unet: UNetValue) throws -> SchedulerConfigFile {
        switch value {
        case "auto": return unet.schedulerConfig ?? .magicTime
        case "magictime": return .magicTime
        case "": throw NodeError.invalidValue(port: "scheduler_config", reason: "empty: give auto, magictime or a scheduler_config.json path")
        default: return try SchedulerConfigFile.read(value)
        }
    }

    /// Embeddings `[1 or B, S, D]` as `[B, S, D]`.
    static func batched(_ e: Tensor, batch: Int, port: String, width: Int) throws -> Tensor {
        guard e.rank == 3, e.shape[2] == width, e.shape[0] == 1 || e.shape[0] == batch else {
            throw NodeError.invalidValue(port: port, reason: "embeddings \(e.shape) do not fit a batch of \(batch) with the UNet's "
                                         + "cross-attention width \(width) (is the text encoder from the same checkpoint?)")
        }
        return e.shape[0] == batch ? e : concat(Array(repeating: e, count: batch), axis: 0)
    }
}

/// How `Sample` runs classifier-free guidance's two branches through the UNet.
///
/// One pass on the batch `[uncond, cond]` is what diffusers does; its activations are twice a single branch's, and at
/// 16 frames of 512² the widest (the first block's, B·F × 320 × 64 × 64 floats) is 168 MB per tensor with dozens alive
/// at once. Two passes give the same result but for summation order (no layer mixes samples of a batch) with
/// half the activation memory, at the cost of reading (and, for 16-bit weights, widening) every weight twice a step.
public enum GuidanceBatching: String, CaseIterable, Sendable {
    case auto, joint, split

    /// `auto` splits when one joint pass's first-block activation would be larger than this (64 MiB: 256² × 16
    /// frames stays joint at 42 MB, 512² × 16 splits).
    public static let splitAboveBytes = 64 << 20

    /// The value of `guidance_batch`, or an error naming the choices.
    static func parse(_ value: String) throws -> GuidanceBatching {
        guard let parsed = GuidanceBatching(rawValue: value) else {
            throw NodeError.invalidValue(port: "guidance_batch", reason: "\"\(value)\" is not auto, joint or split")
        }
        return parsed
    }

    /// Whether guidance on latents `[B, C, F, h, w]` runs as two passes.
    public func splits(latentShape shape: [Int], firstBlockChannels: Int) -> Bool {
        switch self {
        case .joint: return false
        case .split: return true
        case .auto:
            let jointBytes = 2 * shape.dropFirst(2).reduce(shape[0], *) * firstBlockChannels * MemoryLayout<Float>.size
            return jointBytes > Self.splitAboveBytes
        }
    }
}
