import Foundation
import LapseCLI
import LapseGraph
import LapseTestSupport
import Testing

/// `--models-dir` / `LAPSE_MODELS` on run, validate and batch, and the ready graphs naming outputs after their input.
@Suite("lapse: models folders and output names")
struct ModelsDirTests {
    /// Runs `lapse ARGS` in-process with an environment and a current directory.
    func lapse(_ arguments: [String], environment: [String: String] = [:], in directory: URL) -> (code: Int32, out: String, err: String) {
        let console = CapturedConsole()
        let env = CLIEnvironment(console: console, makeRegistry: { SyntheticNodes.registry() },
                                 environment: environment, currentDirectory: directory)
        let code = LapseCLI.run(arguments, environment: env)
        return (code, console.standardOutput, console.standardError)
    }

    @Test("run and validate look in the graph's folder, the current directory, --models-dir, then LAPSE_MODELS")
    func searchOrder() throws {
        let layout = try SearchFolders()
        defer { try? FileManager.default.removeItem(at: layout.root) }
        let group = "models" + UUID().uuidString.prefix(6)
        let graph = try layout.graph(group: group)
        let flags = ["--models-dir", layout.modelsA.path]
        let environment = ["LAPSE_MODELS": "../models-b"]  // relative to the current directory

        let missing = lapse(["validate", graph] + flags, environment: environment, in: layout.work)
        #expect(missing.code == 2)
        #expect(missing.err.contains(#"input file not found: "weights/m.bin" (looked in \#(layout.graphs.path)/weights/m.bin (the graph's folder), \#(layout.work.path)/weights/m.bin (the current directory), \#(layout.modelsA.path)/weights/m.bin (models folder), \#(layout.modelsB.path)/weights/m.bin (models folder)); where input files are looked for: docs/models.md"#), "\(missing.err)")

        func sizeRead() -> Int? {
            let run = lapse(["run", graph, "--quiet"] + flags, environment: environment, in: layout.work)
            #expect(run.code == 0, "\(run.err)")
            return SyntheticState.output(group)
        }
        try layout.put(4, in: layout.modelsB)
        #expect(lapse(["validate", graph], environment: environment, in: layout.work).code == 0, "LAPSE_MODELS alone")
        #expect(sizeRead() == 4)
        try layout.put(3, in: layout.modelsA)
        #expect(sizeRead() == 3, "--models-dir before LAPSE_MODELS")
        try layout.put(2, in: layout.work)
        #expect(sizeRead() == 2, "the current directory before the models folders")
        try layout.put(1, in: layout.graphs)
        #expect(sizeRead() == 1, "the graph's folder first")
    }

    @Test("a --models-dir that is no folder is a usage error; a LAPSE_MODELS entry that is none is skipped with a warning")
    func badFolders() throws {
        let layout = try SearchFolders()
        defer { try? FileManager.default.removeItem(at: layout.root) }
        try layout.put(5, in: layout.modelsA)
        let graph = try layout.graph(group: "bad")
        let flag = lapse(["validate", graph, "--models-dir", "nope"], in: layout.work)
        #expect(flag.code == 64)
        #expect(flag.err.contains("error: --models-dir nope: no such folder (\(layout.work.path)/nope)"), "\(flag.err)")
        let file = lapse(["run", graph, "--models-dir", layout.modelsA.path + "/weights/m.bin"], in: layout.work)
        #expect(file.code == 64 && file.err.contains("is a regular file, not a folder"), "\(file.err)")
        let variable = lapse(["validate", graph], environment: ["LAPSE_MODELS": "/nonexistent-lapse:" + layout.modelsA.path], in: layout.work)
        #expect(variable.code == 0, "\(variable.err)")
        #expect(variable.err.contains("warning: LAPSE_MODELS entry /nonexistent-lapse: no such folder"), "\(variable.err)")
    }

