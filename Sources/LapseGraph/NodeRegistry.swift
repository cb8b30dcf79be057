import Foundation
import Synchronization

/// Errors raised while registering node types.
public enum RegistryError: LocalizedError, Sendable {
    case duplicateType(type: String, firstSource: String, secondSource: String)
    /// A port-type name already in use for another Swift type (two plugins each declaring `DataType<…>("Model")`).
    case conflictingPortType(name: String, firstType: String, firstUse: String, secondType: String, secondUse: String)

    public var errorDescription: String? {
        switch self {
        case .duplicateType(let type, let first, let second):
            "node type \"\(type)\" is registered twice: by \(first) and by \(second)"
        case .conflictingPortType(let name, let firstType, let firstUse, let secondType, let secondUse):
            "port type \"\(name)\" is \(firstType) (\(firstUse)), but \(secondUse) declares it as \(secondType); one name "
                + "carries one Swift type, so links between the two could not work: give the new type its own name, or use the existing type"
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

    /// Node types by name and the port types they use by name, under one lock so a refused registration adds neither.
    private struct Tables {
        var entries: [String: Entry] = [:]
        /// Each port-type name with the first port type declared under it and where that was.
        var portTypes: [String: (type: PortType, use: String)] = [:]
    }

    private let tables: Mutex<Tables>
    private let conflicts = Mutex<[String: RegistryError]>([:])
    private let persistables = Mutex<[String: any PersistableValue.Type]>([:])

    public init() {
        var tables = Tables()
        // The runtime's own types are taken from the start, whichever node registers first.
        for type in [PortType.int, .float, .bool, .string, PortType(.frames)] {
            tables.portTypes[type.name] = (type, "the graph runtime")
        }
        self.tables = Mutex(tables)
    }

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

    /// Registers a node type. Two types with the same name are an error naming both sources, and so is a port-type
    /// name the node uses for another Swift type than the nodes registered before it (checked here once, so every
    /// link between ports of one name joins values of one Swift type).
    public func register(_ nodeType: any Node.Type, source: String) throws {
        let schema = nodeType.schema
        let name = schema.type
        try tables.withLock { tables in
            if let existing = tables.entries[name] {
                throw RegistryError.duplicateType(type: name, firstSource: existing.source, secondSource: source)
            }
            var added: [String: (type: PortType, use: String)] = [:]
            for (port, type) in schema.inputs.map({ ($0.name, $0.type) }) + schema.outputs.map({ ($0.name, $0.type) }) {
                let use = "port \"\(port)\" of \(name) from \(source)"
                guard let known = tables.portTypes[type.name] ?? added[type.name] else {
                    added[type.name] = (type, use)
                    continue
                }
                if known.type != type {
                    throw RegistryError.conflictingPortType(name: type.name, firstType: known.type.swiftTypeName, firstUse: known.use,
                                                            secondType: type.swiftTypeName, secondUse: use)
                }
            }
            tables.portTypes.merge(added) { first, _ in first }
            tables.entries[name] = Entry(nodeType: nodeType, source: source)
        }
    }

    /// The entry for a type name.
    public func entry(for type: String) -> Entry? { tables.withLock { $0.entries[type] } }

    /// All entries sorted by category, then type name.
    public var all: [Entry] {
        tables.withLock { Array($0.entries.values) }.sorted {
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
