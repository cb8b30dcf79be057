import DiffusionPlugin
import Foundation
import LapseGraph
import LapseTensor

/// `EncodeAppearance {frame = 0}` ← `apm`, `frames` → `appearance`: the APM anchor tokens of one frame (StreamingT2V
/// anchors on the first frame of the first chunk for the whole video) and the unconditional branch's tokens of a
/// uniform grey image, as the original makes them.
public struct EncodeAppearance: Node {
    public static let schema = NodeSchema(
        type: "EncodeAppearance", category: "video/streamingt2v",
        summary: "StreamingT2V's appearance preservation (APM): image-encoder tokens of an anchor frame that condition every chunk",
        inputs: [
            InputSpec("apm", .apm, doc: "image encoder and resampler from LoadStreamingT2V"),
            InputSpec("frames", .frames, doc: "frames holding the anchor (StreamingT2V: the first chunk)"),
            InputSpec("frame", .int, default: .int(0), min: 0, max: 1_000_000, doc: "index of the anchor frame in the stream"),
        ],
        outputs: [OutputSpec("appearance", .appearance, doc: "anchor tokens (and the grey image's for the unconditional branch)")])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let apm = try inputs.get("apm", .apm)
        let wanted = try inputs.int("frame")
        let source = try inputs.frames("frames").makeSource()
        var seen = 0
        var anchor: Frame?
        while let frame = try source.next() {
            if seen == wanted { anchor = frame; break }
            seen += 1
        }
        guard let anchor else {
            throw NodeError.invalidValue(port: "frame", reason: "the stream has \(seen) frames, so there is no frame \(wanted) (frames count from 0)")
        }
        guard anchor.channels == 3 else {
            throw NodeError.invalidValue(port: "frames", reason: "frame \(wanted) has \(anchor.channels) channels; the image encoder reads RGB")
        }
        let encoder = try apm.makeEncoder()
        // The original feeds the anchor as pixels in [-1, 1].
        let pixels = (anchor.image * 2 - 1).reshaped([1, 3, anchor.height, anchor.width])
        let conditional = try encoder.tokens(anchorPixels: pixels)
        let unconditional = try encoder.unconditionalTokens(like: pixels)
        context.log("appearance anchor: frame \(wanted), \(anchor.width)×\(anchor.height) → \(conditional.shape[1]) tokens × \(conditional.shape[2])")
        return NodeOutputs("appearance", .appearance, AppearanceValue(conditional: conditional, unconditional: unconditional))
    }
}
