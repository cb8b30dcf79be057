import LapseGraph
import LapseMedia

/// `FrameRange {start, count, step}` ← `frames` → `frames`.
struct FrameRangeNode: Node {
    static let schema = NodeSchema(
        type: "FrameRange", category: "media/transform",
        summary: "Keeps frames start, start+step, … (at most count), renumbered from 0.",
        inputs: [
            InputSpec("frames", .frames, doc: "input frames"),
            InputSpec("start", .int, default: .int(0), min: 0, max: 100_000_000, doc: "first frame kept (default 0)"),
            InputSpec("count", .int, default: .int(0), min: 0, max: 100_000_000, doc: "frames kept, 0 = to the end (default)"),
            InputSpec("step", .int, default: .int(1), min: 1, max: 1_000_000, doc: "keep every step-th frame (default 1)"),
        ],
        outputs: [OutputSpec("frames", .frames, doc: "the selected frames")])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = try FrameOps.range(try inputs.frames("frames"), start: try inputs.int("start"),
                                        count: try inputs.int("count"), step: try inputs.int("step"))
        return NodeOutputs("frames", .frames, frames)
    }
}
