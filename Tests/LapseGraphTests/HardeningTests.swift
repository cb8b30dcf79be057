import Foundation
import LapseGraph
import LapseTestSupport
import Testing

/// Inputs that used to crash, hang or succeed wrongly in the runtime: each case is a regression test.
@Suite("Runtime hardening")
struct HardeningTests {
    /// A generator, `stages` chained passthrough nodes and a sink.
    static func streamChain(stages: Int, group: String) -> String {
        var nodes = [#""n0": {"type": "TestFrameGenerator", "params": {"count": 3, "group": "\#(group)"}}"#]
        for i in 1...stages {
            nodes.append(#""n\#(i)": {"type": "TestFramePassthrough", "inputs": {"frames": "n\#(i - 1)"}, "params": {"group": "\#(group)"}}"#)
        }
        nodes.append(#""sink": {"type": "TestFrameSink", "inputs": {"frames": "n\#(stages)"}, "params": {"group": "\#(group)"}}"#)
        return graph(nodes.joined(separator: ",\n"))
    }

    @Test func deepStreamChainRunsUpToTheLimitAndIsRefusedBeyondIt() throws {
        // At the limit every frame is pulled through all stages (recursively) without overflowing the node stack.
        let g = uniqueGroup()
        _ = try runGraph(Self.streamChain(stages: GraphValidator.maximumStreamDepth - 1, group: g))
        #expect(SyntheticState.output(g) == 3)
        // 15,000 stages overflowed the stack; now validation says why it is refused.
        let problems = errors(Self.streamChain(stages: 15_000, group: uniqueGroup()))
        #expect(problems.count == 1)
        #expect(problems.first?.contains("chained streaming nodes; at most \(GraphValidator.maximumStreamDepth) are supported") == true, "\(problems)")
    }

    @Test func damagedCacheEntriesAreRecomputedWithAWarning() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        func run() throws -> (RunSummary, [String], String) {
            let g = uniqueGroup()
            let text = graph(#"""
                "a": {"type": "TestValue", "params": {"value": 7, "group": "damaged-cache"}},
                "b": {"type": "TestAdd", "inputs": {"a": "a"}, "params": {"b": 1, "group": "damaged-cache"}},
                "out": {"type": "TestOutput", "inputs": {"value": "b"}, "params": {"group": "\#(g)"}}
                """#)
            let logs = LogBox()
            let sink = ClosureEventSink { event in if case .log(_, let message) = event { logs.append(message) } }
            let summary = try runGraph(text, options: ExecutionOptions(cache: ResultCache(directory: dir), events: sink))
            return (summary, logs.lines, g)
        }
        let (first, _, _) = try run()
        #expect(Set(first.executed) == ["a", "b", "out"])
        // Edit b's entry by hand: a plausible JSON value, but the checksum no longer holds.
        let key = try #require(first.keys["b"])
        let entry = dir.appendingPathComponent(String(key.prefix(2))).appendingPathComponent("\(key).lapse")
        var edited = try Data(contentsOf: entry)
        #expect(edited.starts(with: Data("lapse-cache-v3 ".utf8)))
        let value = try #require(edited.range(of: Data(#""value":"8""#.utf8)))
        edited.replaceSubrange(value, with: Data(#""value":"9""#.utf8))
        try edited.write(to: entry)
        let (second, logs, g) = try run()
        #expect(second.cached == ["a"])
        #expect(Set(second.executed) == ["b", "out"], "the damaged entry is recomputed, not used")
        #expect(SyntheticState.output(g) == 8)
        #expect(logs.contains { $0.contains("ignored the cache entry \(entry.path): checksum mismatch") }, "\(logs)")
        // The recomputed result was written again and is used by the next run.
        let (third, _, _) = try run()
        #expect(Set(third.cached) == ["a", "b"])
    }

    @Test func inputParamsNamingFIFOsOrDevicesAreRefusedAtValidation() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fifo = dir.appendingPathComponent("pipe.bin").path
        #expect(mkfifo(fifo, 0o600) == 0)
        for (path, kind) in [(fifo, "a named pipe (FIFO)"), ("/dev/zero", "a character device")] {
            let problems = errors(graph(#""l": {"type": "TestLoad", "params": {"path": "\#(path)"}}, "out": {"type": "TestOutput", "inputs": {"value": "l"}}"#))
            #expect(problems == [#"error: nodes.l.params.path: "\#(path)" is \#(kind), not a regular file"#])
        }
    }
}

/// Log lines collected from worker threads.
final class LogBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func append(_ line: String) { lock.lock(); stored.append(line); lock.unlock() }
    var lines: [String] { lock.lock(); defer { lock.unlock() }; return stored }
}
