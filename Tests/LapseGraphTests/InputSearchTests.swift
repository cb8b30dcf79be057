import Foundation
import LapseGraph
import LapseTestSupport
import Testing

/// Relative input paths: the graph's folder, the current directory, then the models folders (docs/models.md).
@Suite("Input search path")
struct InputSearchTests {
    func string(_ value: Value?) -> String? {
        if case .string(let s)? = value { s } else { nil }
    }

    func loadGraph(_ path: String, group: String) -> String {
        graph(#""l": {"type": "TestLoad", "params": {"path": \#(MediaTestSupport.json(path)), "group": "\#(group)"}}, "out": {"type": "TestOutput", "inputs": {"value": "l"}, "params": {"group": "\#(group)"}}"#)
    }

    /// The size of the file the graph's TestLoad read, after validating with `searchPath` and running.
    func sizeRead(_ searchPath: InputSearchPath, path: String = "weights/m.bin") throws -> (size: Int?, literal: String?) {
        let group = uniqueGroup()
        let validated = try GraphValidator(registry: SyntheticNodes.registry(), searchPath: searchPath)
            .validate(data: Data(loadGraph(path, group: group).utf8)).get()
        _ = try Executor(registry: SyntheticNodes.registry()).run(validated)
        return (SyntheticState.output(group), string(validated.nodes["l"]?.literals["path"]))
    }

    @Test("the first folder holding the file wins: graph folder, current directory, models folders in order")
    func searchOrder() throws {
        let places = try SearchFolders()
        defer { try? FileManager.default.removeItem(at: places.root) }
        // Filled from the back, so each step shows the folder before the last one takes over.
        try places.put(4, in: places.modelsB)
        var read = try sizeRead(places.searchPath)
        #expect(read.size == 4)
        #expect(read.literal == places.modelsB.path + "/weights/m.bin", "the node gets the file found, as an absolute path")
        try places.put(3, in: places.modelsA)
        #expect(try sizeRead(places.searchPath).size == 3)
        try places.put(2, in: places.work)
        #expect(try sizeRead(places.searchPath).size == 2)
        try places.put(1, in: places.graphs)
        read = try sizeRead(places.searchPath)
        #expect(read.size == 1)
        #expect(read.literal == places.graphs.path + "/weights/m.bin")
        // An absolute path is used as it is.
        let absolute = places.modelsB.path + "/weights/m.bin"
        #expect(try sizeRead(places.searchPath, path: absolute).size == 4)
    }

    @Test("a relative input found nowhere lists every place looked, in order, and points to docs/models.md")
    func notFoundListsEveryPlace() throws {
        let places = try SearchFolders()
        defer { try? FileManager.default.removeItem(at: places.root) }
        let result = GraphValidator(registry: SyntheticNodes.registry(), searchPath: places.searchPath)
            .validate(data: Data(loadGraph("weights/m.bin", group: "x").utf8))
        guard case .failure(let failure) = result else {
            Issue.record("a missing file validated")
            return
        }
        let message = failure.diagnostics.map(\.description).joined(separator: "\n")
        let expected = "error: nodes.l.params.path: input file not found: \"weights/m.bin\" (looked in "
            + "\(places.graphs.path)/weights/m.bin (the graph's folder), \(places.work.path)/weights/m.bin (the current directory), "
            + "\(places.modelsA.path)/weights/m.bin (models folder), \(places.modelsB.path)/weights/m.bin (models folder)); "
            + "where input files are looked for: docs/models.md"
        #expect(message == expected)
    }

    @Test("an image-sequence pattern is found by its folder; a FIFO found first is reported, not skipped")
    func patternsAndSpecialFiles() throws {
        let places = try SearchFolders()
        defer { try? FileManager.default.removeItem(at: places.root) }
        try FileManager.default.createDirectory(at: places.modelsA.appendingPathComponent("frames"), withIntermediateDirectories: true)
        let pattern = try GraphValidator(registry: SyntheticNodes.registry(), searchPath: places.searchPath)
            .validate(data: Data(loadGraph("frames/f_%05d.png", group: "x").utf8)).get()
        #expect(string(pattern.nodes["l"]?.literals["path"]) == places.modelsA.path + "/frames/f_%05d.png")

        try places.put(3, in: places.modelsA)
        try FileManager.default.createDirectory(at: places.work.appendingPathComponent("weights"), withIntermediateDirectories: true)
        try MediaTestSupport.makeFIFO(places.work.path + "/weights/m.bin")
        let fifo = GraphValidator(registry: SyntheticNodes.registry(), searchPath: places.searchPath)
            .validate(data: Data(loadGraph("weights/m.bin", group: "x").utf8))
        guard case .failure(let failure) = fifo else {
            Issue.record("a FIFO validated")
            return
        }
        #expect(failure.diagnostics.map(\.description) == [#"error: nodes.l.params.path: "weights/m.bin" is a named pipe (FIFO), not a regular file"#])
    }

    @Test("LAPSE_MODELS is a colon-separated list; a folder named twice is searched once, in its first place")
    func environmentAndDuplicates() throws {
        #expect(InputSearchPath.environmentFolders(["LAPSE_MODELS": "/a::/b/c:"]) == ["/a", "/b/c"])
        #expect(InputSearchPath.environmentFolders([:]).isEmpty)
        let same = URL(fileURLWithPath: "/tmp/x")
        let path = InputSearchPath(graphFolder: same, currentDirectory: URL(fileURLWithPath: "/tmp/./x"), modelsFolders: [same])
        #expect(path.folders.map(\.role) == [.graphFolder])
        #expect(path.places(for: "m.bin") == "/tmp/x/m.bin (the graph's folder)")
    }

    @Test("the single-folder validator keeps resolving against its base directory")
    func baseDirectoryStillWorks() throws {
        let places = try SearchFolders()
        defer { try? FileManager.default.removeItem(at: places.root) }
        try places.put(5, in: places.work)
        var validator = GraphValidator(registry: SyntheticNodes.registry(), baseDirectory: places.work)
        #expect(validator.baseDirectory.path == places.work.path)
        #expect(try sizeRead(validator.searchPath).size == 5)
        validator.baseDirectory = places.modelsA
        #expect(validator.searchPath.folders.map(\.url.path) == [places.modelsA.path])
    }
}
