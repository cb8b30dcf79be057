import Foundation
import LapseCLI
import LapseGraph
import LapseTensor
import LapseTestSupport
import Testing

/// Builds Examples/SharpenPlugin the way an external plugin is built: against this build's module files, with
/// LapseGraph/LapseTensor symbols left undefined so they bind to the host's single copy when loaded.
func buildSharpenPlugin(into dir: URL) throws -> URL {
    let output = dir.appendingPathComponent("libSharpenPlugin.so")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["swiftc", "-emit-library", "-module-name", "SharpenPlugin",
                         "-I", Paths.products.appendingPathComponent("Modules").path,
                         "-I", Paths.repoRoot.appendingPathComponent("Sources/COpenBLAS").path,
                         Paths.repoRoot.appendingPathComponent("Examples/SharpenPlugin/Sharpen.swift").path,
                         "-o", output.path]
    let pipe = Pipe()
    process.standardError = pipe
    try process.run()
    let message = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw NodeError.failed("swiftc failed building the example plugin: \(message)")
    }
    return output
}

/// Collects the frames a sink receives, for checking plugin output pixels.
final class FrameBox: @unchecked Sendable {
    var frames: [Frame] = []
}

@Suite("External plugins and the lapse process")
struct PluginAndProcessTests {
    @Test func sharpenPluginLoadsAndRuns() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let plugins = dir.appendingPathComponent("plugins")
        try FileManager.default.createDirectory(at: plugins, withIntermediateDirectories: true)
        _ = try buildSharpenPlugin(into: plugins)
        try Data("not a library".utf8).write(to: plugins.appendingPathComponent("libBroken.so"))
        let source = dir.appendingPathComponent("empty.swift")
        try Data("public func nothingToRegister() {}\n".utf8).write(to: source)
        let compile = Process()
        compile.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        compile.arguments = ["swiftc", "-emit-library", "-module-name", "NoEntry", source.path,
                             "-o", plugins.appendingPathComponent("libNoEntry.so").path]
        try compile.run()
        compile.waitUntilExit()
        let registry = SyntheticNodes.registry()
        let problems = PluginLoader.loadDirectory(plugins, into: registry).map(\.localizedDescription)
        #expect(problems.count == 2)
        #expect(problems.first?.hasPrefix("plugin \(plugins.path)/libBroken.so: cannot load:") == true)
        #expect(problems.last == "plugin \(plugins.path)/libNoEntry.so: not a lapse plugin (no lapse_plugin_register entry point)")
        let entry = try #require(registry.entry(for: "Sharpen"), "the rest keeps working")
        #expect(entry.source == plugins.appendingPathComponent("libSharpenPlugin.so").path)

