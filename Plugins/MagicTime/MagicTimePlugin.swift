import LapseGraph

/// Registers the MagicTime family: what MagicTime adds on top of the shared diffusion nodes (DiffusionPlugin) —
/// its three adapters, merged the way MagicTime merges them.
public enum MagicTimePlugin: NodePlugin {
    public static let name = "MagicTimePlugin"

    public static func register(into registry: NodeRegistry) throws {
        for node in nodeTypes { try registry.register(node, source: name) }
    }

    /// Every node type of the family; adding a node adds one line here.
    static let nodeTypes: [any Node.Type] = [ApplyMagicAdapter.self]
}
