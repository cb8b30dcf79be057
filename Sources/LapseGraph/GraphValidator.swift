import Foundation

/// A graph node whose type, links and literal values were checked and resolved against the registry.
public struct ResolvedNode: Sendable {
    /// A checked link from one of this node's input ports to an upstream output.
    public struct Input: Sendable, Hashable {
        public var port: String
        public var nodeID: String
        public var output: String
    }

    public let id: String
    public let entry: NodeRegistry.Entry
    /// Values of unlinked inputs: literals from `params`, else declared defaults.
    public let literals: [String: Value]
    /// Linked inputs, sorted by port.
    public let links: [Input]
    /// Input file identities are hashed into cache keys; these are the input paths, absolute.
    public let inputFiles: [String]

    public var schema: NodeSchema { entry.schema }
    public var type: String { entry.schema.type }
}

/// A graph that passed validation: every node resolved, links typed, no cycles, at least one output node.
public struct ValidatedGraph: Sendable {
    /// Nodes by id.
    public let nodes: [String: ResolvedNode]
    /// Every node id in a dependency order (each node after everything it links to), ties in file order.
    public let order: [String]
    /// Ids of output nodes (savers), in file order.
    public let outputNodes: [String]
    public let document: GraphDocument

    /// Ids of the nodes output nodes depend on (including them), in dependency order. Nothing else runs.
    public var requiredOrder: [String] {
        var needed = Set<String>()
        var stack = outputNodes
        while let id = stack.popLast() {
            guard needed.insert(id).inserted, let node = nodes[id] else { continue }
            stack.append(contentsOf: node.links.map(\.nodeID))
        }
        return order.filter { needed.contains($0) }
    }
}

/// Checks a graph against the registry before anything runs, collecting every problem at once.
public struct GraphValidator {
    public let registry: NodeRegistry
    /// Where relative input paths are looked for. A file found there is given to its node as an absolute path, so
    /// nodes read what validation checked whatever the process's current directory is.
    public var searchPath: InputSearchPath
    /// Checks that files named by `inputFileParams` exist (and looks relative ones up in `searchPath`).
    public var checkInputFiles: Bool

    /// The first folder of `searchPath`; setting it makes it the only folder searched.
    public var baseDirectory: URL {
        get { searchPath.folders.first?.url ?? URL(fileURLWithPath: FileManager.default.currentDirectoryPath) }
        set { searchPath = InputSearchPath([.init(newValue, role: .currentDirectory)]) }
    }

