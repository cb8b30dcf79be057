import LapseGraph

/// Registers the StreamingT2V family: what StreamingT2V adds on top of the shared diffusion nodes (DiffusionPlugin) —
/// the CAM branch and its cross-attention mergers, the appearance preserver (APM), the autoregressive extension, and
/// the MS-Vid2Vid-XL refiner (stage 3).
public enum StreamingT2VPlugin: NodePlugin {
    public static let name = "StreamingT2VPlugin"

    public static func register(into registry: NodeRegistry) throws {
        for node in nodeTypes { try registry.register(node, source: name) }
    }

    /// Every node type of the family; adding a node adds one line here.
    static let nodeTypes: [any Node.Type] = [LoadStreamingT2V.self, EncodeAppearance.self, StreamExtend.self,
                                                 LoadVid2VidModel.self, RefineVideo.self]
}
