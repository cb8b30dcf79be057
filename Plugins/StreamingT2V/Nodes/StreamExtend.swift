import DiffusionPlugin
import Foundation
import LapseGraph
import LapseTensor
import LapseWeights

/// `StreamExtend {length = 80, chunk = 16, context = 8, steps = 50, guidance = 7.5, eta = 1.0, seed = 33}` ← `unet`,
/// `cam`, `positive`, `negative`, `appearance`, `vae`, `frames` → `frames`: StreamingT2V's stage 2.
///
/// Emits the input chunk, then `chunk − context` new frames per generated chunk as each chunk finishes: the output
/// is a stream, so a 1,200-frame video never sits in memory (the loop holds the previous chunk only). Noise comes
/// from one `torch.Generator("cpu").manual_seed(seed)` for the whole video, drawn in the original's order (see
/// `StreamExtension`). With `--cache-dir`, each finished chunk and the generator state after it are kept in the
/// node's work folder, so a run killed mid-way resumes from the last finished chunk with an identical result.
public struct StreamExtend: Node {
    public static let schema = NodeSchema(
        type: "StreamExtend", category: "video/streamingt2v",
        summary: "StreamingT2V's autoregressive extension: chunk after chunk conditioned on the last frames (CAM) and the anchor's appearance (APM), streamed",
        inputs: [
            InputSpec("unet", .streamingUNet, doc: "base UNet with CAM mergers and APM mixing, from LoadStreamingT2V"),
            InputSpec("cam", .cam, doc: "the CAM branch, from LoadStreamingT2V"),
            InputSpec("positive", .conditioning, doc: "prompt embeddings (77 tokens)"),
            InputSpec("negative", .conditioning, doc: "negative-prompt embeddings (the unconditional branch)"),
            InputSpec("appearance", .appearance, doc: "APM anchor tokens from EncodeAppearance"),
            InputSpec("vae", .vae, doc: "autoencoder that decodes each chunk"),
            InputSpec("frames", .frames, doc: "the first chunk (stage 1's video), RGB at the model's size (256×256 for the release)"),
            InputSpec("length", .int, default: .int(80), min: 1, max: 1_000_000,
                      doc: "total frames: chunk + k·(chunk − context), e.g. 80 = 16 + 8·8"),
            InputSpec("chunk", .int, default: .int(16), min: 2, max: 1024, doc: "frames per generated chunk"),
            InputSpec("context", .int, default: .int(8), min: 1, max: 1023, doc: "frames of the previous chunk each chunk is conditioned on"),
            InputSpec("steps", .int, default: .int(50), min: 1, max: 1000, doc: "DDIM steps per chunk"),
            InputSpec("guidance", .float, default: .float(7.5), min: 0, max: 100, doc: "classifier-free guidance scale (≤ 1 disables it)"),
            InputSpec("eta", .float, default: .float(1.0), min: 0, max: 1, doc: "DDIM stochasticity (StreamingT2V: 1)"),
            InputSpec("seed", .int, default: .int(33), min: 0, doc: "torch.Generator(\"cpu\").manual_seed(seed), one for the whole video"),
        ],
        outputs: [OutputSpec("frames", .frames, doc: "the input chunk, then each chunk's new frames as it finishes, RGB in [0, 1]")],
        checkParameters: { params in
            guard case .int(let length)? = params["length"], case .int(let chunk)? = params["chunk"],
                  case .int(let context)? = params["context"] else { return [] }
            guard context < chunk else {
                return [ParameterProblem(parameter: "context", message: "\(context) must be smaller than chunk (\(chunk)): each chunk adds chunk − context new frames")]
            }
            let loop = StreamExtension(chunk: chunk, context: context, scheduler: SchedulerConfig())
            let nearest = loop.nearestValidLengths(to: length)
            guard nearest.above != length else { return [] }
            let options = [nearest.below, nearest.above].compactMap { $0 }.map(String.init).joined(separator: " or ")
            return [ParameterProblem(parameter: "length", message: "\(length) is not \(chunk) + k·\(chunk - context) frames (the first chunk, then \(chunk - context) new frames per chunk); use \(options)")]
        })

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let unet = try inputs.get("unet", .streamingUNet)
        let cam = try inputs.get("cam", .cam)
        let positive = try inputs.get("positive", .conditioning)
        let negative = try inputs.get("negative", .conditioning)
        let appearance = try inputs.get("appearance", .appearance)
        let vae = try inputs.get("vae", .vae)
        let input = try inputs.frames("frames")
        let length = try inputs.int("length"), chunkFrames = try inputs.int("chunk"), contextFrames = try inputs.int("context")
        let steps = try inputs.int("steps"), seed = try inputs.int("seed")
        let guidance = Float(try inputs.float("guidance")), eta = Float(try inputs.float("eta"))

