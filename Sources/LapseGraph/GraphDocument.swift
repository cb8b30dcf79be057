import Foundation

/// One problem found in a graph, tied to the JSON path and node it is about.
///
/// Printed as `error: nodes.up.inputs.model: no node "nomodel" (did you mean "model"?)`.
public struct Diagnostic: Sendable, Hashable, CustomStringConvertible {
    /// Dotted JSON path of the offending element, e.g. `nodes.up.params.tile`; a file position for syntax errors.
    public var path: String
    /// The node the problem is about, when there is one.
    public var nodeID: String?
    public var message: String
    /// Where the element starts in the graph file, when known.
    public var location: TextPosition?

    public init(path: String, nodeID: String? = nil, message: String, location: TextPosition? = nil) {
        self.path = path
        self.nodeID = nodeID
        self.message = message
        self.location = location
    }

    public var description: String { "error: \(path): \(message)" }
}

/// A link from an input port to an upstream node's output: `"id"` or `"id.output"`.
public struct GraphLink: Sendable, Hashable, CustomStringConvertible {
    public var nodeID: String
    /// The output port; `nil` means the node's only output.
    public var output: String?

    public init(nodeID: String, output: String? = nil) {
        self.nodeID = nodeID
        self.output = output
    }

    /// Parses link text; `nil` when it is not `id` or `id.output` with valid names.
    public init?(parsing text: String) {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard GraphDocument.isValidID(parts[0]) else { return nil }
        if parts.count == 2 {
            guard !parts[1].isEmpty, !parts[1].contains(".") else { return nil }
            self.init(nodeID: parts[0], output: parts[1])
        } else {
            self.init(nodeID: parts[0])
        }
    }

    public var description: String { output.map { "\(nodeID).\($0)" } ?? nodeID }
}

/// One node as written in the graph file (before its type is checked against the registry).
public struct GraphNode: Sendable {
    public var id: String
    /// The node type name; `nil` when the file gave none or gave a non-string.
    public var type: String?
    /// Linked inputs in file order.
    public var inputs: [(port: String, link: GraphLink)]
    /// Literal parameters in file order.
    public var params: [(name: String, value: JSONValue)]
    /// Where the node's object starts in the file.
    public var location: TextPosition?

    public init(id: String, type: String?, inputs: [(port: String, link: GraphLink)] = [],
                params: [(name: String, value: JSONValue)] = [], location: TextPosition? = nil) {
        self.id = id
        self.type = type
        self.inputs = inputs
        self.params = params
        self.location = location
    }

    public func link(for port: String) -> GraphLink? { inputs.first { $0.port == port }?.link }
    public func param(_ name: String) -> JSONValue? { params.first { $0.name == name }?.value }
}

/// A graph file: version, description and nodes by id (see docs/graph-format.md).
public struct GraphDocument: Sendable {
    /// The only format version this runtime reads.
    public static let currentVersion = 1

    public var version: Int
    public var description: String?
    /// Nodes in file order.
    public var nodes: [GraphNode]

    public init(version: Int = GraphDocument.currentVersion, description: String? = nil, nodes: [GraphNode] = []) {
        self.version = version
        self.description = description
        self.nodes = nodes
    }

    /// The node with this id.
    public func node(_ id: String) -> GraphNode? { nodes.first { $0.id == id } }

