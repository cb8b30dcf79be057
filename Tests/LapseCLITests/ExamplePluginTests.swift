import Foundation
import LapseCLI
import LapseGraph
import LapseTensor
import LapseTestSupport
import Testing

/// The example plugin package, Examples/SharpenPlugin, built and tested the way its author would: `swift test` and
/// `swift build -c release` in the package. Its scratch folder is under this repository's .build, so a second run of
/// the suite only relinks what changed (cold: the core's plugin API modules are compiled once more for the package).
enum ExamplePlugin {
    static let package = Paths.repoRoot.appendingPathComponent("Examples/SharpenPlugin")
    static let scratch = Paths.repoRoot.appendingPathComponent(".build/examples/SharpenPlugin")
    /// Where `swift build -c release` puts libSharpenPlugin.so and the libLapsePluginAPI.so it links.
    static var products: URL { scratch.appendingPathComponent("release") }
    static var library: URL { products.appendingPathComponent("libSharpenPlugin.so") }

    /// The package's own tests' output, once both commands have succeeded; built once per test process.
    /// `--disable-testable-imports` keeps `swift test` on the flags `swift build` uses (in release it otherwise adds
    /// `-enable-testing`), so the two commands and scripts/test.sh's builds share one set of objects instead of
    /// recompiling the core in turn.
    private static let outcome = Task<String, any Error> {
        let common = ["-c", "release", "--package-path", package.path, "--scratch-path", scratch.path]
        let tests = try await swiftPM(["test", "--disable-testable-imports"] + common)
        try await swiftPM(["build"] + common + ["--product", "SharpenPlugin"])
        return tests
    }

    /// Builds (once) and returns the output of the package's tests.
    @discardableResult
    static func build() async throws -> String { try await outcome.value }

    /// Runs `swift ARGS`, its output captured in a log file (a pipe could fill up and stall a long build).
    @discardableResult
    static func swiftPM(_ arguments: [String]) async throws -> String {
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        let log = scratch.appendingPathComponent("lapse-tests-\(arguments[0]).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        defer { try? handle.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["swift"] + arguments
        process.standardOutput = handle
        process.standardError = handle
        try await TestSupport.runToExit(process)
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        guard process.terminationStatus == 0 else {
            throw NodeError.failed("swift \(arguments.joined(separator: " ")) failed (\(log.path)): \(output.suffix(3000))")
        }
        return output
    }
}

/// The SwiftPM-built example plugin in `lapse` and `lapse serve`, and the loader's refusals.
@Suite("External plugins built with SwiftPM")
struct ExamplePluginTests {
    @Test func thePackagesOwnTestsPass() async throws {
        let output = try await ExamplePlugin.build()
        #expect(output.contains("Test run with 3 tests in 1 suite passed"), "\(output.suffix(2000))")
    }

