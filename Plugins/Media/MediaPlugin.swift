import LapseGraph
import LapseMedia

/// Registers the Media node family.
public enum MediaPlugin: NodePlugin {
    public static let name = "MediaPlugin"

    public static func register(into registry: NodeRegistry) throws {
        for node in nodeTypes { try registry.register(node, source: name) }
    }

    /// Every node type of the family; adding a node adds one line here.
    static let nodeTypes: [any Node.Type] = [
        LoadImageNode.self,
        SaveImageNode.self,
        LoadVideoNode.self,
        SaveVideoNode.self,
        FilterNode.self,
        ResizeNode.self,
        CropNode.self,
        PadNode.self,
        FrameRangeNode.self,
        ConcatFramesNode.self,
    ]
}

extension NodeContext {
    /// Per-frame progress that also stops a stream once the run is cancelled.
    var frameProgress: FrameProgress {
        { [self] done, total in
            progress(step: done, total: total, unit: "frame")
            try checkCancellation()
        }
    }
}
