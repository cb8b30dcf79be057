import Foundation
import LapseGraph
import LapseTensor

/// `VAEDecode {tile}` ← `vae`, `latent` → `frames`.
///
/// Latents are divided by the VAE's `scaling_factor` (0.18215) and decoded one frame at a time, as MagicTime does,
/// lazily while the downstream node pulls frames, so memory holds one frame's activations. Output pixels are
/// `(x/2 + 0.5).clamp(0, 1)`.
public struct VAEDecode: Node {
    public static let schema = NodeSchema(
        type: "VAEDecode", category: "video/diffusion",
        summary: "Decodes latents to frames with the VAE, one frame at a time (optionally in overlapping spatial tiles)",
        inputs: [
            InputSpec("vae", .vae, doc: "autoencoder from LoadCheckpoint"),
            InputSpec("latent", .latent, doc: "[B, 4, F, h, w] latents from Sample"),
            InputSpec("tile", .int, default: .int(0), min: 0, max: 8192,
                      doc: "tile size in pixels (0: whole frames); tiles overlap by a quarter and are blended, bounding memory at large sizes"),
        ],
        outputs: [OutputSpec("frames", .frames, doc: "RGB frames in [0, 1], videos of the batch one after another, at the latent's frame rate")])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let vae = try inputs.get("vae", .vae)
        let latent = try inputs.get("latent", .latent)
        let tile = try inputs.int("tile")
        let shape = latent.tensor.shape
        guard shape.count == 5, shape[1] == vae.config.latentChannels else {
            throw NodeError.invalidValue(port: "latent", reason: "latents must be [B, \(vae.config.latentChannels), F, h, w], got \(shape)")
        }
        let f = vae.downsamplingFactor
        if tile > 0, tile % f != 0 || tile < 4 * f {
            throw NodeError.invalidValue(port: "tile", reason: "\(tile) must be a multiple of \(f) and at least \(4 * f) pixels")
        }
        let model = try vae.makeModel()
        let batch = shape[0], frames = shape[2], height = shape[3] * f, width = shape[4] * f
        let total = batch * frames
        let scale = Float(vae.config.scalingFactor)
        let latents = latent.tensor
        let fps = latent.frameRate
        let info = FrameStreamInfo(width: width, height: height, frameRate: Self.rational(fps), frameCount: total)
        let tileLatent = tile / f
        let frameStream = Frames(info: info) {
            var index = 0
            return ClosureFrameSource {
                guard index < total else { return nil }
                try context.checkCancellation()
                let b = index / frames, t = index % frames
                let one = slice(slice(latents, axis: 0, start: b, end: b + 1), axis: 2, start: t, end: t + 1)
                    .reshaped([1, shape[1], shape[3], shape[4]]) / scale
                let decoded = try Self.decode(one, model: model, tile: tileLatent, factor: f)
                let image = clamp(decoded * 0.5 + 0.5, min: 0, max: 1).reshaped([decoded.shape[1], height, width])
                defer { index += 1 }
                context.progress(step: index + 1, total: total, unit: "frame")
                return Frame(image: image, index: index, time: Double(index) / fps)
            }
        }
        return NodeOutputs("frames", .frames, frameStream)
    }

    /// `fps` as a fraction (8 → 8/1, 29.97 → 30000/1001).
    static func rational(_ fps: Double) -> (numerator: Int, denominator: Int) {
        if fps.rounded() == fps { return (Int(fps), 1) }
        return (Int((fps * 1001).rounded()), 1001)
    }

    /// One latent `[1, C, h, w]` decoded whole, or with `TiledMap` in tiles of at most `tile` latent pixels that
    /// overlap by a quarter: each tile's core is surrounded by `tile / 8` latent pixels of context, and neighbouring
    /// pixels are cross-faded with complementary linear ramps across the whole overlap. The VAE's mid-block attends
    /// over the whole frame, so a tile sees less than the whole frame and seams are softened, not exact.
    static func decode(_ latent: Tensor, model: AutoencoderKL, tile: Int, factor f: Int) throws -> Tensor {
        let h = latent.shape[2], w = latent.shape[3]
        guard tile > 0, tile < h || tile < w else { return try model.decode(latent) }
        let context = max(tile / 8, 1)
        let tiler = TiledMap(scale: f, context: context, blend: 2 * context, tile: tile - 2 * context)
        return try tiler.apply(latent) { try model.decode($0) }
    }
}
