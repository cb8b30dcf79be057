import Foundation
import LapseCLI
import LapseGraph
import LapseServer
import LapseTestSupport
import MediaPlugin
import Testing

/// `lapse serve --models-dir` / `LAPSE_MODELS`: relative inputs found in the workspace, then the models folders;
/// both are the only places a job may read from; templated outputs are listed as the job's.
@Suite("lapse serve: models folders")
struct ModelsFolderTests {
    /// A graph whose TestLoad reads `path` and hands the size to TestOutput under `group`.
    func loadGraph(_ path: String, group: String) -> String {
        #"{"version": 1, "nodes": {"l": {"type": "TestLoad", "params": {"path": \#(MediaTestSupport.json(path)), "group": "\#(group)"}}, "out": {"type": "TestOutput", "inputs": {"value": "l"}, "params": {"group": "\#(group)"}}}}"#
    }

    func put(_ bytes: Int, at url: URL) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(repeating: 2, count: bytes).write(to: url)
    }

    @Test("a relative input is the workspace's, else the first models folder's; found nowhere, validation lists both")
    func confinement() throws {
        let root = try TestSupport.makeTemporaryDirectory(), models = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: models) }
        let space = try Workspace(root: root, readOnlyFolders: [models])
        let registry = SyntheticNodes.registry()
        func confined(_ path: String) -> (String?, [String]) {
            let document = GraphDocument.load(data: Data(loadGraph(path, group: "x").utf8)).0!
            let (copy, problems) = space.confine(document, registry: registry, jobFolder: space.jobFolder("j"))
            let value = copy.nodes.first { $0.id == "l" }?.param("path")?.kind
            if case .string(let s)? = value { return (s, problems.map(\.message)) }
            return (nil, problems.map(\.message))
        }
        let modelsPath = Workspace.canonical(models.path)
        try put(3, at: models.appendingPathComponent("weights/m.bin"))
        #expect(confined("weights/m.bin").0 == modelsPath + "/weights/m.bin")
        try put(1, at: root.appendingPathComponent("weights/m.bin"))
        #expect(confined("weights/m.bin").0 == space.root.path + "/weights/m.bin", "the workspace comes first")

        // Not found anywhere: left for validation, which names every place it looked.
        #expect(confined("weights/none.bin") == ("weights/none.bin", []))
        let validator = GraphValidator(registry: registry, searchPath: space.inputSearchPath)
        let result = validator.validate(json: try JSONParser.parse(loadGraph("weights/none.bin", group: "x")), overrides: []) {
            space.confine($0, registry: registry, jobFolder: space.jobFolder("j"))
        }
        guard case .failure(let failure) = result else {
            Issue.record("a missing input validated")
            return
        }
        let text = failure.diagnostics.map(\.description).joined(separator: "\n")
        #expect(text.contains("\(space.root.path)/weights/none.bin (the workspace), \(modelsPath)/weights/none.bin (models folder)"), "\(text)")
        #expect(text.contains("docs/models.md"))

        // `..` out of a models folder is refused as out of the workspace, whichever folder found it.
        let outside = models.deletingLastPathComponent().appendingPathComponent("outside-\(UUID().uuidString.prefix(6)).bin")
        try put(1, at: outside)
        defer { try? FileManager.default.removeItem(at: outside) }
        let escape = confined("../" + outside.lastPathComponent)
        #expect(escape.1.count == 1 && escape.1[0].contains("is outside the workspace") && escape.1[0].contains("models folders"), "\(escape.1)")
    }

    @Test("lapse serve --models-dir runs a job reading from the models folder; a missing input names it among the places looked")
    func serveWithModelsDir() async throws {
        let workspace = try TestSupport.makeTemporaryDirectory(), models = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: workspace); try? FileManager.default.removeItem(at: models) }
        try put(6, at: models.appendingPathComponent("weights/m.bin"))
        let console = CapturedConsole()
        let token = CancellationToken()
        let env = CLIEnvironment(console: console, makeRegistry: { SyntheticNodes.registry() }, cancellation: token,
                                 environment: [:], currentDirectory: workspace)
        let exit = ExitBox()
        Thread.detachNewThread {
            exit.set(LapseCLI.run(["serve", "--port", "0", "--models-dir", models.path], environment: env))
        }
        let deadline = Date().addingTimeInterval(30)  // the later waits count from here, as before
        let bound = try await TestServer.listeningPort(printedTo: console)
        let group = "serve" + UUID().uuidString.prefix(6)
        let submitted = try await HTTPTestClient.request(port: bound, method: "POST", path: "/jobs",
                                                         body: Data(loadGraph("weights/m.bin", group: group).utf8))
        #expect(submitted.status == 201, "\(submitted.text)")
        let id = try #require(submitted.json?["id"]?.stringValue)
        var state: String?
        while Date() < deadline.addingTimeInterval(60) {
            state = try await HTTPTestClient.request(port: bound, method: "GET", path: "/jobs/\(id)").json?["state"]?.stringValue
            if ["done", "failed", "cancelled"].contains(state ?? "") { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(state == "done")
        #expect(SyntheticState.output(group) == 6)
        let missing = try await HTTPTestClient.request(port: bound, method: "POST", path: "/validate",
                                                       body: Data(loadGraph("weights/none.bin", group: group).utf8))
        #expect(missing.status == 422)
        #expect(missing.text.contains("(models folder)") && missing.text.contains("docs/models.md"), "\(missing.text)")
        token.cancel()
        while exit.value == nil, Date() < deadline.addingTimeInterval(90) { try await Task.sleep(for: .milliseconds(20)) }
        #expect(exit.value == ExitStatus.success)
    }

    @Test("an output template outside the job's folder is listed with the name the saver chose")
    func templatedOutsideOutput() async throws {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let source = repo.appendingPathComponent("samples/chelsea.png")
        try #require(FileManager.default.fileExists(atPath: source.path), "\(source.path) is missing: run scripts/fetch-assets.sh")
        let registry = SyntheticNodes.registry()
        try MediaPlugin.register(into: registry)
        let server = try await TestServer.start(registry: registry)
        defer { Task { await server.stop() } }
        try FileManager.default.createDirectory(at: server.workspace.appendingPathComponent("in"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: source, to: server.workspace.appendingPathComponent("in/cat.png"))
        let target = server.workspace.path + "/pictures/{stem}_{n}.png"
        let graph = #"{"version": 1, "nodes": {"src": {"type": "LoadImage", "params": {"path": "in/cat.png"}}, "small": {"type": "Resize", "inputs": {"frames": "src"}, "params": {"width": 8}}, "save": {"type": "SaveImage", "inputs": {"frames": "small"}, "params": {"path": \#(MediaTestSupport.json(target))}}}}"#
        for expected in ["pictures/cat_1.png", "pictures/cat_2.png"] {
            let job = try await server.waitForEnd(try await server.submit(graph))
            #expect(job["state"]?.stringValue == "done", "\(job.jsonText)")
            let names = job["outputs"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
            #expect(names.contains(expected), "\(names)")
        }
    }
}

