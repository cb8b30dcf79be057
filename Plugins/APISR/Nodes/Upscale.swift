import Foundation
import LapseGraph
import LapseTensor

/// `Upscale {tile: 0, overlap: 16, max_memory_mb: 2048}` ← `model`, `frames` → `frames`.
///
/// Streams: each frame is upscaled when the consumer pulls it. RGB goes through the network; an alpha channel is
/// resized bicubic; gray is replicated to RGB and averaged back.
public struct Upscale: Node {
    public static let schema = NodeSchema(
        type: "Upscale", category: "image/upscaling",
        summary: "Super-resolves frames with an upscale model, tiled within a memory budget and blended seamlessly",
        inputs: [
            InputSpec("model", .upscaleModel, doc: "from LoadUpscaleModel"),
            InputSpec("frames", .frames, doc: "images or video frames (gray, gray+alpha, RGB or RGBA)"),
            InputSpec("tile", .int, default: .int(0), min: 0, max: 16384,
                      doc: "tile side in input pixels; 0 picks it from max_memory_mb"),
            InputSpec("overlap", .int, default: .int(16), min: 0, max: 512,
                      doc: "context pixels around each tile; neighbours are cross-faded over this width"),
            InputSpec("max_memory_mb", .int, default: .int(2048), min: 64, max: 1_048_576,
                      doc: "memory budget for the output frame and one tile's working set"),
        ],
        outputs: [OutputSpec("frames", .frames, doc: "frames scale× larger")])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let model = try inputs.get("model", .upscaleModel)
        let frames = try inputs.frames("frames")
        let tile = try inputs.int("tile")
        let overlap = try inputs.int("overlap")
        let budget = try inputs.int("max_memory_mb")
        let network = model.network
        guard tile >= 0 else { throw NodeError.invalidValue(port: "tile", reason: "must be 0 (automatic) or positive, got \(tile)") }
        guard overlap >= 0 else { throw NodeError.invalidValue(port: "overlap", reason: "must be ≥ 0, got \(overlap)") }
        guard budget > 0 else { throw NodeError.invalidValue(port: "max_memory_mb", reason: "must be positive, got \(budget)") }
        if tile > 0, tile < network.minimumTile {
            throw NodeError.invalidValue(
                port: "tile", reason: "\(tile) is smaller than the \(network.architecture) network's minimum tile of \(network.minimumTile) pixels")
        }
        let upscaler = TiledUpscaler(network: network, tile: tile, overlap: overlap, maxMemoryMB: budget)
        var info = frames.info
        info.width = info.width.map { $0 * network.scale }
        info.height = info.height.map { $0 * network.scale }
        let total = frames.info.frameCount ?? 0
        return NodeOutputs("frames", .frames, frames.map(info: info) { frame in
            try context.checkCancellation()
            let out = try Self.upscale(frame, with: upscaler, context: context)
            context.progress(step: frame.index + 1, total: total, unit: "frame")
            return out
        })
    }

    /// Upscales one frame of any channel layout.
    public static func upscale(_ frame: Frame, with upscaler: TiledUpscaler, context: NodeContext? = nil) throws -> Frame {
        let (c, h, w) = (frame.channels, frame.height, frame.width)
        guard h > 0, w > 0 else {
            throw NodeError.invalidValue(port: "frames", reason: "frame \(frame.index) is empty (\(w)×\(h) pixels)")
        }
        let s = upscaler.network.scale
        let image = frame.image
        let colour: Tensor
        switch c {
        case 1, 2: colour = replicateGray(image)
        default: colour = slice(image, axis: 0, start: 0, end: 3)
        }
        var rgb = try upscaler.upscale(colour.reshaped([1, 3, h, w]), progress: { done, total in
            context?.progress(step: done, total: total, unit: "tile")
        }, checkCancellation: { try context?.checkCancellation() })
        rgb = rgb.reshaped([3, h * s, w * s])
        var planes: [Tensor] = [c <= 2 ? mean(rgb, axes: [0], keepDims: true) : rgb]
        if c == 2 || c == 4 {
            let alpha = slice(image, axis: 0, start: c - 1, end: c).reshaped([1, 1, h, w])
            let resized = resize(alpha, height: h * s, width: w * s, mode: .bicubic)
            planes.append(clamp(resized, min: 0, max: 1).reshaped([1, h * s, w * s]))
        }
        let out = planes.count == 1 ? planes[0] : concat(planes, axis: 0)
        return Frame(image: out, index: frame.index, time: frame.time, color: frame.color)
    }

    private static func replicateGray(_ image: Tensor) -> Tensor {
        let gray = slice(image, axis: 0, start: 0, end: 1)
        return concat([gray, gray, gray], axis: 0)
    }
}
