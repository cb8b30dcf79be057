import Foundation
import LapseGraph
import LapseTestSupport
import Synchronization
import Testing

/// Records every event and the run reports handed to a sink.
private final class RecordingSink: RunEventSink {
    private let recorded = Mutex<(events: [RunEvent], reports: [RunReport])>(([], []))
    func handle(_ event: RunEvent) { recorded.withLock { $0.events.append(event) } }
    func runFinished(_ report: RunReport) { recorded.withLock { $0.reports.append(report) } }
    var events: [RunEvent] { recorded.withLock { $0.events } }
    var reports: [RunReport] { recorded.withLock { $0.reports } }

    /// Position of the first event matching `kind` for `node`.
    func index(of kind: String, _ node: String) -> Int? {
        events.firstIndex { event in
            switch event {
            case .nodeStarted(let id, _): kind == "started" && id == node
            case .nodeFinished(let id, _, _, _): kind == "finished" && id == node
            default: false
            }
        }
    }

    func finishedSeconds(_ node: String) -> Double? {
        for case .nodeFinished(let id, _, let seconds, _) in events where id == node { return seconds }
        return nil
    }

    /// (step, total) of the progress events of `node` in `unit`.
    func progress(_ node: String, unit wanted: String) -> [(Int, Int)] {
        events.compactMap { event in
            guard case .progress(let id, _, let step, let total, let unit) = event, id == node, unit == wanted else { return nil }
            return (step, total)
        }
    }
}

private func runStreaming(_ nodes: String, sink: RecordingSink) throws -> RunSummary {
    let registry = StreamingTestNodes.registry()
    let validated = try GraphValidator(registry: registry).validate(data: Data(graph(nodes).utf8), name: "g.json").get()
    return try Executor(registry: registry, options: ExecutionOptions(events: sink)).run(validated)
}