    /// Node ids match `[A-Za-z_][A-Za-z0-9_-]*`.
    public static func isValidID(_ id: String) -> Bool {
        guard let first = id.utf8.first else { return false }
        func letter(_ b: UInt8) -> Bool { (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b == 95 }
        guard letter(first) else { return false }
        return id.utf8.allSatisfy { letter($0) || ($0 >= 48 && $0 <= 57) || $0 == 45 }
    }

    static let topLevelKeys = ["version", "description", "nodes"]
    static let nodeKeys = ["type", "inputs", "params"]

    /// Builds a document from parsed JSON, reporting every structural problem (unknown keys, wrong JSON types,
    /// bad ids and link syntax) instead of stopping at the first. Elements with problems are left out.
    public static func decode(_ json: JSONValue) -> (GraphDocument, [Diagnostic]) {
        var diagnostics: [Diagnostic] = []
        var document = GraphDocument(version: 0)
        guard case .object(let members) = json.kind else {
            diagnostics.append(Diagnostic(path: "(root)", message: "a graph must be a JSON object, got \(json.typeName)",
                                          location: json.location))
            return (document, diagnostics)
        }
        for (key, _) in members where !topLevelKeys.contains(key) {
            diagnostics.append(Diagnostic(path: key, message: "unknown key \"\(key)\"\(Suggestions.hint(for: key, in: topLevelKeys))",
                                          location: json[key]?.location))
        }
        if let version = json["version"] {
            if case .number(_, let integer?) = version.kind {
                document.version = integer
                if integer != currentVersion {
                    diagnostics.append(Diagnostic(path: "version", message: "unsupported version \(integer) (this lapse reads version \(currentVersion))",
                                                  location: version.location))
                }
            } else {
                diagnostics.append(Diagnostic(path: "version", message: "expected the integer \(currentVersion), got \(version.typeName) \(version.jsonText)",
                                              location: version.location))
            }
        } else {
            diagnostics.append(Diagnostic(path: "version", message: "missing \"version\" (add \"version\": \(currentVersion))"))
        }
        if let description = json["description"] {
            if case .string(let text) = description.kind {
                document.description = text
            } else {
                diagnostics.append(Diagnostic(path: "description", message: "expected a string, got \(description.typeName)",
                                              location: description.location))
            }
        }
        guard let nodes = json["nodes"] else {
            diagnostics.append(Diagnostic(path: "nodes", message: "missing \"nodes\" (an object mapping node ids to nodes)"))
            return (document, diagnostics)
        }
        guard case .object(let nodeMembers) = nodes.kind else {
            diagnostics.append(Diagnostic(path: "nodes", message: "expected an object mapping node ids to nodes, got \(nodes.typeName)",
                                          location: nodes.location))
            return (document, diagnostics)
        }
        for (id, value) in nodeMembers {
            let path = "nodes.\(id)"
            guard isValidID(id) else {
                diagnostics.append(Diagnostic(path: path, nodeID: id,
                                              message: "invalid node id \"\(id)\" (ids match [A-Za-z_][A-Za-z0-9_-]*)",
                                              location: value.location))
                continue
            }
            if let node = decodeNode(id: id, value, path: path, into: &diagnostics) { document.nodes.append(node) }
        }
        return (document, diagnostics)
    }

    private static func decodeNode(id: String, _ value: JSONValue, path: String,
                                   into diagnostics: inout [Diagnostic]) -> GraphNode? {
        guard case .object(let members) = value.kind else {
            diagnostics.append(Diagnostic(path: path, nodeID: id, message: "expected a node object, got \(value.typeName)",
                                          location: value.location))
            return nil
        }
        var node = GraphNode(id: id, type: nil, location: value.location)
        for (key, member) in members where !nodeKeys.contains(key) {
            diagnostics.append(Diagnostic(path: "\(path).\(key)", nodeID: id,
                                          message: "unknown key \"\(key)\"\(Suggestions.hint(for: key, in: nodeKeys))",
                                          location: member.location))
        }
        if let type = value["type"] {
            if case .string(let name) = type.kind {
                node.type = name
            } else {
                diagnostics.append(Diagnostic(path: "\(path).type", nodeID: id,
                                              message: "expected a node type name (string), got \(type.typeName)",
                                              location: type.location))
            }
        } else {
            diagnostics.append(Diagnostic(path: "\(path).type", nodeID: id, message: "missing \"type\"", location: value.location))
        }
        if let inputs = value["inputs"] {
            if case .object(let links) = inputs.kind {
                for (port, linkValue) in links {
                    guard case .string(let text) = linkValue.kind else {
                        diagnostics.append(Diagnostic(path: "\(path).inputs.\(port)", nodeID: id,
                                                      message: "expected a link string \"id\" or \"id.output\", got \(linkValue.typeName) \(linkValue.jsonText) (literal values belong in \"params\")",
                                                      location: linkValue.location))
                        continue
                    }
                    guard let link = GraphLink(parsing: text) else {
                        diagnostics.append(Diagnostic(path: "\(path).inputs.\(port)", nodeID: id,
                                                      message: "invalid link \"\(text)\" (expected \"id\" or \"id.output\")",
                                                      location: linkValue.location))
                        continue
                    }
                    node.inputs.append((port, link))
                }
            } else {
                diagnostics.append(Diagnostic(path: "\(path).inputs", nodeID: id,
                                              message: "expected an object mapping input ports to links, got \(inputs.typeName)",
                                              location: inputs.location))
            }
        }
        if let params = value["params"] {
            if case .object(let literals) = params.kind {
                node.params = literals.map { ($0.key, $0.value) }
            } else {
                diagnostics.append(Diagnostic(path: "\(path).params", nodeID: id,
                                              message: "expected an object mapping parameters to values, got \(params.typeName)",
                                              location: params.location))
            }
        }
        return node
    }

    /// Reads and decodes a graph file. A syntax error is returned as the only diagnostic, with its line and column.
    public static func load(contentsOf url: URL) -> (GraphDocument?, [Diagnostic]) {
        let data: Data
        do {
            data = try InputFile.read(url.path)
        } catch {
            return (nil, [Diagnostic(path: url.path, message: "cannot read the graph file: \(error.localizedDescription)")])
        }
        return load(data: data, name: url.path)
    }

    /// Decodes graph text; `name` is used in syntax error messages.
    public static func load(data: Data, name: String = "graph") -> (GraphDocument?, [Diagnostic]) {
        let json: JSONValue
        do {
            json = try JSONParser.parse(data)
        } catch {
            return (nil, [Diagnostic(path: "\(name):\(error.location.line):\(error.location.column)",
                                     message: "invalid JSON: \(error.message)", location: error.location)])
        }
        let (document, diagnostics) = decode(json)
        return (document, diagnostics)
    }
}

/// A `--set ID.PARAM=VALUE` override of one parameter.
public struct ParamOverride: Sendable {
    public var nodeID: String
    public var param: String
    /// The value: `VALUE` parsed as a JSON literal, or taken as a string when it is not valid JSON.
    public var value: JSONValue

