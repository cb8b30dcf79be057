import LapseGraph
import LapseMedia

/// `SaveImage {path, bit_depth}` ← `frames`: PNG files, a numbered sequence for several frames.
struct SaveImageNode: Node {
    static let schema = NodeSchema(
        type: "SaveImage", category: "media/io",
        summary: "Writes frames as PNG via libpng (.png paths only); several frames need a frame-number pattern such as out_%05d.png (numbered from 1), written all at once when complete.",
        inputs: [
            InputSpec("frames", .frames, doc: "frames to save"),
            InputSpec("path", .string, doc: "output .png path, or a pattern like out_%05d.png for several frames (at most %010d)"),
            InputSpec("bit_depth", .int, default: .int(8), allowed: ["8", "16"], doc: "8 or 16 bits per sample (default 8)"),
        ],
        isOutput: true, outputFileParams: ["path"])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let path = try inputs.string("path")
        let written = try MediaIO.saveImages(try inputs.frames("frames"), path: path, bitDepth: try inputs.int("bit_depth"),
                                             progress: context.frameProgress)
        context.log(written.count == 1 ? "wrote \(path)" : "wrote \(written.count) images (\(written[0]) …)")
        return .none
    }
}
