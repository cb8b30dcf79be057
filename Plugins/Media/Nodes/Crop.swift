import LapseGraph
import LapseMedia

/// `Crop {x, y, width, height}` ← `frames` → `frames`.
struct CropNode: Node {
    static let schema = NodeSchema(
        type: "Crop", category: "media/transform",
        summary: "Cuts a rectangle out of every frame; it must lie inside the frame.",
        inputs: [
            // Bounds follow MediaLimits (no frame is wider or taller than 32768), so validation refuses absurd values.
            InputSpec("frames", .frames, doc: "input frames"),
            InputSpec("x", .int, default: .int(0), min: 0, max: Double(MediaLimits.maxDimension - 1), doc: "left edge (default 0)"),
            InputSpec("y", .int, default: .int(0), min: 0, max: Double(MediaLimits.maxDimension - 1), doc: "top edge (default 0)"),
            InputSpec("width", .int, min: 1, max: Double(MediaLimits.maxDimension), doc: "width of the rectangle"),
            InputSpec("height", .int, min: 1, max: Double(MediaLimits.maxDimension), doc: "height of the rectangle"),
        ],
        outputs: [OutputSpec("frames", .frames, doc: "cropped frames")])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = try inputs.frames("frames")
        let x = try inputs.int("x"), y = try inputs.int("y")
        let width = try inputs.int("width"), height = try inputs.int("height")
        if let w = frames.info.width, let h = frames.info.height,
           !FrameOps.cropFits(x: x, y: y, width: width, height: height, frameWidth: w, frameHeight: h) {
            throw NodeError.invalidValue(port: "width", reason: "crop \(width)x\(height) at (\(x), \(y)) does not fit inside the \(w)x\(h) frames")
        }
        var info = frames.info
        info.width = width
        info.height = height
        let cropped = frames.map(info: info) { frame in
            var frame = frame
            frame.image = try FrameOps.crop(frame.image, x: x, y: y, width: width, height: height)
            return frame
        }
        return NodeOutputs("frames", .frames, cropped)
    }
}
