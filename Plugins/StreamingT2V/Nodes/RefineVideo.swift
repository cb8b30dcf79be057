import DiffusionPlugin
import Foundation
import LapseGraph
import LapseMedia
import LapseTensor

/// `RefineVideo {width, height, noise_level, steps, guidance, guide_rescale, chunk, overlap, seed, crop_padding}`
/// ← `unet`, `positive`, `negative`, `vae`, `frames` → `frames`.
///
/// StreamingT2V's stage 3 (MS-Vid2Vid-XL with randomized blending), as the original's `video2video_randomized`:
/// every frame is resized to fit `width`×`height` keeping its aspect (bicubic; a square video becomes
/// `height`×`height`), centred on a black `width`×`height` canvas, encoded by the VAE (the posterior sampled),
/// noised to `noise_level` with one noise tensor for the whole video and solved back by `RefinerSampler` (DPM++ 2M
/// SDE, v-prediction, CFG with guide rescale, randomized blending of `chunk`-frame windows inside every
/// evaluation). The result is decoded frame by frame as it is pulled; `crop_padding` cuts the black bars off again.
///
/// Random draws, all seeded by `seed`: one `TorchGenerator(seed)` gives the posterior noise of each frame in frame
/// order (`randn([1, 4, h, w])`), then the start noise, then one Brownian increment per solver step that adds noise
/// (see `SeededRefinerNoise`); the blending offsets come from Python's `random.seed(seed)` as the original draws
/// them (`SeededRefinerOffsets`).
///
/// Differences from the original, on purpose: any length of at least `chunk` frames works (the last window is
/// placed at `frames − chunk`, see docs/diffusion.md; the original trims to 16·n + 8 frames); frames stay in float
/// (the original round-trips them through 8-bit and a lossy mp4 before encoding); when the padding is odd the extra
/// column or row goes right/bottom so the canvas is exactly `width`×`height` (the original's is one pixel short).
public struct RefineVideo: Node {
    public static let schema = NodeSchema(
        type: "RefineVideo", category: "video/streamingt2v",
        summary: "StreamingT2V's refiner: MS-Vid2Vid-XL SDEdit at 1280×720 with randomized blending of overlapping chunks",
        inputs: [
            InputSpec("unet", .unet, doc: "MS-Vid2Vid-XL UNet from LoadVid2VidModel"),
            InputSpec("positive", .conditioning, doc: "the prompt (the original appends \", \") through LoadVid2VidModel's clip"),
            InputSpec("negative", .conditioning, doc: "the negative prompt (\"\" in StreamingT2V) through the same clip"),
            InputSpec("vae", .vae, doc: "SD2.1 autoencoder from LoadVid2VidModel"),
            InputSpec("frames", .frames, doc: "the video to refine, at least `chunk` frames of one size"),
            InputSpec("width", .int, default: .int(1280), min: 8, doc: "canvas width in pixels (a multiple of 8·2^(levels−1), 64 for the release)"),
            InputSpec("height", .int, default: .int(720), min: 8, doc: "canvas height in pixels (a multiple of 16; height/8 even at every UNet level but the lowest)"),
            InputSpec("noise_level", .int, default: .int(600), min: 1, max: 1000, doc: "SDEdit strength: timesteps of 1000 the video is noised to"),
            InputSpec("steps", .int, default: .int(30), min: 1, max: 1000, doc: "solver steps (network evaluations per chunk and guidance pass)"),
            InputSpec("guidance", .float, default: .float(7.5), doc: "classifier-free guidance scale (1: positive pass only)"),
            InputSpec("guide_rescale", .float, default: .float(0.2), min: 0, max: 1, doc: "guide rescale ρ (std over each chunk)"),
            InputSpec("chunk", .int, default: .int(24), min: 1, doc: "frames per network call"),
            InputSpec("overlap", .int, default: .int(8), min: 0, doc: "frames shared by neighbouring chunks; random cuts fall inside them"),
            InputSpec("seed", .int, default: .int(0), min: 0, doc: "seeds the posterior, start and Brownian noise and the blending offsets"),
            InputSpec("crop_padding", .bool, default: .bool(true), doc: "cut the black bars added to reach width×height from the output"),
        ],
        outputs: [OutputSpec("frames", .frames, doc: "the refined video (its content size with crop_padding, else width×height)")],
        checkParameters: { params in
            var problems: [ParameterProblem] = []
            if case .int(let chunk)? = params["chunk"], case .int(let overlap)? = params["overlap"], overlap >= chunk {
                problems.append(ParameterProblem(parameter: "overlap", message: "\(overlap) must be less than chunk (\(chunk)): each later chunk starts chunk − overlap frames after the one before"))
            }
            return problems
        })

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let unet = try inputs.get("unet", .unet)
        guard let unetConfig = unet.vid2vid else {
            throw NodeError.invalidValue(port: "unet", reason: "RefineVideo samples MS-Vid2Vid-XL's UNet (LoadVid2VidModel), not a \(unet.kindDescription)")
        }
        let vae = try inputs.get("vae", .vae)
        let width = try inputs.int("width"), height = try inputs.int("height")
        let seed = UInt64(bitPattern: Int64(try inputs.int("seed")))
        let cropPadding = try inputs.bool("crop_padding")
        let sampler = try RefinerSampler(steps: try inputs.int("steps"), noiseLevel: try inputs.int("noise_level"),
                                         guidance: Float(try inputs.float("guidance")),
                                         guideRescale: Float(try inputs.float("guide_rescale")),
                                         chunk: try inputs.int("chunk"), overlap: try inputs.int("overlap"))
        let factor = vae.downsamplingFactor
        guard width % factor == 0, height % factor == 0 else {
            throw NodeError.invalidValue(port: width % factor == 0 ? "height" : "width",
                                         reason: "\(width % factor == 0 ? height : width) is not a multiple of \(factor) (the VAE downsamples by \(factor))")
        }
        do {
            try Vid2VidUNet.checkLatentSize(height: height / factor, width: width / factor, levels: unetConfig.dimMult.count)
        } catch {
            throw NodeError.invalidValue(port: "width/height", reason: "\(width)×\(height): \(error.localizedDescription)")
        }
        let positive = try Self.embeddings(inputs, "positive", width: unetConfig.contextDim)
        let negative = try Self.embeddings(inputs, "negative", width: unetConfig.contextDim)
        let input = try inputs.frames("frames")

