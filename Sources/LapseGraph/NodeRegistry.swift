import Foundation
import Synchronization

/// Errors raised while registering node types.
public enum RegistryError: LocalizedError, Sendable {
    case duplicateType(type: String, firstSource: String, secondSource: String)

    public var errorDescription: String? {
        switch self {
        case .duplicateType(let type, let first, let second):
            "node type \"\(type)\" is registered twice: by \(first) and by \(second)"
        }
    }
}

/// The set of node types a graph may use, each remembered with where it came from (a module or a plugin file).
public final class NodeRegistry: Sendable {
    /// A registered node type.
    public struct Entry: Sendable {
        public let nodeType: any Node.Type
        /// Where the type came from: a built-in module name or a plugin library path.
        public let source: String
        public var schema: NodeSchema { nodeType.schema }
    }

    private let entries = Mutex<[String: Entry]>([:])

    public init() {}

    /// Registers a node type. Two types with the same name are an error naming both sources.
    public func register(_ nodeType: any Node.Type, source: String) throws {
        let name = nodeType.schema.type
        try entries.withLock { table in
            if let existing = table[name] {
                throw RegistryError.duplicateType(type: name, firstSource: existing.source, secondSource: source)
            }
            table[name] = Entry(nodeType: nodeType, source: source)
        }
    }

    /// The entry for a type name.
    public func entry(for type: String) -> Entry? { entries.withLock { $0[type] } }

    /// All entries sorted by category, then type name.
    public var all: [Entry] {
        entries.withLock { Array($0.values) }.sorted {
            ($0.schema.category, $0.schema.type) < ($1.schema.category, $1.schema.type)
        }
    }
}

/// A family of nodes (a module under `Plugins/`, or an external plugin library) registers itself through this.
public protocol NodePlugin {
    /// Name shown as the source of its node types.
    static var name: String { get }
    /// Registers every node type of the family.
    static func register(into registry: NodeRegistry) throws
}
