import LapseGraph

/// Registers the APISR node family.
public enum APISRPlugin: NodePlugin {
    public static let name = "APISRPlugin"

    public static func register(into registry: NodeRegistry) throws {
        for node in nodeTypes { try registry.register(node, source: name) }
    }

    /// Every node type of the family; adding a node adds one line here.
    static let nodeTypes: [any Node.Type] = [LoadUpscaleModel.self, Upscale.self]
}
