import DiffusionPlugin
import Foundation
import LapseGraph
import LapseTensor
import LapseWeights

/// StreamingT2V's autoregressive extension loop (stage 2), independent of the networks that run inside it.
///
/// Each new chunk of `chunk` frames is denoised from fresh noise by DDIM, conditioned on the last `context` frames of
/// the chunk before it; its frames `context…` are new. Noise comes from ONE generator for the whole video, in the
/// original's order: per chunk `randn(1, 4, chunk, h, w)` starting latents, then per DDIM step `randn(chunk, 4, h, w)`
/// (frame-major, as diffusers' text-to-video pipeline folds frames into the batch for the scheduler) for η.
public struct StreamExtension: Sendable {
    /// Frames per generated chunk (16 in StreamingT2V).
    public var chunk: Int
    /// Frames of the previous chunk each chunk is conditioned on (8); `chunk − context` frames are new per chunk.
    public var context: Int
    /// DDIM steps per chunk.
    public var steps: Int
    /// DDIM η (1 in StreamingT2V: fresh noise every step).
    public var eta: Float
    /// The base model's DDIM configuration (its folder's `scheduler_config.json`).
    public var scheduler: SchedulerConfig
    /// Latent channels of the UNet (4).
    public var latentChannels: Int
    /// Pixels per latent along each side (8 for the SD VAE).
    public var downsamplingFactor: Int

    /// The noise prediction (guidance applied) for `latents` `[1, C, chunk, h, w]` at `timestep`, conditioned on
    /// `conditioningFrames` `[context, 3, H, W]` in [-1, 1].
    public typealias Denoise = @Sendable (_ latents: Tensor, _ timestep: Float, _ conditioningFrames: Tensor) throws -> Tensor
    /// Pixels `[chunk, 3, H, W]` in [0, 1] of latents `[1, C, chunk, h, w]`.
    public typealias Decode = @Sendable (_ latents: Tensor) throws -> Tensor

    public init(chunk: Int = 16, context: Int = 8, steps: Int = 50, eta: Float = 1, scheduler: SchedulerConfig,
                latentChannels: Int = 4, downsamplingFactor: Int = 8) {
        self.chunk = chunk
        self.context = context
        self.steps = steps
        self.eta = eta
        self.scheduler = scheduler
        self.latentChannels = latentChannels
        self.downsamplingFactor = downsamplingFactor
    }

    /// New frames per generated chunk.
    public var stride: Int { chunk - context }

    /// Generates the chunk that follows `previous` (`[≥ context, 3, H, W]` pixels in [0, 1]): all `chunk` frames
    /// `[chunk, 3, H, W]` in [0, 1], the first `context` of which overlap `previous`' last ones.
    public func nextChunk(after previous: Tensor, generator: TorchGenerator, denoise: Denoise, decode: Decode,
                          onStep: (Int) throws -> Void = { _ in }) throws -> Tensor {
        let n = previous.shape[0], height = previous.shape[2], width = previous.shape[3]
        let h = height / downsamplingFactor, w = width / downsamplingFactor
        // The conditioning frames enter the CAM as pixels in [-1, 1].
        let conditioning = slice(previous, axis: 0, start: n - context, end: n) * 2 - 1
        var ddim = try DDIMScheduler(config: scheduler, steps: steps, eta: eta)
        var latents = generator.randn([1, latentChannels, chunk, h, w]) * ddim.initNoiseSigma
        let timesteps = ddim.timesteps
        for i in 0..<steps {
            let eps = try denoise(latents, timesteps[i], conditioning)
            var noise: Tensor?
            if eta > 0 {
                noise = permute(generator.randn([chunk, latentChannels, h, w]), [1, 0, 2, 3])
                    .reshaped([1, latentChannels, chunk, h, w])
            }
            latents = try ddim.step(modelOutput: eps, stepIndex: i, sample: latents, noise: noise)
            try onStep(i)
        }
        return try decode(latents)
    }

    /// Total output frames for `generatedChunks` chunks after a first chunk of `firstChunk` frames.
    public func length(firstChunk: Int, generatedChunks: Int) -> Int { firstChunk + generatedChunks * stride }

    /// The two valid totals nearest to `length` (`chunk + k·stride`, k ≥ 0), for error messages.
    public func nearestValidLengths(to length: Int) -> (below: Int?, above: Int) {
        let k = max(0, length - chunk) / stride
        let below = chunk + k * stride
        if below == length { return (length, length) }
        return (length < chunk ? nil : below, length < chunk ? chunk : below + stride)
    }
}

/// The finished chunks a `StreamExtend` run keeps in its work folder (`--cache-dir`), so a run killed mid-way
/// resumes from the last finished chunk and produces the same bits as an uninterrupted one.
///
/// One safetensors file per chunk, `chunk-NNNNN.safetensors`: the chunk's frames `[chunk, 3, H, W]` as F32 and, in
/// the metadata, the generator's state after that chunk. Files are written atomically; one that does not read back
/// as expected is ignored with the chunks after it (they are generated again).
struct ChunkStore: Sendable {
    let directory: URL

    private static let generatorKey = "lapse.generator"

    func url(_ index: Int) -> URL {
        directory.appendingPathComponent(String(format: "chunk-%05d.safetensors", index))
    }

    /// Saves chunk `index` (1 = the first generated chunk) with the generator state that follows it.
    func save(_ frames: Tensor, index: Int, generator: TorchGenerator) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let state = generator.snapshot.map { String($0, radix: 16) }.joined(separator: ",")
        try SafeTensors.write([(name: "frames", tensor: frames)], metadata: [Self.generatorKey: state], to: url(index).path)
    }

    /// Chunk `index` and the generator after it, or `nil` when it was not saved; throws when the file is damaged.
    func load(_ index: Int, expectedShape: [Int]) throws -> (frames: Tensor, generator: TorchGenerator)? {
        let file = url(index)
        guard FileKind(path: file.path) != .missing else { return nil }
        let checkpoint = try CheckpointFile.open(file.path)
        guard checkpoint.shape(of: "frames") == expectedShape else {
            throw NodeError.failed("\(file.path): frames \(checkpoint.shape(of: "frames") ?? []), expected \(expectedShape)")
        }
        let words = (checkpoint.metadata[Self.generatorKey] ?? "").split(separator: ",").compactMap { UInt64($0, radix: 16) }
        guard let generator = TorchGenerator(snapshot: words) else {
            throw NodeError.failed("\(file.path): no valid generator state")
        }
        return (try checkpoint.tensor("frames"), generator)
    }

    /// Removes chunk files from `index` on (after a damaged one: they followed from it).
    func discard(from index: Int) {
        var i = index
        while FileKind(path: url(i).path) != .missing {
            try? FileManager.default.removeItem(at: url(i))
            i += 1
        }
    }
}
