import LapseGraph
import LapseMedia

/// `Filter {graph}` ← `frames` → `frames`: any libavfilter video filter chain.
struct FilterNode: Node {
    static let schema = NodeSchema(
        type: "Filter", category: "media/transform",
        summary: "Runs frames through a libavfilter chain, e.g. \"scale=640:-2,fps=8\" or \"hflip,eq=contrast=1.2\".",
        inputs: [
            InputSpec("frames", .frames, doc: "input frames"),
            InputSpec("graph", .string, doc: "libavfilter filter graph text (one video input, one video output)"),
        ],
        outputs: [OutputSpec("frames", .frames, doc: "filtered frames (gray, RGB or RGBA float)")])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = try MediaIO.filter(try inputs.frames("frames"), graph: try inputs.string("graph"),
                                        progress: context.frameProgress)
        return NodeOutputs("frames", .frames, frames)
    }
}