    /// The plugin's undefined core symbols bind to this process's copy: a `Frames` made here goes in, a `Frames`
    /// that this process's cast accepts comes out, with the expected pixels.
    @Test func loadsIntoThisProcessWithOneCopyOfTheCoreTypes() async throws {
        try await ExamplePlugin.build()
        let dir = try TestSupport.makeTemporaryDirectory()
        // Kept: the libraries stay loaded for the process's life, and a deleted one's inode, reused by a later
        // test's new file, would make glibc hand back the old library for it.
        // An installed plugin folder: the plugin and the core library it links, plus two files that are not plugins.
        for name in ["libSharpenPlugin.so", "libLapsePluginAPI.so"] {
            try FileManager.default.copyItem(at: ExamplePlugin.products.appendingPathComponent(name),
                                             to: dir.appendingPathComponent(name))
        }
        try Data("not a library".utf8).write(to: dir.appendingPathComponent("libBroken.so"))
        let source = dir.appendingPathComponent("empty.swift")
        try Data("public func nothingToRegister() {}\n".utf8).write(to: source)
        try MediaTestSupport.run("swiftc", ["-emit-library", "-module-name", "NoEntry", source.path,
                                            "-o", dir.appendingPathComponent("libNoEntry.so").path])

        let registry = SyntheticNodes.registry()
        let problems = PluginLoader.loadDirectory(dir, into: registry).map(\.localizedDescription)
        #expect(problems.count == 2, "libLapsePluginAPI.so is the core, not a plugin: \(problems)")
        #expect(problems.first?.hasPrefix("plugin \(dir.path)/libBroken.so: cannot load:") == true)
        #expect(problems.last == "plugin \(dir.path)/libNoEntry.so: not a lapse plugin (no lapse_plugin_register entry point)")
        let entry = try #require(registry.entry(for: "Sharpen"), "the rest keeps working")
        #expect(entry.source == dir.appendingPathComponent("libSharpenPlugin.so").path)

        var image = Tensor(repeating: 0.5, shape: [3, 5, 5])
        image.withUnsafeMutableBufferPointer { p in for c in 0..<3 { p[c * 25 + 12] = 0.75 } }
        let outputs = try entry.nodeType.init().run(NodeInputs(["frames": .object(Frames(frames: [Frame(image: image)])),
                                                                "amount": .float(1)]), context: TestNodeContext())
        guard case .object(let object)? = outputs.values["frames"] else { throw NodeError.failed("no frames output") }
        let result = try #require(object as? Frames, "the plugin's Frames is this process's Frames type")
        let pixels = try result.collect()[0].image.scalars
        #expect(abs(pixels[12] - 0.9375) < 1e-6)
        #expect(abs(pixels[13] - 0.46875) < 1e-6)

        // A second name for the loaded file (a hard link, as a deleted library's reused inode would be): glibc hands
        // back the library already loaded, which the loader says rather than registering that one again.
        let linked = try TestSupport.makeTemporaryDirectory()
        let link = linked.appendingPathComponent("libSharpenLink.so")
        try FileManager.default.linkItem(at: dir.appendingPathComponent("libSharpenPlugin.so"), to: link)
        let again = PluginLoader.loadDirectory(linked, into: SyntheticNodes.registry()).map(\.localizedDescription)
        #expect(again == ["plugin \(link.path): the dynamic linker returned the already loaded \(dir.path)/libSharpenPlugin.so for it (same device and inode); restart the program to load this file"])
    }

    /// A library that links the core statically carries its own LapseGraph: refused, with the way out.
    @Test func aLibraryWithItsOwnCoreIsRefused() async throws {
        try await ExamplePlugin.build()
        let dir = try TestSupport.makeTemporaryDirectory()
        // Kept: the libraries stay loaded for the process's life, and a deleted one's inode, reused by a later
        // test's new file, would make glibc hand back the old library for it.
        // The plugin's object file linked together with the objects SwiftPM put in libLapsePluginAPI.so (its link
        // lists), as a plugin that depended on the static LapseGraph product would be.
        var objects: [String] = []
        for product in ["SharpenPlugin", "LapsePluginAPI"] {
            let list = ExamplePlugin.products.appendingPathComponent("\(product).product/Objects.LinkFileList")
            objects += try String(contentsOf: list, encoding: .utf8).split(separator: "\n").map(String.init)
        }
        let embedded = dir.appendingPathComponent("libEmbedded.so")
        try MediaTestSupport.run("swiftc", ["-emit-library"] + objects + ["-lopenblas", "-o", embedded.path])
        let registry = SyntheticNodes.registry()
        let problems = PluginLoader.loadDirectory(dir, into: registry).map(\.localizedDescription)
        #expect(problems == ["plugin \(embedded.path): contains its own copy of LapseGraph, so its types would not match the host's; link the core's dynamic LapsePluginAPI product instead (see docs/writing-nodes.md)"])
        #expect(registry.entry(for: "Sharpen") == nil)
    }

