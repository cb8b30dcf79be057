import LapseGraph
import LapseMedia

/// `Pad {multiple_of, mode}` ← `frames` → `frames`.
struct PadNode: Node {
    static let schema = NodeSchema(
        type: "Pad", category: "media/transform",
        summary: "Pads the right and bottom edges so width and height become multiples of a number.",
        inputs: [
            InputSpec("frames", .frames, doc: "input frames"),
            InputSpec("multiple_of", .int, default: .int(8), min: 1, max: 4096, doc: "size multiple (default 8)"),
            InputSpec("mode", .string, default: .string("reflect"), allowed: PadMode.allCases.map(\.rawValue),
                      doc: "reflect (default), replicate or zeros"),
        ],
        outputs: [OutputSpec("frames", .frames, doc: "padded frames")])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = try inputs.frames("frames")
        let multiple = try inputs.int("multiple_of")
        guard multiple >= 1 else { throw NodeError.invalidValue(port: "multiple_of", reason: "must be at least 1") }
        guard let mode = PadMode(rawValue: try inputs.string("mode")) else {
            throw NodeError.invalidValue(port: "mode", reason: "unknown pad mode")
        }
        var info = frames.info
        if let w = info.width, let h = info.height {
            (info.width, info.height) = try Self.paddedSize(w, h, multiple: multiple)
        }
        let padded = frames.map(info: info) { frame in
            var frame = frame
            // Checked before the padded frame is allocated: frames of unknown size arrive here unchecked.
            _ = try Self.paddedSize(frame.width, frame.height, multiple: multiple)
            frame.image = FrameOps.pad(frame.image, multipleOf: multiple, mode: mode)
            return frame
        }
        return NodeOutputs("frames", .frames, padded)
    }

    /// The padded size, refused unless it is within MediaLimits.
    static func paddedSize(_ width: Int, _ height: Int, multiple: Int) throws -> (Int, Int) {
        guard let w = FrameOps.paddedSize(width, multipleOf: multiple), let h = FrameOps.paddedSize(height, multipleOf: multiple),
              MediaLimits.allows(width: w, height: h) else {
            throw NodeError.invalidValue(port: "multiple_of", reason:
                "padding \(width)x\(height) frames to a multiple of \(multiple) is outside the supported frame sizes (\(MediaLimits.description))")
        }
        return (w, h)
    }
}