        // A bright pixel on grey: the unsharp mask raises it and darkens its neighbours by known amounts.
        var image = Tensor(repeating: 0.5, shape: [3, 5, 5])
        image.withUnsafeMutableBufferPointer { p in for c in 0..<3 { p[c * 25 + 12] = 0.75 } }
        let frames = Frames(frames: [Frame(image: image)])
        let context = RecordingContext()
        let outputs = try entry.nodeType.init().run(NodeInputs(["frames": .object(frames), "amount": .float(1)]), context: context)
        let result = try #require(try outputs.values["frames"].map { value -> Frames in
            guard case .object(let object) = value, let typed = object as? Frames else { throw NodeError.failed("not Frames") }
            return typed
        }, "the plugin's Frames is the host's Frames type")
        let pixels = try result.collect()[0].image.scalars
        #expect(abs(pixels[12] - 0.9375) < 1e-6)
        #expect(abs(pixels[13] - 0.46875) < 1e-6)
        #expect(abs(pixels[18] - 0.484375) < 1e-6)
        #expect(abs(pixels[0] - 0.5) < 1e-6)
    }

    @Test func pluginGraphRunsThroughCLIAndDuplicatesAreNamed() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let first = dir.appendingPathComponent("a"), second = dir.appendingPathComponent("b")
        for folder in [first, second] { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true) }
        let built = try buildSharpenPlugin(into: first)
        // The same plugin under another name in another directory: a second registration of "Sharpen".
        try FileManager.default.copyItem(at: built, to: second.appendingPathComponent("libSharpenCopy.so"))
        // The package-built product links its own copy of LapseGraph: refused, with the reason.
        let embedded = second.appendingPathComponent("libEmbedded.so")
        try FileManager.default.copyItem(at: URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("libSharpenPlugin.so"), to: embedded)
        let graph = try writeGraph(#"{"version": 1, "nodes": {"f": {"type": "DebugFrames", "params": {"count": 4}}, "s": {"type": "Sharpen", "inputs": {"frames": "f"}, "params": {"amount": 2}}, "out": {"type": "DebugFrameSink", "inputs": {"frames": "s"}}}}"#, in: dir)
        let ok = lapse(["run", graph, "--plugin-path", first.path, "--events", "plain"])
        #expect(ok.code == 0, "\(ok.err)")
        #expect(ok.err.contains("out: 4 frames"))
        let clash = lapse(["run", graph, "--plugin-path", first.path, "--plugin-path", second.path, "--events", "plain"])
        #expect(clash.code == 2)
        #expect(clash.err.contains(#"node type "Sharpen" is registered twice: by \#(first.path)/libSharpenPlugin.so and by \#(second.path)/libSharpenCopy.so"#))
        #expect(clash.err.contains("plugin \(embedded.path): contains its own copy of LapseGraph"))
    }

    /// Spawns the built `lapse` binary.
    func spawn(_ arguments: [String], debugNodes: Bool = true) throws -> (Process, Pipe, Pipe) {
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
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return (process, out, err)
    }

    @Test func binaryValidatesAndRuns() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out.txt")
        let graph = try writeGraph(#"{"version": 1, "nodes": {"a": {"type": "DebugInt", "params": {"value": 5}}, "w": {"type": "DebugWriteText", "inputs": {"value": "a"}, "params": {"path": "\#(target.path)", "lines": 2}}}}"#, in: dir)
        let (run, _, _) = try spawn(["run", graph, "--quiet"])
        run.waitUntilExit()
        #expect(run.terminationStatus == 0)
        #expect(try String(contentsOf: target, encoding: .utf8) == "0 5\n1 5\n")
        let bad = try writeGraph(#"{"version": 1, "nodes": {"w": {"type": "DebugWriteText", "params": {"lines": -1}}}}"#, in: dir, name: "bad.json")
        let (validate, _, err) = try spawn(["validate", bad])
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        validate.waitUntilExit()
        #expect(validate.terminationStatus == 2)
        #expect(message.contains("error: nodes.w.params.lines: value -1 is below the minimum 0 (allowed: ≥ 0)"))
        #expect(message.contains(#"error: nodes.w.params.path: missing required input "path" (String)"#))
    }

    /// SIGTERM and SIGHUP (a closed terminal, a stopped job) cancel like Ctrl-C: no partial or temporary file remains.
    @Test(arguments: [SIGINT, SIGTERM, SIGHUP])
    func signalsCancelExit130AndLeaveNoPartialOutput(signal: Int32) throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out.txt")
        let graph = try writeGraph(#"{"version": 1, "nodes": {"w": {"type": "DebugWriteText", "params": {"path": "\#(target.path)", "lines": 100000, "line_ms": 5}}}}"#, in: dir, name: "slow.json")
        let (process, out, _) = try spawn(["run", graph, "--events", "json"])
        // Wait until the writer has really started writing (a progress event), then press Ctrl-C.
        let handle = out.fileHandleForReading
        var seen = ""
        while !seen.contains(#""event":"progress""#) {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
        }
        #expect(seen.contains(#""event":"progress""#))
        let temps = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("lapse-tmp") }
        #expect(temps.count == 1, "a temporary file is being written: \(temps)")
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        #expect(process.terminationStatus == 130)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["slow.json"], "no output or temporary file remains")
    }
}

/// A `NodeContext` for calling a node directly.
final class RecordingContext: NodeContext, @unchecked Sendable {
    let nodeID = "direct"
    let nodeType = "direct"
    var isCancelled: Bool { false }
    func progress(step: Int, total: Int, unit: String) {}
    func log(_ message: String) {}
}