        // Encode as the frames arrive: only latents are kept, never the whole pixel video.
        let generator = TorchGenerator(seed: seed)
        let autoencoder = try vae.makeModel()
        var latents: [Tensor] = []
        var geometry: Geometry?
        let source = try input.makeSource()
        let expected = input.info.frameCount
        while let frame = try source.next() {
            try context.checkCancellation()
            let g = try geometry ?? Geometry(sourceWidth: frame.width, sourceHeight: frame.height, width: width, height: height)
            guard frame.width == g.sourceWidth, frame.height == g.sourceHeight else {
                throw NodeError.invalidValue(port: "frames", reason: "frame \(latents.count) is \(frame.width)×\(frame.height), frame 0 \(g.sourceWidth)×\(g.sourceHeight)")
            }
            if geometry == nil {
                geometry = g
                context.log("\(g.sourceWidth)×\(g.sourceHeight) → \(g.contentWidth)×\(g.contentHeight) (bicubic) on a \(width)×\(height) canvas at (\(g.left), \(g.top))")
            }
            let pixels = g.canvas(VAEEncode.rgb(frame.image)) * 2 - 1
            let noise = generator.randn([1, vae.config.latentChannels, height / factor, width / factor])
            latents.append(try autoencoder.encodeSampling(pixels.reshaped([1, 3, height, width]), noise: noise))
            context.progress(step: latents.count, total: expected ?? 0, unit: "frame encoded")
        }
        guard let geometry else { throw NodeError.invalidValue(port: "frames", reason: "the stream has no frames") }
        guard latents.count >= sampler.chunk else {
            throw NodeError.invalidValue(port: "frames", reason: "\(latents.count) frames is fewer than chunk = \(sampler.chunk); give at least \(sampler.chunk) frames or lower chunk")
        }
        // [F, C, h, w] → [1, C, F, h, w]
        let stacked = concat(latents, axis: 0)
        latents = []
        let s = stacked.shape
        let video = permute(stacked, [1, 0, 2, 3]).reshaped([1, s[1], s[0], s[2], s[3]])

