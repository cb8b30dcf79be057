import LapseGraph

/// Registers the Media node family.
public enum MediaPlugin: NodePlugin {
    public static let name = "MediaPlugin"

    public static func register(into registry: NodeRegistry) throws {
        for node in nodeTypes { try registry.register(node, source: name) }
    }

    /// Every node type of the family; adding a node adds one line here.
    static let nodeTypes: [any Node.Type] = []
}
