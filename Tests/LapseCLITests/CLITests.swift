import Foundation
import LapseCLI
import LapseGraph
import LapseTestSupport
import Testing

/// Runs `lapse ARGS` in-process against the synthetic and debug nodes.
func lapse(_ arguments: [String], token: CancellationToken = CancellationToken()) -> (code: Int32, out: String, err: String) {
    let console = CapturedConsole()
    let environment = CLIEnvironment(console: console, makeRegistry: {
        let registry = SyntheticNodes.registry()
        try DebugNodes.register(into: registry)
        return registry
    }, cancellation: token, environment: [:])
    let code = LapseCLI.run(arguments, environment: environment)
    return (code, console.standardOutput, console.standardError)
}

/// Writes `text` to a new temporary graph file.
func writeGraph(_ text: String, in dir: URL, name: String = "g.json") throws -> String {
    let url = dir.appendingPathComponent(name)
    try Data(text.utf8).write(to: url)
    return url.path
}

enum Paths {
    /// The build products directory (where the test runner, `lapse` and the module files are).
    static var products: URL {
        URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]).deletingLastPathComponent()
    }
    static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
}

@Suite("lapse CLI")
struct CLITests {
    let valid = #"{"version": 1, "nodes": {"a": {"type": "DebugInt", "params": {"value": 3}}, "b": {"type": "DebugInt", "inputs": {"in": "a"}, "params": {"value": 4}}, "out": {"type": "TestOutput", "inputs": {"value": "b"}, "params": {"group": "GROUP"}}}}"#

    @Test func validateExitCodes() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ok = lapse(["validate", try writeGraph(valid, in: dir)])
        #expect(ok.code == 0)
        #expect(ok.out.contains("valid (3 nodes, 3 to run)"))
        let bad = lapse(["validate", try writeGraph(#"{"version": 1, "nodes": {"a": {"type": "DebugIn"}, "out": {"type": "TestOutput", "inputs": {"value": "nomodel"}}}}"#, in: dir)])
        #expect(bad.code == 2)
        let lines = bad.err.split(separator: "\n").map(String.init)
        #expect(lines.contains(#"error: nodes.a.type: unknown node type "DebugIn" (did you mean "DebugInt"?)"#))
        #expect(lines.contains(#"error: nodes.out.inputs.value: no node "nomodel""#))
        let syntax = lapse(["validate", try writeGraph("{\"version\": 1,\n\"nodes\": {]}", in: dir)])
        #expect(syntax.code == 2)
        #expect(syntax.err.contains(":2:11: invalid JSON: unexpected ']', expected a string key"))
        #expect(lapse(["validate", dir.appendingPathComponent("missing.json").path]).code == 2)
    }

    @Test func runWithOverridesAndExitCodes() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let group = "cli" + UUID().uuidString.prefix(6)
        let path = try writeGraph(valid.replacingOccurrences(of: "GROUP", with: group), in: dir)
        let run = lapse(["run", path, "--quiet", "--set", "b.value=10"])
        #expect(run.code == 0, "\(run.err)")
        #expect(SyntheticState.output(group) == 13)
        #expect(run.out.isEmpty && run.err.isEmpty, "--quiet prints nothing")
        let invalid = lapse(["run", path, "--set", "b.value=1.5"])
        #expect(invalid.code == 2)
        #expect(invalid.err.contains("error: nodes.b.params.value: wrong literal type: expected Int, got number 1.5"))
        let failing = try writeGraph(#"{"version": 1, "nodes": {"f": {"type": "DebugFail", "params": {"message": "boom"}}, "out": {"type": "TestOutput", "inputs": {"value": "f"}}}}"#, in: dir, name: "fail.json")
        let failed = lapse(["run", failing, "--events", "plain"])
        #expect(failed.code == 1)
        #expect(failed.err.contains(#"error: node "f" (DebugFail): boom"#))
    }

    @Test func jsonEventsAreOneObjectPerLine() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = try writeGraph(#"{"version": 1, "nodes": {"s": {"type": "DebugSleep", "params": {"steps": 3, "step_ms": 1}}, "out": {"type": "TestOutput", "inputs": {"value": "s"}}}}"#, in: dir)
        let run = lapse(["run", path, "--events", "json"])
        #expect(run.code == 0)
        let events = run.out.split(separator: "\n").compactMap { try? JSONParser.parse(String($0)) }
        #expect(events.count == run.out.split(separator: "\n").count)
        let kinds = events.compactMap { event -> String? in if case .string(let s)? = event["event"]?.kind { s } else { nil } }
        #expect(kinds.filter { $0 == "progress" }.count == 3)
        #expect(kinds.first == "nodeStarted" && kinds.dropLast().last == "nodeFinished")
        #expect(kinds.last == "summary", "the run's summary closes the stream")
    }

    @Test func cacheDirSkipsUnchangedNodes() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = try writeGraph(#"{"version": 1, "nodes": {"s": {"type": "DebugSleep", "params": {"steps": 2, "step_ms": 1}}, "out": {"type": "TestOutput", "inputs": {"value": "s"}}}}"#, in: dir)
        let cache = dir.appendingPathComponent("cache").path
        let first = lapse(["run", path, "--cache-dir", cache, "--events", "json"])
        let second = lapse(["run", path, "--cache-dir", cache, "--events", "json"])
        #expect(first.out.contains(#""node":"s","type":"DebugSleep","seconds""#) && first.out.contains(#""cached":false"#))
        #expect(second.out.contains(#""node":"s","type":"DebugSleep","seconds":0.000000,"cached":true"#))
        #expect(!second.out.contains(#""event":"progress","node":"s""#))
    }

    @Test func nodesListingDescribeAndJSON() throws {
        let list = lapse(["nodes"])
        #expect(list.code == 0)
        #expect(list.out.contains("debug\n") && list.out.contains("  DebugSleep"))
        let one = lapse(["nodes", "DebugSleep"])
        #expect(one.out.contains("step_ms  Int, default 10, range [0, 60000]"))
        let json = lapse(["nodes", "--json"])
        let parsed = try JSONParser.parse(json.out)
        guard case .array(let nodes)? = parsed["nodes"]?.kind else { Issue.record("no nodes array"); return }
        #expect(nodes.count == SyntheticNodes.registry().all.count + 6)
        let unknown = lapse(["nodes", "DebugSlep"])
        #expect(unknown.code == 2 && unknown.err.contains(#"did you mean "DebugSleep"?"#))
    }

    @Test func graphDotAndVersionAndHelp() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let dot = lapse(["graph", try writeGraph(valid, in: dir), "--dot"])
        #expect(dot.code == 0)
        #expect(dot.out.hasPrefix("digraph \"g\" {"))
        #expect(dot.out.contains(#""a" -> "b" [label="value → in"];"#))
        #expect(lapse(["--version"]).out == "lapse \(LapseCLI.version)\n")
        let help = lapse(["run", "--help"])
        #expect(help.code == 0 && help.out.contains("--cache-dir") && help.out.contains("Examples:"))
    }
}