    /// A validator whose relative input paths resolve against `baseDirectory` only.
    public init(registry: NodeRegistry,
                baseDirectory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath),
                checkInputFiles: Bool = true) {
        self.init(registry: registry, searchPath: InputSearchPath([.init(baseDirectory, role: .currentDirectory)]),
                  checkInputFiles: checkInputFiles)
    }

    /// A validator whose relative input paths are looked for in `searchPath`'s folders, in order.
    public init(registry: NodeRegistry, searchPath: InputSearchPath, checkInputFiles: Bool = true) {
        self.registry = registry
        self.searchPath = searchPath
        self.checkInputFiles = checkInputFiles
    }

    /// Parses, decodes, applies overrides and validates graph text: the whole `lapse validate` pipeline.
    public func validate(data: Data, name: String = "graph", overrides: [ParamOverride] = [])
        -> Result<ValidatedGraph, ValidationFailure> {
        let (document, parseDiagnostics) = GraphDocument.load(data: data, name: name)
        guard let document else { return .failure(ValidationFailure(diagnostics: parseDiagnostics)) }
        let (overridden, overrideDiagnostics) = document.applying(overrides)
        return validate(overridden, preceding: parseDiagnostics + overrideDiagnostics)
    }

    /// Validates a decoded document. `preceding` diagnostics (from decoding) are reported first.
    public func validate(_ document: GraphDocument, preceding: [Diagnostic] = []) -> Result<ValidatedGraph, ValidationFailure> {
        var diagnostics = preceding
        var resolved: [String: ResolvedNode] = [:]
        let ids = document.nodes.map(\.id)
        let byID = Dictionary(document.nodes.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })

        // Output ports of every node whose type resolved, for link checks.
        var entries: [String: NodeRegistry.Entry] = [:]
        for node in document.nodes {
            guard let type = node.type else { continue }
            if let conflict = registry.conflict(for: type) {
                diagnostics.append(Diagnostic(path: "nodes.\(node.id).type", nodeID: node.id,
                                              message: conflict.localizedDescription, location: node.location))
            }
            if let entry = registry.entry(for: type) {
                entries[node.id] = entry
            } else {
                diagnostics.append(Diagnostic(path: "nodes.\(node.id).type", nodeID: node.id,
                                              message: "unknown node type \"\(type)\"\(Suggestions.hint(for: type, in: registry.all.map(\.schema.type)))",
                                              location: node.location))
            }
        }

        for node in document.nodes {
            guard let entry = entries[node.id] else { continue }
            if let result = resolve(node, entry: entry, entries: entries, ids: ids, into: &diagnostics) {
                resolved[node.id] = result
            }
        }

        // Cycles over every well-formed link, even of nodes that had other problems.
        var edges: [String: [String]] = [:]
        for node in document.nodes {
            edges[node.id] = node.inputs.map(\.link.nodeID).filter { byID[$0] != nil }
        }
        let cycles = GraphValidator.findCycles(ids: ids, edges: edges)
        for cycle in cycles {
            diagnostics.append(Diagnostic(path: "nodes.\(cycle[0])", nodeID: cycle[0],
                                          message: "cycle: " + (cycle + [cycle[0]]).joined(separator: " -> ")))
        }

        let outputs = document.nodes.filter { entries[$0.id]?.schema.isOutput == true }.map(\.id)
        if outputs.isEmpty && !document.nodes.contains(where: { $0.type != nil && entries[$0.id] == nil }) {
            let examples = registry.all.filter(\.schema.isOutput).prefix(4).map(\.schema.type)
            let hint = examples.isEmpty ? "" : " (add one, e.g. \(examples.joined(separator: ", ")))"
            diagnostics.append(Diagnostic(path: "nodes", message: "the graph has no output node, so nothing would run\(hint)"))
        }

        guard diagnostics.isEmpty else { return .failure(ValidationFailure(diagnostics: diagnostics)) }
        let order = GraphValidator.topologicalOrder(ids: ids, edges: edges)
        if let deep = GraphValidator.tooDeepStream(order: order, nodes: resolved, document: document) {
            return .failure(ValidationFailure(diagnostics: [deep]))
        }
        return .success(ValidatedGraph(nodes: resolved, order: order, outputNodes: outputs, document: document))
    }

    private func resolve(_ node: GraphNode, entry: NodeRegistry.Entry, entries: [String: NodeRegistry.Entry],
                         ids: [String], into diagnostics: inout [Diagnostic]) -> ResolvedNode? {
        let schema = entry.schema
        let before = diagnostics.count
        let base = "nodes.\(node.id)"
        let inputNames = schema.inputs.map(\.name)
        var links: [ResolvedNode.Input] = []
        var literals: [String: Value] = [:]
        var inputFiles: [String] = []
        func report(_ path: String, _ message: String, _ location: TextPosition? = nil) {
            diagnostics.append(Diagnostic(path: path, nodeID: node.id, message: message, location: location ?? node.location))
        }

        for (port, link) in node.inputs {
            let path = "\(base).inputs.\(port)"
            guard let spec = schema.inputs.first(where: { $0.name == port }) else {
                report(path, "\(schema.type) has no input \"\(port)\"\(Suggestions.hint(for: port, in: inputNames))")
                continue
            }
            if node.param(port) != nil {
                report(path, "input \"\(port)\" is given both as a link and in params; keep one")
                continue
            }
            guard let upstream = entries[link.nodeID] else {
                if !ids.contains(link.nodeID) {
                    report(path, "no node \"\(link.nodeID)\"\(Suggestions.hint(for: link.nodeID, in: ids))")
                }
                continue  // an upstream node of unknown type was already reported
            }
            let upstreamSchema = upstream.schema
            let outputNames = upstreamSchema.outputs.map(\.name)
            let output: OutputSpec
            if let name = link.output {
                guard let found = upstreamSchema.outputs.first(where: { $0.name == name }) else {
                    let listed = outputNames.isEmpty ? "it has no outputs" : "outputs: \(outputNames.joined(separator: ", "))"
                    report(path, "node \"\(link.nodeID)\" (\(upstreamSchema.type)) has no output \"\(name)\"\(Suggestions.hint(for: name, in: outputNames)); \(listed)")
                    continue
                }
                output = found
            } else {
                switch upstreamSchema.outputs.count {
                case 1: output = upstreamSchema.outputs[0]
                case 0:
                    report(path, "node \"\(link.nodeID)\" (\(upstreamSchema.type)) has no outputs to link to")
                    continue
                default:
                    report(path, "node \"\(link.nodeID)\" (\(upstreamSchema.type)) has several outputs (\(outputNames.joined(separator: ", "))); link one as \"\(link.nodeID).\(outputNames[0])\"")
                    continue
                }
            }
            guard GraphValidator.isCompatible(output.type, spec.type) else {
                report(path, "type mismatch: \"\(link.nodeID).\(output.name)\" is \(output.type), input \"\(port)\" of \(schema.type) expects \(spec.type)")
                continue
            }
            links.append(ResolvedNode.Input(port: port, nodeID: link.nodeID, output: output.name))
        }

        for (name, value) in node.params {
            let path = "\(base).params.\(name)"
            guard let spec = schema.inputs.first(where: { $0.name == name }) else {
                report(path, "\(schema.type) has no parameter \"\(name)\"\(Suggestions.hint(for: name, in: inputNames))", value.location)
                continue
            }
            guard spec.type.isValue else {
                report(path, "\"\(name)\" is a \(spec.type) input; data inputs must be linked in \"inputs\", not given in \"params\"", value.location)
                continue
            }
            guard let literal = GraphValidator.literal(value, for: spec, path: path, nodeID: node.id, into: &diagnostics) else { continue }
            literals[name] = literal
            // An empty path means "none" (optional files such as ApplyMagicAdapter's adapters).
            if checkInputFiles, schema.inputFileParams.contains(name), case .string(let file) = literal, spec.namesFile(file) {
                // An image-sequence pattern (`frames/f_%05d.png`) names no single file: its folder must exist, and the
                // loader reports a sequence with no frames.
                let found = searchPath.locate(file)
                let checked = found.map { GraphValidator.isSequencePattern(file) ? ($0 as NSString).deletingLastPathComponent : $0 }
                let kind = checked.map { FileKind(path: $0) } ?? .missing
                if (try? InputFile.checkName(file)) == nil {
                    report(path, "the path contains a NUL character", value.location)
                } else if kind == .missing {
                    // Loaders read model files users download by hand: say where the list of them is; for a relative
                    // path, say every place it was looked for and where that search is described.
                    let models = schema.category == "loaders" ? "; the model files and where to get them: docs/models.md" : ""
                    let places = file.hasPrefix("/") ? models
                        : " (looked in \(searchPath.places(for: file)))" + (models.isEmpty ? "; where input files are looked for: docs/models.md" : models)
                    report(path, "input file not found: \"\(file)\"" + places, value.location)
                } else if kind != .regular && kind != .directory {
                    // Opening a FIFO blocks until a writer comes; devices never end. Folders are diffusers models.
                    report(path, "\"\(file)\" is \(kind.description), not a regular file", value.location)
                } else if let found {
                    inputFiles.append(URL(fileURLWithPath: found).standardizedFileURL.path)
                    // The node opens what was found here, not the relative path against its process's folder.
                    literals[name] = .string(found)
                }
            }
        }

        for spec in schema.inputs where literals[spec.name] == nil && !links.contains(where: { $0.port == spec.name }) {
            let givenButBad = node.link(for: spec.name) != nil || node.param(spec.name) != nil
            if let value = spec.defaultValue {
                literals[spec.name] = value
            } else if spec.isRequired && !givenButBad {
                let section = spec.type.isValue ? "params" : "inputs"
                report("\(base).\(section).\(spec.name)", "missing required input \"\(spec.name)\" (\(spec.type))")
            }
        }

        if let check = schema.checkParameters {
            for problem in check(literals) {
                report("\(base).params.\(problem.parameter)", problem.message, node.param(problem.parameter)?.location)
            }
        }

        guard diagnostics.count == before else { return nil }
        return ResolvedNode(id: node.id, entry: entry, literals: literals,
                            links: links.sorted { $0.port < $1.port }, inputFiles: inputFiles)
    }

    /// The longest chain of frame-stream stages a graph may hold. Frames are pulled through every stage recursively;
    /// this bound keeps that recursion within a node thread's stack (ComfyUI-style graphs use tens of stages).
    public static let maximumStreamDepth = 4096

    /// The first node whose frames pass through more than `maximumStreamDepth` streaming stages, as a diagnostic.
    static func tooDeepStream(order: [String], nodes: [String: ResolvedNode], document: GraphDocument) -> Diagnostic? {
        var depth: [String: Int] = [:]
        for id in order {
            guard let node = nodes[id] else { continue }
            var deepest = 0
            for link in node.links where node.schema.inputs.first(where: { $0.name == link.port })?.type == PortType(.frames) {
                deepest = max(deepest, depth[link.nodeID] ?? 0)
            }
            let produces = node.schema.outputs.contains { $0.type == PortType(.frames) }
            depth[id] = deepest + (produces ? 1 : 0)
            if deepest > maximumStreamDepth {
                return Diagnostic(path: "nodes.\(id)", nodeID: id,
                                  message: "its frames pass through \(deepest) chained streaming nodes; at most \(maximumStreamDepth) are supported (split the work into several graphs, or combine the steps into fewer nodes)",
                                  location: document.nodes.first { $0.id == id }?.location)
            }
        }
        return nil
    }

    /// An `Int` output may feed a `Float` input; otherwise types must be equal.
    public static func isCompatible(_ output: PortType, _ input: PortType) -> Bool {
        output == input || (output == .int && input == .float)
    }

    /// Converts a JSON literal for a value-typed input, reporting a wrong type, out-of-range or disallowed value.
    /// True for printf-style frame-number patterns such as `%05d` or `%d`, as FFmpeg's image2 demuxer reads them.
    static func isSequencePattern(_ path: String) -> Bool {
        path.range(of: #"%0?[0-9]*d"#, options: .regularExpression) != nil
    }

    static func literal(_ json: JSONValue, for spec: InputSpec, path: String, nodeID: String,
                        into diagnostics: inout [Diagnostic]) -> Value? {
        func wrong() -> Value? {
            diagnostics.append(Diagnostic(path: path, nodeID: nodeID,
                                          message: "wrong literal type: expected \(spec.type), got \(json.typeName) \(json.jsonText)",
                                          location: json.location))
            return nil
        }
        func range(_ x: Double, _ text: String) -> Bool {
            let bounds = switch (spec.min, spec.max) {
            case let (lo?, hi?): "allowed range \(plainNumber(lo))…\(plainNumber(hi))"
            case let (lo?, nil): "allowed: ≥ \(plainNumber(lo))"
            case let (nil, hi?): "allowed: ≤ \(plainNumber(hi))"
            case (nil, nil): ""
            }
            if let lo = spec.min, x < lo {
                diagnostics.append(Diagnostic(path: path, nodeID: nodeID,
                                              message: "value \(text) is below the minimum \(plainNumber(lo)) (\(bounds))",
                                              location: json.location))
                return false
            }
            if let hi = spec.max, x > hi {
                diagnostics.append(Diagnostic(path: path, nodeID: nodeID,
                                              message: "value \(text) is above the maximum \(plainNumber(hi)) (\(bounds))",
                                              location: json.location))
                return false
            }
            return true
        }
        func allowed(_ text: String, quoted: String) -> Bool {
            guard let allowed = spec.allowed, !allowed.contains(text) else { return true }
            // Spelling suggestions help names, not numbers.
            let hint = spec.type == .string ? Suggestions.hint(for: text, in: allowed) : ""
            diagnostics.append(Diagnostic(path: path, nodeID: nodeID,
                                          message: "value \(quoted) is not allowed\(hint); allowed: \(allowed.joined(separator: ", "))",
                                          location: json.location))
            return false
        }
        switch (spec.type, json.kind) {
        case (.int, .number(_, let integer?)):
            // Int inputs may list their allowed values too (SaveImage.bit_depth: 8 or 16).
            return range(Double(integer), String(integer)) && allowed(String(integer), quoted: String(integer)) ? .int(integer) : nil
        case (.float, .number(let d, _)):
            return range(d, json.jsonText) ? .float(d) : nil
        case (.bool, .bool(let b)):
            return .bool(b)
        case (.string, .string(let s)):
            return allowed(s, quoted: "\"\(s)\"") ? .string(s) : nil
        default:
            return wrong()
        }
    }

    /// Every elementary cycle found by a depth-first search, each listed once, starting at its first node in file order.
    static func findCycles(ids: [String], edges: [String: [String]]) -> [[String]] {
        var state: [String: Int] = [:]  // 1 on the stack, 2 done
        var cycles: [[String]] = []
        var seen = Set<Set<String>>()
        for root in ids where state[root] == nil {
            // Iterative DFS so a 10,000-node chain cannot overflow the stack.
            var stack: [(id: String, next: Int)] = [(root, 0)]
            var path: [String] = [root]
            state[root] = 1
            while !stack.isEmpty {
                let (id, next) = stack[stack.count - 1]
                let targets = edges[id] ?? []
                if next < targets.count {
                    stack[stack.count - 1].next += 1
                    let target = targets[next]
                    switch state[target] {
                    case nil:
                        state[target] = 1
                        stack.append((target, 0))
                        path.append(target)
                    case 1:
                        if let start = path.lastIndex(of: target) {
                            var cycle = Array(path[start...]).reversed().map { $0 }
                            // Rotate so the message starts at the earliest node in file order, following links downstream.
                            let first = cycle.enumerated().min { ids.firstIndex(of: $0.element)! < ids.firstIndex(of: $1.element)! }!.offset
                            cycle = Array(cycle[first...] + cycle[..<first])
                            if seen.insert(Set(cycle)).inserted { cycles.append(cycle) }
                        }
                    default: break
                    }
                } else {
                    state[id] = 2
                    stack.removeLast()
                    path.removeLast()
                }
            }
        }
        return cycles
    }

    /// Kahn's algorithm; ties broken by file order so runs are reproducible.
    static func topologicalOrder(ids: [String], edges: [String: [String]]) -> [String] {
        var remaining: [String: Int] = [:]
        var dependents: [String: [String]] = [:]
        for id in ids {
            let upstream = Set(edges[id] ?? [])
            remaining[id] = upstream.count
            for u in upstream { dependents[u, default: []].append(id) }
        }
        let position = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, $0) })
        var ready = ids.filter { remaining[$0] == 0 }
        var order: [String] = []
        order.reserveCapacity(ids.count)
        var head = 0
        while head < ready.count {
            let id = ready[head]
            head += 1
            order.append(id)
            var released: [String] = []
            for d in dependents[id] ?? [] {
                remaining[d]! -= 1
                if remaining[d] == 0 { released.append(d) }
            }
            ready.append(contentsOf: released.sorted { position[$0]! < position[$1]! })
        }
        return order
    }
}

/// Validation failed; every problem is listed.
public struct ValidationFailure: LocalizedError, Sendable {
    public var diagnostics: [Diagnostic]

    public init(diagnostics: [Diagnostic]) { self.diagnostics = diagnostics }

    public var errorDescription: String? { diagnostics.map(\.description).joined(separator: "\n") }
}
