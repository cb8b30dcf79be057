import LapseGraph
import LapseMedia

/// `Resize {width, height, mode}` ← `frames` → `frames`.
struct ResizeNode: Node {
    static let schema = NodeSchema(
        type: "Resize", category: "media/transform",
        summary: "Resamples frames (antialiased when shrinking); 0 or -1 on one side keeps the aspect ratio.",
        inputs: [
            InputSpec("frames", .frames, doc: "input frames"),
            InputSpec("width", .int, default: .int(0), min: -1, max: 32768, doc: "output width, 0/-1 = from height and aspect"),
            InputSpec("height", .int, default: .int(0), min: -1, max: 32768, doc: "output height, 0/-1 = from width and aspect"),
            InputSpec("mode", .string, default: .string("lanczos"), allowed: ResizeMode.allCases.map(\.rawValue),
                      doc: "lanczos (default), bicubic, bilinear, area or nearest"),
        ],
        outputs: [OutputSpec("frames", .frames, doc: "resized frames")])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = try inputs.frames("frames")
        let width = try inputs.int("width"), height = try inputs.int("height")
        guard let mode = ResizeMode(rawValue: try inputs.string("mode")) else {
            throw NodeError.invalidValue(port: "mode", reason: "unknown resize mode")
        }
        var info = frames.info
        if let w = info.width, let h = info.height {
            (info.width, info.height) = try Self.checkedSize(width: width, height: height, sourceWidth: w, sourceHeight: h)
        }
        let resized = frames.map(info: info) { frame in
            var frame = frame
            // Checked per frame before anything is allocated: a stream of unknown size is only known here.
            let (w, h) = try Self.checkedSize(width: width, height: height, sourceWidth: frame.width, sourceHeight: frame.height)
            frame.image = FrameOps.resize(frame.image, width: w, height: h, mode: mode)
            return frame
        }
        return NodeOutputs("frames", .frames, resized)
    }

    /// The output size, refused unless it is within MediaLimits (`Resize {32768, 0}` on a square source would be
    /// 32768x32768, 12 GiB of float pixels, before any later check saw it).
    static func checkedSize(width: Int, height: Int, sourceWidth: Int, sourceHeight: Int) throws -> (Int, Int) {
        let (w, h) = try FrameOps.targetSize(width: width, height: height, sourceWidth: sourceWidth, sourceHeight: sourceHeight)
        guard MediaLimits.allows(width: w, height: h) else {
            throw NodeError.invalidValue(port: width > 0 ? "width" : "height", reason:
                "resizing \(sourceWidth)x\(sourceHeight) frames to \(w)x\(h) is outside the supported frame sizes (\(MediaLimits.description))")
        }
        return (w, h)
    }
}