        let ddim = try unet.scheduler?.schedulerConfig(for: .ddim) ?? SchedulerConfig()
        let loop = StreamExtension(chunk: chunkFrames, context: contextFrames, steps: steps, eta: eta, scheduler: ddim,
                                   latentChannels: unet.config.inChannels, downsamplingFactor: vae.downsamplingFactor)
        guard contextFrames < chunkFrames, (length - chunkFrames) % loop.stride == 0, length >= chunkFrames else {
            throw NodeError.invalidValue(port: "length", reason: "\(length) is not chunk + k·(chunk − context) for chunk \(chunkFrames), context \(contextFrames)")
        }
        let generatedChunks = (length - chunkFrames) / loop.stride
        let text = try Self.tokens(positive, negative, width: unet.config.crossAttentionDim)
        let size = unet.config.sampleSize.map { $0 * vae.downsamplingFactor }
        let store = context.workDirectory.map { ChunkStore(directory: $0) }
        let scale = Float(vae.config.scalingFactor)
        let fps = input.info.frameRate ?? (8, 1)
        var info = input.info
        info.frameRate = fps
        info.frameCount = input.info.frameCount.map { $0 + generatedChunks * loop.stride }

        let models = LazyModels(unet: unet, cam: cam, vae: vae)
        let frames = Frames(info: info) {
            let upstream = try input.makeSource()
            var pending: [Frame] = []
            var emitted = 0
            var previous: Tensor?          // the last chunk, [n, 3, H, W] in [0, 1]
            var generator: TorchGenerator?
            var done = 0                    // generated chunks so far
            var started = false
            let time = { (i: Int) in Double(i) * Double(fps.denominator) / Double(fps.numerator) }

            func emit(_ pixels: Tensor, from start: Int) {
                let n = pixels.shape[0], h = pixels.shape[2], w = pixels.shape[3]
                for i in start..<n {
                    let image = slice(pixels, axis: 0, start: i, end: i + 1).reshaped([3, h, w])
                    pending.append(Frame(image: image, index: emitted, time: time(emitted)))
                    emitted += 1
                }
            }

            func readFirstChunk() throws {
                var first: [Frame] = []
                while let frame = try upstream.next() {
                    guard first.count < chunkFrames else {
                        throw NodeError.invalidValue(port: "frames", reason: "more than \(chunkFrames) frames: StreamExtend continues one chunk of at most chunk (\(chunkFrames)) frames; cut the input with FrameRange")
                    }
                    guard frame.channels == 3 else {
                        throw NodeError.invalidValue(port: "frames", reason: "frame \(first.count) has \(frame.channels) channels; StreamingT2V continues RGB video")
                    }
                    if let size, frame.width != size || frame.height != size {
                        throw NodeError.invalidValue(port: "frames", reason: "frames are \(frame.width)×\(frame.height), the model works at \(size)×\(size): add a Resize {width: \(size), height: \(size)} before StreamExtend")
                    }
                    if let f0 = first.first, f0.width != frame.width || f0.height != frame.height {
                        throw NodeError.invalidValue(port: "frames", reason: "frame \(first.count) is \(frame.width)×\(frame.height), frame 0 \(f0.width)×\(f0.height)")
                    }
                    if frame.width % vae.downsamplingFactor != 0 || frame.height % vae.downsamplingFactor != 0 {
                        throw NodeError.invalidValue(port: "frames", reason: "frames are \(frame.width)×\(frame.height); both sides must be multiples of \(vae.downsamplingFactor)")
                    }
                    first.append(frame)
                }
                guard first.count >= contextFrames else {
                    throw NodeError.invalidValue(port: "frames", reason: "\(first.count) frames; each chunk is conditioned on the last \(contextFrames) frames of the one before, so the input needs at least \(contextFrames)")
                }
                let pixels = concat(first.map { $0.image.reshaped([1, 3, $0.height, $0.width]) }, axis: 0)
                emit(pixels, from: 0)
                previous = pixels
                generator = TorchGenerator(seed: UInt64(bitPattern: Int64(seed)))
            }

            func generateNext() throws {
                guard let last = previous, let rng = generator else { return }
                let index = done + 1
                if let store {
                    do {
                        if let saved = try store.load(index, expectedShape: [chunkFrames] + Array(last.shape.dropFirst())) {
                            emit(saved.frames, from: contextFrames)
                            previous = saved.frames
                            generator = saved.generator
                            done = index
                            context.log("chunk \(index)/\(generatedChunks): taken from the work folder")
                            context.progress(step: done * steps, total: generatedChunks * steps, unit: "step")
                            return
                        }
                    } catch {
                        context.log("warning: ignored a damaged chunk file (\(error.localizedDescription)); generating chunk \(index) again")
                    }
                }
                if let store { store.discard(from: index) }
                let (denoiser, decoder) = try models.get()
                let uncondText = text.negative, condText = text.positive
                let useGuidance = guidance > 1
                let pixels = try loop.nextChunk(after: last, generator: rng, denoise: { latents, t, frames in
                    if !useGuidance {
                        return try denoiser.predictNoise(latents: latents, timestep: t, text: condText,
                                                         appearance: appearance.conditional, conditioningFrames: frames)
                    }
                    let out = try denoiser.predictNoise(latents: concat([latents, latents], axis: 0), timestep: t,
                                                        text: concat([uncondText, condText], axis: 0),
                                                        appearance: concat([appearance.unconditional, appearance.conditional], axis: 0),
                                                        conditioningFrames: frames)
                    let parts = chunk(out, 2, axis: 0)
                    return parts[0] + guidance * (parts[1] - parts[0])
                }, decode: { latents in
                    try Self.decode(latents, model: decoder, scale: scale)
                }, onStep: { step in
                    try context.checkCancellation()
                    context.progress(step: done * steps + step + 1, total: generatedChunks * steps, unit: "step")
                })
                if let store {
                    // The work folder is an optimisation: failing to write it must not fail the video.
                    do { try store.save(pixels, index: index, generator: rng) } catch {
                        context.log("warning: could not keep chunk \(index) in the work folder (\(error.localizedDescription)); a restart will generate it again")
                    }
                }
                emit(pixels, from: contextFrames)
                previous = pixels
                done = index
            }

            return ClosureFrameSource {
                if !started { started = true; try readFirstChunk() }
                while pending.isEmpty && done < generatedChunks {
                    try context.checkCancellation()
                    try generateNext()
                }
                return pending.isEmpty ? nil : pending.removeFirst()
            }
        }
        context.log("extending to \(length) frames: \(generatedChunks) chunks of \(chunkFrames) (\(loop.stride) new each), \(steps) DDIM steps, η \(eta), guidance \(guidance), seed \(seed)")
        return NodeOutputs("frames", .frames, frames)
    }

    /// Text embeddings `[1, tokens, width]` of both branches, checked against the UNet.
    static func tokens(_ positive: Conditioning, _ negative: Conditioning, width: Int) throws -> (positive: Tensor, negative: Tensor) {
        for (port, c) in [("positive", positive), ("negative", negative)] {
            guard c.embeddings.rank == 3, c.embeddings.shape[0] == 1, c.embeddings.shape[2] == width else {
                throw NodeError.invalidValue(port: port, reason: "embeddings \(c.embeddings.shape) are not [1, tokens, \(width)]: encode the prompt with LoadStreamingT2V's (or text-to-video-ms-1.7b's) clip")
            }
        }
        guard positive.embeddings.shape[1] == negative.embeddings.shape[1] else {
            throw NodeError.invalidValue(port: "negative", reason: "\(negative.embeddings.shape[1]) tokens, the positive prompt has \(positive.embeddings.shape[1])")
        }
        return (positive.embeddings, negative.embeddings)
    }

    /// Pixels `[F, 3, H, W]` in [0, 1] of latents `[1, C, F, h, w]`, decoded frame by frame as the original does.
    static func decode(_ latents: Tensor, model: AutoencoderKL, scale: Float) throws -> Tensor {
        let c = latents.shape[1], f = latents.shape[2], h = latents.shape[3], w = latents.shape[4]
        var out: [Tensor] = []
        for i in 0..<f {
            let one = slice(latents, axis: 2, start: i, end: i + 1).reshaped([1, c, h, w]) / scale
            out.append(clamp(try model.decode(one) * 0.5 + 0.5, min: 0, max: 1))
        }
        return concat(out, axis: 0)
    }
}

/// The denoiser and decoder, built on first use by whichever frame source needs them (a second pass over the stream
/// or a fully resumed run builds nothing).
private final class LazyModels: @unchecked Sendable {
    private let lock = NSLock()
    private let unet: StreamingUNetValue, cam: CAMValue, vae: VAEValue
    private var built: (StreamingT2VDenoiser, AutoencoderKL)?

    init(unet: StreamingUNetValue, cam: CAMValue, vae: VAEValue) {
        self.unet = unet
        self.cam = cam
        self.vae = vae
    }

    func get() throws -> (StreamingT2VDenoiser, AutoencoderKL) {
        try lock.withLock {
            if let built { return built }
            let models = (try StreamingT2VDenoiser(base: unet.weights, cam: cam.weights, config: unet.config), try vae.makeModel())
            built = models
            return models
        }
    }
}