    public init(nodeID: String, param: String, value: JSONValue) {
        self.nodeID = nodeID
        self.param = param
        self.value = value
    }

    /// Parses `ID.PARAM=VALUE`; the error text explains the expected form.
    public static func parse(_ text: String) throws(OverrideError) -> ParamOverride {
        guard let equals = text.firstIndex(of: "=") else { throw OverrideError(text: text, reason: "expected ID.PARAM=VALUE") }
        let target = text[..<equals]
        let raw = String(text[text.index(after: equals)...])
        guard let dot = target.firstIndex(of: ".") else {
            throw OverrideError(text: text, reason: "expected ID.PARAM=VALUE (no '.' between node id and parameter)")
        }
        let id = String(target[..<dot]), param = String(target[target.index(after: dot)...])
        guard GraphDocument.isValidID(id) else { throw OverrideError(text: text, reason: "invalid node id \"\(id)\"") }
        guard !param.isEmpty else { throw OverrideError(text: text, reason: "missing parameter name after \"\(id).\"") }
        let value = (try? JSONParser.parse(raw)) ?? JSONValue(.string(raw))
        return ParamOverride(nodeID: id, param: param, value: value)
    }
}

/// A malformed `--set` argument.
public struct OverrideError: LocalizedError, Sendable {
    public var text: String
    public var reason: String
    public var errorDescription: String? { "--set \(text): \(reason)" }
}

extension GraphDocument {
    /// The document with `--set` overrides applied: each replaces the parameter (and any link on the same port).
    /// An override naming an unknown node is a diagnostic.
    public func applying(_ overrides: [ParamOverride]) -> (GraphDocument, [Diagnostic]) {
        var copy = self
        var diagnostics: [Diagnostic] = []
        for override in overrides {
            guard let index = copy.nodes.firstIndex(where: { $0.id == override.nodeID }) else {
                diagnostics.append(Diagnostic(path: "--set \(override.nodeID).\(override.param)", nodeID: override.nodeID,
                                              message: "no node \"\(override.nodeID)\"\(Suggestions.hint(for: override.nodeID, in: nodes.map(\.id)))"))
                continue
            }
            copy.nodes[index].inputs.removeAll { $0.port == override.param }
            if let p = copy.nodes[index].params.firstIndex(where: { $0.name == override.param }) {
                copy.nodes[index].params[p].value = override.value
            } else {
                copy.nodes[index].params.append((override.param, override.value))
            }
        }
        return (copy, diagnostics)
    }
}
