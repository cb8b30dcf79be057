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
            (info.width, info.height) = try FrameOps.targetSize(width: width, height: height, sourceWidth: w, sourceHeight: h)
        }
        let resized = frames.map(info: info) { frame in
            var frame = frame
            let (w, h) = try FrameOps.targetSize(width: width, height: height, sourceWidth: frame.width, sourceHeight: frame.height)
            frame.image = FrameOps.resize(frame.image, width: w, height: h, mode: mode)
            return frame
        }
        return NodeOutputs(["frames": .object(resized)])
    }
}
