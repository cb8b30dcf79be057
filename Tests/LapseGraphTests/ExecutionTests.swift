import Foundation
import LapseGraph
import LapseTensor
import LapseTestSupport
import Synchronization
import Testing

@Suite("Graph execution")
struct ExecutionTests {
    @Test func runsOnlyWhatOutputsNeedInDependencyOrder() throws {
        let g = uniqueGroup()
        let text = graph(#"""
            "out": {"type": "TestOutput", "inputs": {"value": "sum"}, "params": {"group": "\#(g)"}},
            "sum": {"type": "TestAdd", "inputs": {"a": "x", "b": "y"}, "params": {"group": "\#(g)"}},
            "x": {"type": "TestValue", "params": {"value": 2, "group": "\#(g)"}},
            "y": {"type": "TestAdd", "inputs": {"a": "x"}, "params": {"b": 10, "group": "\#(g)"}},
            "unused": {"type": "TestValue", "params": {"group": "\#(g)"}}
            """#)
        let summary = try runGraph(text)
        let order = SyntheticState.executed(g)
        #expect(Set(order) == ["x", "y", "sum", "out"], "unused nodes must not run")
        #expect(order.firstIndex(of: "x")! < order.firstIndex(of: "y")!)
        #expect(order.firstIndex(of: "y")! < order.firstIndex(of: "sum")!)
        #expect(order.last == "out")
        #expect(SyntheticState.output(g) == 14)
        #expect(summary.executed.count == 4)
    }

    /// An output is dropped once every node reading it has finished (x is read by y and, later, by sum: dropping
    /// it after y would leave sum without its input); `keepsIntermediateResults` keeps them all for the summary.
    @Test func outputsAreDroppedOnceEveryReaderHasFinished() throws {
        func run(keeping: Bool) throws -> RunSummary {
            let g = uniqueGroup()
            let summary = try runGraph(graph(#"""
                "out": {"type": "TestOutput", "inputs": {"value": "sum"}, "params": {"group": "\#(g)"}},
                "sum": {"type": "TestAdd", "inputs": {"a": "x", "b": "y"}, "params": {"group": "\#(g)"}},
                "x": {"type": "TestValue", "params": {"value": 2, "group": "\#(g)"}},
                "y": {"type": "TestAdd", "inputs": {"a": "x"}, "params": {"b": 10, "group": "\#(g)"}}
                """#), options: ExecutionOptions(keepsIntermediateResults: keeping))
            #expect(SyntheticState.output(g) == 14)
            return summary
        }
        let dropped = try run(keeping: false)
        #expect(["x", "y", "sum"].allSatisfy { dropped.outputs[$0]?.values.isEmpty == true }, "\(dropped.outputs)")
        let kept = try run(keeping: true)
        #expect(kept.outputs["x"]?.values["value"].map { "\($0)" } == "\(Value.int(2))")
        #expect(kept.outputs["sum"]?.values.isEmpty == false)
    }

    @Test func independentBranchesOverlap() throws {
        let g = uniqueGroup()
        let text = graph(#"""
            "a": {"type": "TestBarrier", "params": {"group": "\#(g)"}},
            "b": {"type": "TestBarrier", "params": {"group": "\#(g)"}},
            "s": {"type": "TestAdd", "inputs": {"a": "a", "b": "b"}, "params": {"group": "\#(g)"}},
            "out": {"type": "TestOutput", "inputs": {"value": "s"}, "params": {"group": "\#(g)"}}
            """#)
        _ = try runGraph(text, options: ExecutionOptions(maxConcurrency: 2))
        #expect(SyntheticState.output(g) == 2)

        // With one worker the branches cannot meet, so the same barrier must fail: the test can detect serial runs.
        let serial = uniqueGroup()
        let serialText = text.replacingOccurrences(of: g, with: serial)
            .replacingOccurrences(of: #""TestBarrier", "params": {"#, with: #""TestBarrier", "params": {"timeout_ms": 200, "#)
        #expect(throws: NodeExecutionError.self) { try runGraph(serialText, options: ExecutionOptions(maxConcurrency: 1)) }
    }

    @Test func runtimeErrorNamesNodeAndType() throws {
        let g = uniqueGroup()
        let text = graph(#""v": {"type": "TestValue", "params": {"group": "\#(g)"}}, "bad": {"type": "TestFail", "inputs": {"in": "v"}, "params": {"group": "\#(g)"}}, "out": {"type": "TestOutput", "inputs": {"value": "bad"}, "params": {"group": "\#(g)"}}"#)
        do {
            _ = try runGraph(text)
            Issue.record("expected a failure")
        } catch let error as NodeExecutionError {
            #expect(error.localizedDescription == #"node "bad" (TestFail): synthetic failure"#)
        }
        #expect(!SyntheticState.executed(g).contains("out"))
    }

    @Test func streamingKeepsFewFramesAlive() throws {
        let g = uniqueGroup()
        let text = graph(#"""
            "gen": {"type": "TestFrameGenerator", "params": {"count": 10000, "group": "\#(g)"}},
            "pass": {"type": "TestFramePassthrough", "inputs": {"frames": "gen"}, "params": {"group": "\#(g)"}},
            "sink": {"type": "TestFrameSink", "inputs": {"frames": "pass"}, "params": {"group": "\#(g)"}}
            """#)
        _ = try runGraph(text)
        #expect(SyntheticState.output(g) == 10000)
        let peak = try #require(SyntheticState.peakLiveBuffers(g))
        #expect(peak <= 4, "at most a few frame buffers may be alive at once, saw \(peak)")
        #expect(peak >= 1)
    }

    @Test func cancellationStopsAtNextStepAndLeavesNoOutput() throws {
        let g = uniqueGroup()
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out.txt")
        let token = CancellationToken()
        SyntheticState.setToken(token, for: g)
        let text = graph(#"""
            "slow": {"type": "TestSlow", "params": {"steps": 1000, "cancel_at": 5, "group": "\#(g)"}},
            "out": {"type": "TestWriteFile", "inputs": {"value": "slow"}, "params": {"path": "\#(target.path)", "group": "\#(g)"}}
            """#)
        let steps = Atomic<Int>(0)
        let events = ClosureEventSink { event in
            if case .progress = event { steps.add(1, ordering: .relaxed) }
        }
        #expect(throws: CancellationError.self) {
            try runGraph(text, options: ExecutionOptions(events: events, cancellation: token))
        }
        #expect(steps.load(ordering: .relaxed) <= 7, "cancellation is seen at the next step")
        #expect(!SyntheticState.executed(g).contains("out"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test func cancelledWriteRemovesItsTemporaryFile() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("video.mp4")
        #expect(throws: CancellationError.self) {
            try AtomicFile.write(to: target) { temp in
                #expect(temp.pathExtension == "mp4", "encoders pick the container from the extension")
                #expect(temp.deletingLastPathComponent().path == dir.path)
                try Data("partial".utf8).write(to: temp)
                throw CancellationError()
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
        try AtomicFile.write(Data("done".utf8), to: target)
        #expect(try String(contentsOf: target, encoding: .utf8) == "done")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["video.mp4"])
    }

    @Test func cacheSkipsUnchangedNodesAcrossRuns() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        func chain(_ g: String, b: Int) -> String {
            graph(#"""
                "a": {"type": "TestValue", "params": {"value": 1, "group": "cache"}},
                "b": {"type": "TestAdd", "inputs": {"a": "a"}, "params": {"b": \#(b), "group": "cache"}},
                "c": {"type": "TestAdd", "inputs": {"a": "b"}, "params": {"b": 100, "group": "cache"}},
                "out": {"type": "TestOutput", "inputs": {"value": "c"}, "params": {"group": "\#(g)"}}
                """#)
        }
        // A fresh ResultCache per run, as in separate processes; only the directory is shared.
        func run(b: Int) throws -> (RunSummary, String) {
            let g = uniqueGroup()
            let summary = try runGraph(chain(g, b: b), options: ExecutionOptions(cache: ResultCache(directory: dir)))
            return (summary, g)
        }
        let (first, g1) = try run(b: 2)
        #expect(Set(first.executed) == ["a", "b", "c", "out"])
        #expect(SyntheticState.output(g1) == 103)
        let (second, g2) = try run(b: 2)
        #expect(second.executed == ["out"], "only the saver runs again")
        #expect(Set(second.cached) == ["a", "b", "c"])
        #expect(SyntheticState.output(g2) == 103)
        let (third, g3) = try run(b: 5)
        #expect(Set(third.executed) == ["b", "c", "out"], "changing b re-runs b and its dependents only")
        #expect(third.cached == ["a"])
        #expect(SyntheticState.output(g3) == 106)
        #expect(first.keys["a"] == third.keys["a"] && first.keys["b"] != third.keys["b"])
    }

    @Test func inMemoryCacheSkipsNonPersistableResults() throws {
        let cache = ResultCache()
        let g = uniqueGroup()
        let text = graph(#"""
            "gen": {"type": "TestFrameGenerator", "params": {"count": 3, "group": "\#(g)"}},
            "sink": {"type": "TestFrameSink", "inputs": {"frames": "gen"}, "params": {"group": "\#(g)"}}
            """#)
        let first = try runGraph(text, options: ExecutionOptions(cache: cache))
        let second = try runGraph(text, options: ExecutionOptions(cache: cache))
        #expect(Set(first.executed) == ["gen", "sink"])
        #expect(second.executed == ["sink"] && second.cached == ["gen"])
        #expect(SyntheticState.output(g) == 3)
    }

    @Test func cacheKeyChangesWithInputFile() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("in.txt")
        try Data("abc".utf8).write(to: file)
        let text = graph(#""l": {"type": "TestLoad", "params": {"path": "\#(file.path)"}}, "out": {"type": "TestOutput", "inputs": {"value": "l"}}"#)
        let before = try runGraph(text).keys["l"]
        try Data("abcdef".utf8).write(to: file)
        let after = try runGraph(text).keys["l"]
        #expect(before != after)
    }

    @Test func sha256MatchesKnownVectors() {
        #expect(SHA256.hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(String(repeating: "a", count: 1000)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test func renderersFormatEvents() {
        let lines = Mutex<[String]>([])
        let json = JSONLinesRenderer { text in lines.withLock { $0.append(text) } }
        json.handle(.progress(nodeID: "up", type: "Upscale", step: 3, total: 10, unit: "tile"))
        let line = lines.withLock { $0 }.first ?? ""
        #expect(line.hasPrefix(#"{"event":"progress","node":"up","type":"Upscale","step":3,"total":10,"unit":"tile","time":"#))
        #expect((try? JSONParser.parse(line)) != nil)
        let terminal = Mutex("")
        let renderer = TerminalProgressRenderer { text in terminal.withLock { $0 += text } }
        renderer.handle(.nodeStarted(nodeID: "up", type: "Upscale"))
        renderer.handle(.progress(nodeID: "up", type: "Upscale", step: 1, total: 4, unit: "tile"))
        usleep(120_000)
        renderer.handle(.progress(nodeID: "up", type: "Upscale", step: 2, total: 4, unit: "tile"))
        let drawn = terminal.withLock { $0 }
        #expect(drawn.contains("up (Upscale) tile 2/4"))
        #expect(drawn.contains("tile/s") && drawn.contains("ETA"))
    }
}
