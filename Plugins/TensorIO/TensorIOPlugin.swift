import LapseGraph

/// Registers the TensorIO node family.
public enum TensorIOPlugin: NodePlugin {
    public static let name = "TensorIOPlugin"

    public static func register(into registry: NodeRegistry) throws {
        for node in nodeTypes { try registry.register(node, source: name) }
    }

    /// Every node type of the family; adding a node adds one line here.
    static let nodeTypes: [any Node.Type] = [LoadTensors.self, SaveTensors.self]
}