    /// Runs the built `lapse` (with its real plugins) in `directory`.
    func spawn(_ arguments: [String], in directory: URL, environment extra: [String: String] = [:]) throws -> (code: Int32, err: String) {
        let process = Process()
        process.executableURL = Paths.products.appendingPathComponent("lapse")
        process.arguments = arguments
        process.currentDirectoryURL = directory
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "LAPSE_MODELS")
        for (key, value) in extra { environment[key] = value }
        process.environment = environment
        let err = Pipe()
        process.standardError = err
        process.standardOutput = Pipe()
        try process.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    @Test("graphs/upscale-image.json names its output after its input: --set src.path=samples/coffee.png writes out/coffee_x4.png")
    func readyGraphNamesOutputAfterInput() throws {
        let repo = Paths.repoRoot
        for file in ["samples/coffee.png", "samples/astronaut.png", "models/realesrgan/realesr-animevideov3-x4.param"] {
            try #require(FileManager.default.fileExists(atPath: repo.appendingPathComponent(file).path),
                         "\(file) is missing: run scripts/fetch-assets.sh")
        }
        // A fresh working folder with its own samples/; the model is found through --models-dir (the checkout).
        let work = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: work) }
        try FileManager.default.createDirectory(at: work.appendingPathComponent("samples"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: repo.appendingPathComponent("samples/coffee.png"),
                                         to: work.appendingPathComponent("samples/coffee.png"))
        let graph = repo.appendingPathComponent("graphs/upscale-image.json").path
        let coffee = try spawn(["run", graph, "--quiet", "--set", "src.path=samples/coffee.png", "--models-dir", repo.path], in: work)
        #expect(coffee.code == 0, "\(coffee.err)")
        let written = try PNGSize.read(work.appendingPathComponent("out/coffee_x4.png"))
        let original = try PNGSize.read(repo.appendingPathComponent("samples/coffee.png"))
        #expect(written.width == original.width * 4 && written.height == original.height * 4)
        // The default input (samples/astronaut.png, found in the models folder) keeps its old output name.
        let astronaut = try spawn(["run", graph, "--quiet"], in: work, environment: ["LAPSE_MODELS": repo.path])
        #expect(astronaut.code == 0, "\(astronaut.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: work.appendingPathComponent("out").path).sorted()
                == ["astronaut_x4.png", "coffee_x4.png"])
    }

    @Test("lapse batch finds inputs through --models-dir and names each item's output after its input")
    func batch() throws {
        let layout = try SearchFolders()
        defer { try? FileManager.default.removeItem(at: layout.root) }
        try FileManager.default.createDirectory(at: layout.modelsA.appendingPathComponent("pictures"), withIntermediateDirectories: true)
        let repo = Paths.repoRoot
        for name in ["chelsea.png", "rocket.jpg"] {
            let source = repo.appendingPathComponent("samples/" + name)
            try #require(FileManager.default.fileExists(atPath: source.path), "\(source.path) is missing: run scripts/fetch-assets.sh")
            try FileManager.default.copyItem(at: source, to: layout.modelsA.appendingPathComponent("pictures/" + name))
        }
        let graph = try writeGraph(#"{"version": 1, "nodes": {"src": {"type": "LoadImage", "params": {"path": "pictures/chelsea.png"}}, "small": {"type": "Resize", "inputs": {"frames": "src"}, "params": {"width": 16}}, "save": {"type": "SaveImage", "inputs": {"frames": "small"}, "params": {"path": "{stem}_small.png"}}}}"#, in: layout.graphs)
        let manifest = layout.work.appendingPathComponent("items.jsonl")
        try Data(#"""
        {"id": "cat"}
        {"id": "rocket", "set": {"src.path": "pictures/rocket.jpg"}}

        """#.utf8).write(to: manifest)
        let result = try spawn(["batch", graph, manifest.path, "--shard", "0/1", "--out-dir", "out", "--models-dir", layout.modelsA.path],
                               in: layout.work)
        #expect(result.code == 0, "\(result.err)")
        let out = layout.work.appendingPathComponent("out")
        #expect(FileKind(path: out.path + "/cat/chelsea_small.png") == .regular)
        #expect(FileKind(path: out.path + "/rocket/rocket_small.png") == .regular)
    }
}

/// A PNG's size from its header, without decoding it.
enum PNGSize {
    static func read(_ url: URL) throws -> (width: Int, height: Int) {
        let data = try Data(contentsOf: url)
        guard data.count >= 24, data.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else {
            throw NodeError.failed("\(url.path) is not a PNG")
        }
        func be32(_ at: Int) -> Int { data[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }
        return (be32(16), be32(20))
    }
}

extension SearchFolders {
    /// A graph in `graphs/` whose TestLoad reads `weights/m.bin` and hands its size to TestOutput under `group`.
    func graph(group: String) throws -> String {
        let text = #"{"version": 1, "nodes": {"l": {"type": "TestLoad", "params": {"path": "weights/m.bin", "group": "\#(group)"}}, "out": {"type": "TestOutput", "inputs": {"value": "l"}, "params": {"group": "\#(group)"}}}}"#
        return try writeGraph(text, in: graphs)
    }
}
