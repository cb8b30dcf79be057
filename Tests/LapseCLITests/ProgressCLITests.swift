import Foundation
import LapseCLI
import LapseGraph
import LapseTestSupport
import Testing

/// Runs `lapse ARGS` in-process against the synthetic nodes and the streaming test nodes.
private func lapseStreaming(_ arguments: [String]) -> (code: Int32, out: String, err: String) {
    let console = CapturedConsole()
    let environment = CLIEnvironment(console: console, makeRegistry: { StreamingTestNodes.registry() },
                                     cancellation: CancellationToken(), environment: [:])
    let code = LapseCLI.run(arguments, environment: environment)
    return (code, console.standardOutput, console.standardError)
}

@Suite("lapse run progress and summary")
struct ProgressCLITests {
    /// gen makes 8 frames at 25 ms each, map spends 10 ms on each and counts "tile 1/1" per frame, the sink pulls.
    static func streamingGraph(group: String) -> String {
        #"""
        {"version": 1, "nodes": {
          "gen": {"type": "TestSlowFrames", "params": {"count": 8, "sleep_ms": 25}},
          "map": {"type": "TestTiledMap", "inputs": {"frames": "gen"}, "params": {"sleep_ms": 10}},
          "sink": {"type": "TestFrameSink", "inputs": {"frames": "map"}, "params": {"group": "\#(group)"}}
        }}
        """#
    }

    /// The seconds of a "ID (TYPE): done in S s" line.
    static func doneSeconds(_ log: String, _ id: String) -> Double? {
        for line in log.split(separator: "\n") where line.hasPrefix("\(id) (") && line.contains("): done in ") {
            return Double(line.split(separator: " ").dropLast().last ?? "")
        }
        return nil
    }

    @Test func plainOutputBillsStreamsToTheirNodesThrottlesAndSummarises() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = try writeGraph(Self.streamingGraph(group: "cli" + UUID().uuidString.prefix(6)), in: dir)
        let started = Date()
        let run = lapseStreaming(["run", path, "--events", "plain"])
        let elapsed = Date().timeIntervalSince(started)
        #expect(run.code == 0, "\(run.err)")
        let gen = try #require(Self.doneSeconds(run.err, "gen"), "\(run.err)")
        let map = try #require(Self.doneSeconds(run.err, "map"), "\(run.err)")
        let sink = try #require(Self.doneSeconds(run.err, "sink"), "\(run.err)")
        #expect(gen >= 0.2 && map >= 0.08 && sink < 0.05, "\(run.err)")
        // At most one progress line per second per node, plus its last one; map's frames lead its tile count.
        let mapLines = run.err.split(separator: "\n").filter { $0.hasPrefix("map (TestTiledMap): ") && !$0.contains("done") && !$0.contains("started") }
        #expect(mapLines.count <= 2 + Int(elapsed), "\(run.err)")
        #expect(mapLines.last == "map (TestTiledMap): frame 8/8, tile 1/1", "\(run.err)")
        // The summary, last, lists every node with its own time.
        let summary = try #require(run.err.range(of: "summary: ")).lowerBound
        let table = run.err[summary...].split(separator: "\n")
        #expect(table.count == 5, "\(run.err)")
        #expect(table[1].hasPrefix("  node  type  ") && table[1].contains("own time"), "\(run.err)")
        for (row, id) in zip(table.dropFirst(2), ["gen", "map", "sink"]) { #expect(row.hasPrefix("  \(id) ")) }
        #expect(table[2].hasSuffix("8") && table[4].hasSuffix("-"), "frames delivered by gen; none by the sink")
    }

    @Test func jsonEventsKeepTheirShapeAndEndWithTheSummary() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = try writeGraph(Self.streamingGraph(group: "cli" + UUID().uuidString.prefix(6)), in: dir)
        let run = lapseStreaming(["run", path, "--events", "json"])
        #expect(run.code == 0, "\(run.err)")
        #expect(run.err.isEmpty, "with --events json nothing goes to stderr: \(run.err)")
        let lines = run.out.split(separator: "\n").map(String.init)
        let events = try lines.map { try JSONParser.parse($0) }
        func string(_ value: JSONValue?) -> String? { if case .string(let s)? = value?.kind { s } else { nil } }
        func number(_ value: JSONValue?) -> Double? { if case .number(let n, _)? = value?.kind { n } else { nil } }
        let kinds = events.map { string($0["event"]) }
        #expect(Set(kinds.compactMap { $0 }) == ["nodeStarted", "progress", "nodeFinished", "summary"])
        #expect(kinds.last == "summary" && kinds.filter { $0 == "summary" }.count == 1)
        // nodeFinished has the fields it always had, and the streaming nodes' own time.
        var finished: [String: Double] = [:]
        for (line, event) in zip(lines, events) where string(event["event"]) == "nodeFinished" {
            #expect(line.contains(#""cached":false,"time":"#), "\(line)")
            finished[string(event["node"])!] = number(event["seconds"])
        }
        #expect(finished["gen"]! >= 0.2 && finished["map"]! >= 0.08 && finished["sink"]! < 0.05, "\(finished)")
        let summary = try #require(events.last)
        #expect(number(summary["seconds"])! >= 0.28)
        guard case .array(let nodes)? = summary["nodes"]?.kind else { Issue.record("no nodes: \(lines.last!)"); return }
        #expect(nodes.map { string($0["node"]) } == ["gen", "map", "sink"])
        for node in nodes {
            #expect(number(node["seconds"]) == finished[string(node["node"])!], "the summary repeats nodeFinished's seconds")
            #expect(string(node["status"]) == "done")
        }
    }
}
