import Foundation
import LapseCLI
import LapseGraph
import LapseTestSupport
import Testing

/// The `lapse` executable as a process: exit codes and signals. (Plugins: ExamplePluginTests.)
@Suite("The lapse process")
struct PluginAndProcessTests {
    @Test func binaryValidatesAndRuns() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out.txt")
        let graph = try writeGraph(#"{"version": 1, "nodes": {"a": {"type": "DebugInt", "params": {"value": 5}}, "w": {"type": "DebugWriteText", "inputs": {"value": "a"}, "params": {"path": "\#(target.path)", "lines": 2}}}}"#, in: dir)
        let (run, _, _) = try LapseProcess.spawn(["run", graph, "--quiet"])
        run.waitUntilExit()
        #expect(run.terminationStatus == 0)
        #expect(try String(contentsOf: target, encoding: .utf8) == "0 5\n1 5\n")
        let bad = try writeGraph(#"{"version": 1, "nodes": {"w": {"type": "DebugWriteText", "params": {"lines": -1}}}}"#, in: dir, name: "bad.json")
        let (validate, _, err) = try LapseProcess.spawn(["validate", bad])
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
        let (process, out, _) = try LapseProcess.spawn(["run", graph, "--events", "json"])
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
