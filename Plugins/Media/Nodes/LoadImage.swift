import LapseGraph
import LapseMedia

/// `LoadImage {path}` → `frames`: one still image as a one-frame stream.
struct LoadImageNode: Node {
    static let schema = NodeSchema(
        type: "LoadImage", category: "media/io",
        summary: "Reads an image: PNG via libpng (8/16-bit, gray, gray+alpha, RGB, RGBA, palette, interlaced); JPEG, WebP and others via libavcodec.",
        inputs: [InputSpec("path", .string, doc: "image file to read")],
        outputs: [OutputSpec("frames", .frames, doc: "a stream of one frame, keeping the file's channels (1-4)")],
        inputFileParams: ["path"])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = try MediaIO.loadImage(path: try inputs.string("path"))
        return NodeOutputs("frames", .frames, frames)
    }
}
