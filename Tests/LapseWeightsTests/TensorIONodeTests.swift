import Foundation
import LapseGraph
import LapseTensor
import LapseWeights
import TensorIOPlugin
import Testing

private struct QuietContext: NodeContext {
    var nodeID = "n"
    var nodeType = "T"
    func progress(step: Int, total: Int, unit: String) {}
    var isCancelled: Bool { false }
    func log(_ message: String) {}
}

@Suite("TensorIO nodes")
struct TensorIONodeTests {
    @Test func loadThenSaveRoundTrips() throws {
        let registry = NodeRegistry()
        try TensorIOPlugin.register(into: registry)
        let load = try #require(registry.entry(for: "LoadTensors"))
        let save = try #require(registry.entry(for: "SaveTensors"))
        #expect(load.schema.inputFileParams == ["path"] && load.schema.outputs.map(\.type) == [PortType(.tensors)])
        #expect(save.schema.isOutput && save.schema.outputFileParams == ["path"])

        let out = tempPath("saved.safetensors")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let loaded = try load.nodeType.init().run(NodeInputs(["path": .string(Paths.fixture("nested.pth"))]), context: QuietContext())
        let tensors = try #require(loaded.values["tensors"])
        _ = try save.nodeType.init().run(NodeInputs(["tensors": tensors, "path": .string(out), "dtype": .string("F32")]),
                                         context: QuietContext())
        let back = try CheckpointFile.open(out)
        let reference = try CheckpointFile.open(Paths.fixture("nested-expected.safetensors"))
        #expect(Set(back.keys) == Set(reference.keys))
        for key in reference.keys { #expect(maxDifference(try back.tensor(key), try reference.tensor(key)) == 0) }

        #expect(throws: NodeError.self) {
            try save.nodeType.init().run(NodeInputs(["tensors": tensors, "path": .string(out), "dtype": .string("I8")]), context: QuietContext())
        }
        #expect(throws: WeightsError.self) {
            try load.nodeType.init().run(NodeInputs(["path": .string(Paths.fixture("evil.pth"))]), context: QuietContext())
        }
    }
}
