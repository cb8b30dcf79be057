import Foundation
import LapseGraph
import LapseTensor
import LapseTestSupport
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

    @Test("SaveTensors: {n} never replaces an earlier file, overwrite false refuses an existing one, {stem} is refused")
    func saveTemplates() throws {
        let registry = NodeRegistry()
        try TensorIOPlugin.register(into: registry)
        let load = try #require(registry.entry(for: "LoadTensors"))
        let save = try #require(registry.entry(for: "SaveTensors"))
        let folder = tempPath("save-templates-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let loaded = try load.nodeType.init().run(NodeInputs(["path": .string(Paths.fixture("nested.pth"))]), context: QuietContext())
        let tensors = try #require(loaded.values["tensors"])
        func saving(_ path: String, overwrite: Bool = true) throws {
            _ = try save.nodeType.init().run(NodeInputs(["tensors": tensors, "path": .string(path), "dtype": .string("F32"),
                                                         "overwrite": .bool(overwrite)]), context: QuietContext())
        }
        try saving("\(folder)/run_{n}.safetensors")
        try saving("\(folder)/run_{n}.safetensors")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).sorted() == ["run_1.safetensors", "run_2.safetensors"])

        let kept = "\(folder)/kept.safetensors"
        try Data("not replaced".utf8).write(to: URL(fileURLWithPath: kept))
        let refused = MediaTestSupport.errorMessage { try saving(kept, overwrite: false) }
        #expect(refused?.contains(kept) == true, "\(String(describing: refused))")
        #expect(try String(contentsOfFile: kept, encoding: .utf8) == "not replaced")

        let noStem = MediaTestSupport.errorMessage { try saving("\(folder)/{stem}.safetensors") }
        #expect(noStem?.contains("{stem}") == true, "\(String(describing: noStem))")
        // Validation catches a misspelt placeholder before anything runs.
        let problems = save.schema.checkParameters?(["path": .string("\(folder)/{nn}.safetensors")]) ?? []
        #expect(problems.map(\.parameter) == ["path"])
    }
}
