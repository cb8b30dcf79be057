import LapseGraph
import LapseMedia

/// `ConcatFrames` ← `first`, `second` → `frames`.
struct ConcatFramesNode: Node {
    static let schema = NodeSchema(
        type: "ConcatFrames", category: "media/transform",
        summary: "Plays two frame streams back to back; the second's timestamps follow the first's.",
        inputs: [
            InputSpec("first", .frames, doc: "frames that come first"),
            InputSpec("second", .frames, doc: "frames that follow"),
        ],
        outputs: [OutputSpec("frames", .frames, doc: "both streams, renumbered")])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = FrameOps.concat(try inputs.frames("first"), try inputs.frames("second"))
        return NodeOutputs("frames", .frames, frames)
    }
}
