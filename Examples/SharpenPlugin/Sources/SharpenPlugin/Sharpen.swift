import LapseGraph
import LapseTensor

/// An example external plugin: an unsharp-mask node, built as `libSharpenPlugin.so` and loaded with
/// `lapse --plugin-path DIR`. See docs/writing-nodes.md for the walkthrough.
///
/// `Sharpen` adds `amount` × (image − blurred image) back to every frame, where the blur is a 3×3 binomial kernel
/// ([1 2 1] ⊗ [1 2 1] / 16) with edge pixels repeated. Alpha channels are passed through unchanged.
public struct Sharpen: Node {
    public static let schema = NodeSchema(
        type: "Sharpen", category: "image/filter", summary: "Sharpens frames with an unsharp mask (3×3 binomial blur).",
        inputs: [InputSpec("frames", .frames, doc: "Frames to sharpen."),
                 InputSpec("amount", .float, default: .float(1), min: 0, max: 10,
                           doc: "Strength: 0 leaves frames unchanged, 1 adds the full detail layer once.")],
        outputs: [OutputSpec("frames", .frames, doc: "Sharpened frames, clamped to [0, 1].")])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = try inputs.frames("frames")
        let amount = Float(try inputs.float("amount"))
        let total = frames.info.frameCount ?? 0
        let sharpened = frames.map { frame in
            var out = frame
            out.image = Sharpen.unsharpMask(frame.image, amount: amount)
            context.progress(step: frame.index + 1, total: total, unit: "frame")
            return out
        }
        return NodeOutputs("frames", .frames, sharpened)
    }

    /// Unsharp mask of a `[C, H, W]` image; colour channels only (channel 2 of gray+alpha, 4 of RGBA untouched).
    public static func unsharpMask(_ image: Tensor, amount: Float) -> Tensor {
        let channels = image.shape[0], height = image.shape[1], width = image.shape[2]
        let colour = channels == 2 || channels == 4 ? channels - 1 : channels
        var result = Tensor(zeros: image.shape)
        var row = [Float](repeating: 0, count: width * height)
        image.withUnsafeBufferPointer { src in
            result.withUnsafeMutableBufferPointer { dst in
                row.withUnsafeMutableBufferPointer { tmp in
                    for c in 0..<channels {
                        let plane = c * height * width
                        guard c < colour else {
                            for i in 0..<(height * width) { dst[plane + i] = src[plane + i] }
                            continue
                        }
                        // Horizontal [1 2 1] pass into tmp, then vertical pass and the unsharp combination.
                        for y in 0..<height {
                            let base = plane + y * width
                            for x in 0..<width {
                                let l = src[base + max(x - 1, 0)], m = src[base + x], r = src[base + min(x + 1, width - 1)]
                                tmp[y * width + x] = l + 2 * m + r
                            }
                        }
                        for y in 0..<height {
                            let up = max(y - 1, 0) * width, mid = y * width, down = min(y + 1, height - 1) * width
                            for x in 0..<width {
                                let blurred = (tmp[up + x] + 2 * tmp[mid + x] + tmp[down + x]) / 16
                                let original = src[plane + mid + x]
                                dst[plane + mid + x] = min(max(original + amount * (original - blurred), 0), 1)
                            }
                        }
                    }
                }
            }
        }
        return result
    }
}

/// The plugin's C entry point: the host calls it once after `dlopen`, passing its registrar.
@_cdecl("lapse_plugin_register")
public func lapsePluginRegister(_ registrar: UnsafeMutableRawPointer) -> Int32 {
    PluginRegistrar.from(registrar).register(Sharpen.self)
    return 0
}