    /// The `lapse` executable loads the plugin straight from the package's build folder and runs a graph that passes
    /// frames from a core node through the plugin into another core node; two copies of a plugin clash by name.
    @Test func lapseRunsAGraphThroughThePlugin() async throws {
        try await ExamplePlugin.build()
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let graph = try writeGraph(#"{"version": 1, "nodes": {"f": {"type": "DebugFrames", "params": {"count": 4}}, "s": {"type": "Sharpen", "inputs": {"frames": "f"}, "params": {"amount": 2}}, "out": {"type": "DebugFrameSink", "inputs": {"frames": "s"}}}}"#, in: dir)
        let run = try await LapseProcess.run(["run", graph, "--plugin-path", ExamplePlugin.products.path, "--events", "plain"])
        #expect(run.code == 0, "\(run.err)")
        #expect(run.err.contains("out: 4 frames"), "\(run.err)")
        #expect(!run.err.contains("warning"), "libLapsePluginAPI.so is not taken for a plugin: \(run.err)")

        let copy = dir.appendingPathComponent("copy")
        try FileManager.default.createDirectory(at: copy, withIntermediateDirectories: true)
        for (name, copyName) in [("libSharpenPlugin.so", "libSharpenCopy.so"), ("libLapsePluginAPI.so", "libLapsePluginAPI.so")] {
            try FileManager.default.copyItem(at: ExamplePlugin.products.appendingPathComponent(name), to: copy.appendingPathComponent(copyName))
        }
        let clash = try await LapseProcess.run(["run", graph, "--plugin-path", ExamplePlugin.products.path, "--plugin-path", copy.path])
        #expect(clash.code == 2)
        #expect(clash.err.contains(#"node type "Sharpen" is registered twice: by \#(ExamplePlugin.library.path) and by \#(copy.path)/libSharpenCopy.so"#), "\(clash.err)")
    }

    /// `lapse serve --plugin-path` lists the plugin's node in `GET /nodes`, naming the library it came from.
    @Test func lapseServeListsThePluginNode() async throws {
        try await ExamplePlugin.build()
        let workspace = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: workspace) }
        let (process, out, _) = try LapseProcess.spawn(["serve", "--port", "0", "--workspace", workspace.path,
                                                        "--plugin-path", ExamplePlugin.products.path])
        defer { process.terminate(); process.waitUntilExit() }
        var printed = ""
        while !printed.contains("\n") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            printed += String(decoding: chunk, as: UTF8.self)
        }
        let range = try #require(printed.range(of: #"http://127\.0\.0\.1:[0-9]+"#, options: .regularExpression),
                                 "no listening line: \(printed)")
        // python3 is already a test dependency (the batch tests); it keeps an HTTP client out of this target.
        let body = try MediaTestSupport.run("python3", ["-c", "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())",
                                                        "\(printed[range])/nodes"])
        let listing = try JSONSerialization.jsonObject(with: body) as? [String: Any]
        let nodes = try #require(listing?["nodes"] as? [[String: Any]], "GET /nodes lists nodes: \(String(decoding: body.prefix(300), as: UTF8.self))")
        let sharpen = try #require(nodes.first { $0["type"] as? String == "Sharpen" }, "Sharpen is listed")
        #expect(sharpen["source"] as? String == ExamplePlugin.library.path)
    }
}

/// The built `lapse` executable, run as a child process.
enum LapseProcess {
    /// `lapse ARGS`, not yet started, with the debug nodes unless `debugNodes` is false.
    static func make(_ arguments: [String], debugNodes: Bool = true) throws -> Process {
        let binary = Paths.products.appendingPathComponent("lapse")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw NodeError.failed("lapse binary not found at \(binary.path); build the package first")
        }
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        if debugNodes { environment["LAPSE_DEBUG_NODES"] = "1" }
        process.environment = environment
        return process
    }

    /// Starts `lapse ARGS`; returns it and its stdout and stderr pipes.
    static func spawn(_ arguments: [String], debugNodes: Bool = true) throws -> (Process, Pipe, Pipe) {
        let process = try make(arguments, debugNodes: debugNodes)
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return (process, out, err)
    }

    /// Runs `lapse ARGS` to the end; returns the exit code and both outputs (through files, so neither can fill up
    /// a pipe and stall the child).
    static func run(_ arguments: [String]) async throws -> (code: Int32, out: String, err: String) {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let outURL = dir.appendingPathComponent("out"), errURL = dir.appendingPathComponent("err")
        for url in [outURL, errURL] { FileManager.default.createFile(atPath: url.path, contents: nil) }
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
        defer { try? out.close(); try? err.close() }
        let process = try make(arguments)
        process.standardOutput = out
        process.standardError = err
        try await TestSupport.runToExit(process)
        return (process.terminationStatus, try String(contentsOf: outURL, encoding: .utf8), try String(contentsOf: errURL, encoding: .utf8))
    }
}
