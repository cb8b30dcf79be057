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
    private let conflicts = Mutex<[String: RegistryError]>([:])
    private let persistables = Mutex<[String: any PersistableValue.Type]>([:])

    public init() {}

    /// Remembers that a second source tried to register an existing type name (a plugin clash). The first
    /// registration stays usable for listings, but a graph using the name is rejected naming both sources.
    public func recordConflict(_ error: RegistryError) {
        guard case .duplicateType(let type, _, _) = error else { return }
        conflicts.withLock { if $0[type] == nil { $0[type] = error } }
    }

    /// The clash recorded for a type name, if two sources registered it.
    public func conflict(for type: String) -> RegistryError? { conflicts.withLock { $0[type] } }

    /// Registers a data type whose values the result cache may write to `--cache-dir`.
    public func registerPersistable(_ type: any PersistableValue.Type) {
        persistables.withLock { $0[type.persistenceTag] = type }
    }

    /// The persistable data type with this tag.
    public func persistableType(tag: String) -> (any PersistableValue.Type)? { persistables.withLock { $0[tag] } }

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