        let model = try Vid2VidUNet(config: unetConfig, weights: unet.weights)
        let starts = try sampler.chunkStarts(frames: s[0])
        let passes = sampler.guidance == 1 ? 1 : 2
        context.log("MS-Vid2Vid-XL: \(s[0]) frames as \(starts.count) chunks of \(sampler.chunk) (overlap \(sampler.overlap)), "
                    + "\(sampler.steps) DPM++ 2M SDE steps from t = \(sampler.noiseLevel - 1), guidance \(sampler.guidance), "
                    + "\(sampler.steps * starts.count * passes) network evaluations of \(sampler.chunk) × \(height / factor)×\(width / factor)")
        let refined = try sampler.refine(
            latents: video, noise: SeededRefinerNoise(generator: generator), offsets: SeededRefinerOffsets(seed: seed),
            onStep: { step in
                context.progress(step: step.index + 1, total: step.count, unit: "step")
                try context.checkCancellation()
            },
            denoise: { chunk, timestep, conditional in
                try context.checkCancellation()
                return try model(chunk, timestep: Float(timestep), context: conditional ? positive : negative)
            })

        var info = input.info
        info.frameCount = s[0]
        info.frameRate = input.info.frameRate ?? (8, 1)
        info.width = cropPadding ? geometry.contentWidth : width
        info.height = cropPadding ? geometry.contentHeight : height
        info.color = .rgb8
        let fps = info.frameRate!
        let scale = Float(vae.config.scalingFactor)
        let frames = Frames(info: info) {
            let decoder = try vae.makeModel()
            var index = 0
            return ClosureFrameSource {
                guard index < s[0] else { return nil }
                defer { index += 1 }
                let latent = slice(refined, axis: 2, start: index, end: index + 1).reshaped([1, s[1], s[2], s[3]])
                let decoded = try decoder.decode(latent * (1 / scale)).reshaped([3, height, width])
                var image = clamp(decoded * 0.5 + 0.5, min: 0, max: 1)
                if cropPadding { image = try geometry.content(of: image) }
                return Frame(image: image, index: index, time: Double(index) * Double(fps.denominator) / Double(fps.numerator))
            }
        }
        return NodeOutputs("frames", .frames, frames)
    }

    /// One prompt's embeddings `[1, tokens, width]`.
    static func embeddings(_ inputs: NodeInputs, _ port: String, width: Int) throws -> Tensor {
        let e = try inputs.get(port, .conditioning).embeddings
        guard e.rank == 3, e.shape[0] == 1, e.shape[2] == width else {
            throw NodeError.invalidValue(port: port, reason: "embeddings \(e.shape) are not one prompt [1, tokens, \(width)] (encode it with LoadVid2VidModel's clip)")
        }
        return e
    }

    /// Where a source frame lands on the canvas: the original's `resize_to_fit` then `pad_to_fit`.
    public struct Geometry: Sendable {
        /// The input frames' size.
        public let sourceWidth: Int, sourceHeight: Int
        /// The canvas size (`width`, `height` params).
        public let width: Int, height: Int
        /// The resized frame's size on the canvas.
        public let contentWidth: Int, contentHeight: Int
        /// The resized frame's top-left corner on the canvas.
        public let left: Int, top: Int

        /// The placement of `w`×`h` frames on a `width`×`height` canvas.
        public init(sourceWidth w: Int, sourceHeight h: Int, width: Int, height: Int) throws {
            sourceWidth = w
            sourceHeight = h
            self.width = width
            self.height = height
            // resize_to_fit: the side that limits keeps the canvas size, the other is truncated (Python's int()).
            if Double(height) / Double(h) > Double(width) / Double(w) {
                contentWidth = width
                contentHeight = max(1, Int(Double(h) * Double(width) / Double(w)))
            } else {
                contentWidth = max(1, Int(Double(w) * Double(height) / Double(h)))
                contentHeight = height
            }
            left = (width - contentWidth) / 2
            top = (height - contentHeight) / 2
        }

        /// The frame resized into its place on a black canvas, `[3, height, width]` in [0, 1].
        public func canvas(_ rgb: Tensor) -> Tensor {
            // PIL's bicubic output is clipped to 8 bits; clamping keeps the overshoot out the same way.
            let resized = clamp(FrameOps.resize(rgb, width: contentWidth, height: contentHeight, mode: .bicubic), min: 0, max: 1)
            return FrameOps.place(resized, onCanvasWidth: width, height: height, x: left, y: top)
        }

        /// The content area of a canvas-sized image.
        public func content(of image: Tensor) throws -> Tensor {
            try FrameOps.crop(image, x: left, y: top, width: contentWidth, height: contentHeight)
        }
    }
}
