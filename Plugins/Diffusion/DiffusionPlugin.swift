import LapseGraph

/// Registers the shared diffusion node family (text encoders, UNets, schedulers, VAEs).
public enum DiffusionPlugin: NodePlugin {
    public static let name = "DiffusionPlugin"

    public static func register(into registry: NodeRegistry) throws {
        for node in nodeTypes { try registry.register(node, source: name) }
    }

    /// Every node type of the family; adding a node adds one line here.
    static let nodeTypes: [any Node.Type] = []
}