@Suite("Graph progress and run summary")
struct ProgressTests {
    /// gen (20 ms per frame, lazy) → map (10 ms per frame, lazy, "tile 1/1" per frame) → sink (pulls, fast): the
    /// work happens inside the sink's pulls, yet each node is billed its own part.
    @Test func streamingNodesAreBilledTheirOwnTime() throws {
        let g = uniqueGroup()
        let sink = RecordingSink()
        let summary = try runStreaming(#"""
            "gen": {"type": "TestSlowFrames", "params": {"count": 8, "sleep_ms": 20}},
            "map": {"type": "TestTiledMap", "inputs": {"frames": "gen"}, "params": {"sleep_ms": 10}},
            "sink": {"type": "TestFrameSink", "inputs": {"frames": "map"}, "params": {"group": "\#(g)"}}
            """#, sink: sink)
        #expect(SyntheticState.output(g) == 8)
        let report = summary.report
        #expect(report.nodes.map(\.nodeID) == ["gen", "map", "sink"])
        #expect(report.nodes.allSatisfy { $0.status == .done })
        let seconds = Dictionary(uniqueKeysWithValues: report.nodes.map { ($0.nodeID, $0.seconds) })
        // Sleeps are lower bounds; the upper bounds leave room for a loaded machine.
        #expect(seconds["gen"]! >= 0.16 && seconds["gen"]! < 0.16 + 0.3, "\(seconds)")
        #expect(seconds["map"]! >= 0.08 && seconds["map"]! < 0.08 + 0.3, "\(seconds)")
        #expect(seconds["sink"]! < 0.05, "the sink only pulls: \(seconds)")
        #expect(report.wallSeconds >= 0.24)
        #expect(report.nodes.map(\.frames) == [8, 8, 0])
        // nodeFinished carries the same own time, and streaming nodes run until the sink drained them.
        for node in report.nodes { #expect(sink.finishedSeconds(node.nodeID) == node.seconds) }
        #expect(sink.index(of: "finished", "gen")! > sink.index(of: "started", "sink")!)
        #expect(sink.index(of: "finished", "map")! > sink.index(of: "started", "sink")!)
        #expect(sink.index(of: "finished", "gen")! < sink.index(of: "finished", "map")!)
        #expect(sink.index(of: "finished", "map")! < sink.index(of: "finished", "sink")!)
        // Streams that count no frames (gen) or only inner units (map's tiles) get a frame counter from the runtime.
        #expect(sink.progress("gen", unit: "frame").map(\.0) == Array(1...8))
        #expect(sink.progress("gen", unit: "frame").allSatisfy { $0.1 == 8 })
        #expect(sink.progress("map", unit: "frame").map(\.0) == Array(1...8))
        #expect(sink.progress("map", unit: "tile").count == 8)
        // The sink reports frames itself, and nothing is counted twice.
        #expect(sink.progress("sink", unit: "frame").count == 8)
        #expect(sink.reports == [report], "runFinished gets the summary's report, once")
        if let peak = report.peakResidentBytes {
            #expect(report.nodes.allSatisfy { ($0.peakResidentBytes ?? 0) > 0 && $0.peakResidentBytes! <= peak })
        }
    }

    /// Two consumers of one stream each pull it (the producer runs twice); it is done when both are.
    @Test func aStreamWithTwoConsumersIsBilledForBothPasses() throws {
        let (g1, g2) = (uniqueGroup(), uniqueGroup())
        let sink = RecordingSink()
        let summary = try runStreaming(#"""
            "gen": {"type": "TestSlowFrames", "params": {"count": 5, "sleep_ms": 20}},
            "a": {"type": "TestFrameSink", "inputs": {"frames": "gen"}, "params": {"group": "\#(g1)"}},
            "b": {"type": "TestFrameSink", "inputs": {"frames": "gen"}, "params": {"group": "\#(g2)"}}
            """#, sink: sink)
        let gen = summary.report.nodes.first { $0.nodeID == "gen" }!
        #expect(gen.seconds >= 0.2 && gen.frames == 10, "\(gen)")
        #expect(summary.report.nodes.filter { $0.nodeID != "gen" }.allSatisfy { $0.seconds < 0.05 }, "\(summary.report)")
        let genFinished = sink.index(of: "finished", "gen")!
        #expect(genFinished > sink.index(of: "finished", "a")! || genFinished > sink.index(of: "finished", "b")!)
    }

    /// A stream that throws while pulled: the producer is reported failed (no nodeFinished), and the report still
    /// comes, last.
    @Test func aFailingStreamIsReportedFailed() throws {
        let g = uniqueGroup()
        let sink = RecordingSink()
        #expect(throws: NodeExecutionError.self) {
            try runStreaming(#"""
                "gen": {"type": "TestSlowFrames", "params": {"count": 8, "sleep_ms": 1, "fail_at": 3}},
                "sink": {"type": "TestFrameSink", "inputs": {"frames": "gen"}, "params": {"group": "\#(g)"}}
                """#, sink: sink)
        }
        #expect(sink.index(of: "finished", "gen") == nil)
        let report = try #require(sink.reports.first)
        #expect(sink.reports.count == 1)
        #expect(report.nodes.map(\.nodeID) == ["gen", "sink"])
        #expect(report.nodes.allSatisfy { $0.status == .failed })
        #expect(report.nodes[0].frames == 3)
    }

    /// A cancelled run ends the streams it cut short (nodeFinished, status cancelled) and still reports.
    @Test func cancellationEndsOpenStreams() throws {
        let g = uniqueGroup()
        let sink = RecordingSink()
        let token = CancellationToken()
        let registry = StreamingTestNodes.registry()
        let text = graph(#"""
            "gen": {"type": "TestSlowFrames", "params": {"count": 1000, "sleep_ms": 2}},
            "sink": {"type": "TestFrameSink", "inputs": {"frames": "gen"}, "params": {"group": "\#(g)"}}
            """#)
        let validated = try GraphValidator(registry: registry).validate(data: Data(text.utf8), name: "g.json").get()
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) { token.cancel() }
        #expect(throws: CancellationError.self) {
            try Executor(registry: registry, options: ExecutionOptions(events: sink, cancellation: token)).run(validated)
        }
        let report = try #require(sink.reports.first)
        #expect(report.nodes.map(\.status) == [.cancelled, .cancelled])
        #expect(sink.index(of: "finished", "gen") != nil, "a stream cut short stops running with the run")
        #expect(sink.index(of: "finished", "sink") == nil)
    }

    /// Cached nodes are listed as cached, with no time or memory.
    @Test func cachedNodesAreListed() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = ResultCache(directory: dir)
        let g = uniqueGroup()
        let text = graph(#""x": {"type": "TestValue", "params": {"value": 2, "group": "\#(g)"}}, "out": {"type": "TestOutput", "inputs": {"value": "x"}, "params": {"group": "\#(g)"}}"#)
        _ = try runGraph(text, options: ExecutionOptions(cache: cache))
        let second = try runGraph(text, options: ExecutionOptions(cache: cache)).report
        #expect(second.nodes.map(\.nodeID) == ["x", "out"])
        #expect(second.nodes[0] == NodeRunReport(nodeID: "x", type: "TestValue", status: .cached, seconds: 0, peakResidentBytes: nil, frames: 0))
        #expect(second.nodes[1].status == .done)
    }

    /// The peak of a node holding memory includes that memory, sampled while it ran.
    @Test func peakMemoryIsSampledWhileANodeRuns() throws {
        guard let before = ProcessMemory.current() else { return }  // not Linux: nothing to sample
        #expect(before.residentBytes > 0 && before.residentBytes <= before.peakResidentBytes)
        let g = uniqueGroup()
        let summary = try runStreaming(#"""
            "hold": {"type": "TestHoldMemory", "params": {"mib": 96, "hold_ms": 350}},
            "out": {"type": "TestOutput", "inputs": {"value": "hold"}, "params": {"group": "\#(g)"}}
            """#, sink: RecordingSink())
        let hold = summary.report.nodes.first { $0.nodeID == "hold" }!
        #expect(try #require(hold.peakResidentBytes) >= 96 << 20)
        #expect(try #require(summary.report.peakResidentBytes) >= hold.peakResidentBytes!)
    }

    @Test func processMemoryParsesProcStatus() {
        let text = "Name:\tlapse\nVmPeak:\t  999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t3\n"
        #expect(ProcessMemory(status: text) == ProcessMemory(residentBytes: 1024 * 1024, peakResidentBytes: 2048 * 1024))
        #expect(ProcessMemory(status: "Name:\tx\nVmRSS:\t12 kB\n") == nil)
    }

    /// A node's progress lines are throttled, its last one is printed before it finishes, and a stream's frame
    /// counter leads its inner count instead of a "tile 1/1" line per frame.
    @Test func plainProgressIsThrottledAndShowsTheFrameCounter() {
        let lines = Mutex<[String]>([])
        let renderer = PlainLogRenderer(minimumInterval: 60) { text in lines.withLock { $0.append(text) } }
        renderer.handle(.nodeStarted(nodeID: "up", type: "Upscale"))
        for frame in 1...50 {
            renderer.handle(.progress(nodeID: "up", type: "Upscale", step: 1, total: 1, unit: "tile"))
            renderer.handle(.progress(nodeID: "up", type: "Upscale", step: frame, total: 50, unit: "frame"))
        }
        renderer.handle(.nodeFinished(nodeID: "up", type: "Upscale", seconds: 1.5, cached: false))
        renderer.handle(.nodeStarted(nodeID: "s", type: "Save"))
        renderer.handle(.progress(nodeID: "s", type: "Save", step: 1, total: 1, unit: "frame"))
        renderer.handle(.nodeFinished(nodeID: "s", type: "Save", seconds: 0.25, cached: false))
        #expect(lines.withLock { $0 } == [
            "up (Upscale): started\n",
            "up (Upscale): tile 1/1\n",
            "up (Upscale): frame 50/50, tile 1/1\n",
            "up (Upscale): done in 1.50 s\n",
            "s (Save): started\n",
            "s (Save): frame 1/1\n",
            "s (Save): done in 0.25 s\n",
        ])
    }

    /// With a short interval, lines come at most once per interval per node.
    @Test func plainProgressRateIsBounded() throws {
        let lines = Mutex<[String]>([])
        let renderer = PlainLogRenderer(minimumInterval: 0.05) { text in lines.withLock { $0.append(text) } }
        let started = Date()
        renderer.handle(.nodeStarted(nodeID: "n", type: "T"))
        for step in 1...400 {
            renderer.handle(.progress(nodeID: "n", type: "T", step: step, total: 400, unit: "step"))
            usleep(1000)
        }
        let elapsed = Date().timeIntervalSince(started)
        renderer.handle(.nodeFinished(nodeID: "n", type: "T", seconds: elapsed, cached: false))
        let progress = lines.withLock { $0 }.filter { $0.contains(": step ") }
        #expect(progress.count <= Int(elapsed / 0.05) + 2, "\(progress.count) lines in \(elapsed) s")
        #expect(progress.count >= 2)
        #expect(progress.last == "n (T): step 400/400\n")
    }

    @Test func terminalLineShowsTheFrameCounterFirst() {
        let drawn = Mutex("")
        let renderer = TerminalProgressRenderer { text in drawn.withLock { $0 += text } }
        renderer.handle(.nodeStarted(nodeID: "up", type: "Upscale"))
        renderer.handle(.progress(nodeID: "up", type: "Upscale", step: 1, total: 4, unit: "tile"))
        renderer.handle(.progress(nodeID: "up", type: "Upscale", step: 1, total: 10, unit: "frame"))
        usleep(120_000)
        renderer.handle(.progress(nodeID: "up", type: "Upscale", step: 2, total: 10, unit: "frame"))
        let text = drawn.withLock { $0 }
        #expect(text.contains("up (Upscale) frame 2/10 "), "\(text)")
        #expect(text.contains("frame/s ETA") && text.hasSuffix(", tile 1/4"), "\(text)")
        renderer.runFinished(RunReport(nodes: [], wallSeconds: 1, peakResidentBytes: nil))
        #expect(drawn.withLock { $0 }.hasSuffix("\r\u{1B}[Ksummary: 1.00 s wall\n"))
    }

    @Test func summaryTextAndJSON() throws {
        let report = RunReport(nodes: [
            NodeRunReport(nodeID: "src", type: "LoadVideo", status: .done, seconds: 0.25, peakResidentBytes: 128 << 20, frames: 24),
            NodeRunReport(nodeID: "model", type: "LoadUpscaleModel", status: .cached, seconds: 0, peakResidentBytes: nil, frames: 0),
            NodeRunReport(nodeID: "up", type: "Upscale", status: .failed, seconds: 12.5, peakResidentBytes: 3 << 30, frames: 7),
        ], wallSeconds: 13.25, peakResidentBytes: 3 << 30)
        #expect(report.text == """
            summary: 13.25 s wall, peak RSS 3.00 GiB
              node   type              own time   peak RSS  frames
              src    LoadVideo           0.25 s  128.0 MiB      24
              model  LoadUpscaleModel    cached          -       -
              up     Upscale            12.50 s   3.00 GiB       7  failed

            """)
        let lines = Mutex<[String]>([])
        JSONLinesRenderer { text in lines.withLock { $0.append(text) } }.runFinished(report)
        let line = try #require(lines.withLock { $0 }.first)
        #expect(line.hasPrefix(#"{"event":"summary","seconds":13.250000,"peakRSSBytes":3221225472,"nodes":[{"node":"src","type":"LoadVideo","status":"done","seconds":0.250000,"cached":false,"peakRSSBytes":134217728,"frames":24},{"node":"model","type":"LoadUpscaleModel","status":"cached","seconds":0.000000,"cached":true,"peakRSSBytes":null,"frames":0},"#))
        let parsed = try JSONParser.parse(line)
        guard case .string("summary")? = parsed["event"]?.kind else { Issue.record("not a summary: \(line)"); return }
        guard case .array(let nodes)? = parsed["nodes"]?.kind else { Issue.record("no nodes array"); return }
        #expect(nodes.count == 3)
    }

    /// A graph of many nodes lists its slowest in the text and sums up the rest; JSON keeps every node.
    @Test func longSummariesListTheSlowestNodes() {
        let nodes = (0..<100).map {
            NodeRunReport(nodeID: "n\($0)", type: "T", status: .done, seconds: Double($0) / 100, peakResidentBytes: nil, frames: 0)
        }
        let lines = RunReport(nodes: nodes, wallSeconds: 50, peakResidentBytes: nil).text.split(separator: "\n")
        #expect(lines.count == 2 + RunReport.textRowLimit + 1)
        #expect(lines[2].hasPrefix("  n60 ") && lines[lines.count - 2].hasPrefix("  n99 "))
        #expect(lines.last == "  … and 60 faster nodes, 17.70 s together")
    }
}
