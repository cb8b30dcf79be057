import LapseGraph
import LapseMedia

/// `SaveImage {path, bit_depth, overwrite}` ← `frames`: PNG files, a numbered sequence for several frames; the path
/// may be a template with `{stem}` (the input file's name) and `{n}` (the next free number).
struct SaveImageNode: Node {
    static let schema = NodeSchema(
        type: "SaveImage", category: "media/io",
        summary: "Writes frames as PNG via libpng (.png paths only); several frames need a frame-number pattern such as out_%05d.png (numbered from 1), written all at once when complete. {stem} and {n} in the file name name it after the input file and number it.",
        inputs: [
            InputSpec("frames", .frames, doc: "frames to save"),
            InputSpec("path", .string, doc: "output .png path, or a pattern like out_%05d.png for several frames (at most %010d); {stem} = the input file's name without extension, {n} = the lowest number whose file does not exist yet (e.g. out/{stem}_x4.png, out/{stem}_{n}.png)"),
            InputSpec("bit_depth", .int, default: .int(8), allowed: ["8", "16"], doc: "8 or 16 bits per sample (default 8)"),
            NodeSchema.overwriteInput,
        ],
        isOutput: true, outputFileParams: ["path"], checkParameters: NodeSchema.outputPathCheck(["path"]))

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = try inputs.frames("frames")
        let target = try MediaIO.outputTarget(try inputs.string("path"), for: frames, overwrite: try inputs.overwrite(),
                                              sequence: true)
        let path = target.path
        let written = try MediaIO.saveImages(frames, path: path, bitDepth: try inputs.int("bit_depth"),
                                             replacing: target.replacing, progress: context.frameProgress)
        context.log(written.count == 1 ? "wrote \(path)" : "wrote \(written.count) images (\(written[0]) …)")
        return .none
    }
}
