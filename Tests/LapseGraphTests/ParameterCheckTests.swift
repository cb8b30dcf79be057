import Foundation
import Synchronization
import LapseGraph
import Testing

/// A node whose `a` must divide `b`: stands for cross-parameter rules such as StreamExtend's valid lengths.
private struct DividesNode: Node {
    static let schema = NodeSchema(
        type: "Divides", category: "test", summary: "records its work directory",
        inputs: [InputSpec("a", .int, default: .int(2)), InputSpec("b", .int, default: .int(4))],
        outputs: [OutputSpec("out", .string)], isOutput: true,
        checkParameters: { params in
            guard case .int(let a)? = params["a"], case .int(let b)? = params["b"], a != 0, b % a != 0 else { return [] }
            return [ParameterProblem(parameter: "b", message: "\(b) is not a multiple of \(a)")]
        })

    static let seen = Mutex<[String: String]>([:])

    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        Self.seen.withLock { $0[context.nodeID] = context.workDirectory?.path ?? "none" }
        return NodeOutputs(["out": .string("")])
    }
}

@Suite("Cross-parameter checks and work folders")
struct ParameterCheckTests {
    private func registry() throws -> NodeRegistry {
        let registry = NodeRegistry()
        try registry.register(DividesNode.self, source: "test")
        return registry
    }

    @Test func validationReportsTheCheckOnTheParameter() throws {
        let text = #"{"version": 1, "nodes": {"d": {"type": "Divides", "params": {"a": 3}}}}"#
        let result = GraphValidator(registry: try registry()).validate(data: Data(text.utf8), name: "g.json")
        guard case .failure(let failure) = result else { Issue.record("a bad combination passed validation"); return }
        #expect(failure.diagnostics.map(\.description).contains { $0.contains("nodes.d.params.b") && $0.contains("4 is not a multiple of 3") })
        let good = #"{"version": 1, "nodes": {"d": {"type": "Divides", "params": {"a": 2, "b": 6}}}}"#
        #expect((try? GraphValidator(registry: try registry()).validate(data: Data(good.utf8), name: "g.json").get()) != nil)
    }

    @Test func nodesGetAWorkFolderOnlyWithACacheDirectory() throws {
        let id = "d" + UUID().uuidString.prefix(8)
        let text = #"{"version": 1, "nodes": {"\#(id)": {"type": "Divides"}}}"#
        let validated = try GraphValidator(registry: try registry()).validate(data: Data(text.utf8), name: "g.json").get()
        _ = try Executor(registry: try registry()).run(validated)
        #expect(DividesNode.seen.withLock { $0[id] } == "none")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lapse-work-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try Executor(registry: try registry(), options: ExecutionOptions(cache: ResultCache(directory: dir))).run(validated)
        let path = try #require(DividesNode.seen.withLock { $0[id] })
        #expect(path.hasPrefix(dir.appendingPathComponent("work").path + "/"))
    }
}
