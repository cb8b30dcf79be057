import LapseGraph
import LapseMedia

/// `LoadVideo {path, start, max_frames, every_nth, fps}` → `frames`, decoded lazily.
struct LoadVideoNode: Node {
    static let schema = NodeSchema(
        type: "LoadVideo", category: "media/io",
        summary: "Decodes a video (mp4, webm, mkv, mov, gif, image sequences such as frame_%05d.png) frame by frame via libav.",
        inputs: [
            InputSpec("path", .string, doc: "video file or image-sequence pattern"),
            InputSpec("start", .int, default: .int(0), min: 0, max: 100_000_000, doc: "source frames to skip (default 0)"),
            InputSpec("max_frames", .int, default: .int(0), min: 0, max: 100_000_000, doc: "at most this many frames, 0 = all (default)"),
            InputSpec("every_nth", .int, default: .int(1), min: 1, max: 1_000_000, doc: "keep every n-th source frame (default 1)"),
            InputSpec("fps", .float, default: .float(0), min: 0, max: 1000,
                      doc: "resample to this rate by dropping/repeating frames, 0 = source rate (default)"),
        ],
        outputs: [OutputSpec("frames", .frames, doc: "decoded frames (RGB, RGBA, gray; 16-bit sources keep 16-bit precision)")],
        inputFileParams: ["path"])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = try MediaIO.loadVideo(path: try inputs.string("path"), start: try inputs.int("start"),
                                           maxFrames: try inputs.int("max_frames"), everyNth: try inputs.int("every_nth"),
                                           fps: try inputs.float("fps"), progress: context.frameProgress)
        return NodeOutputs("frames", .frames, frames)
    }
}
