import Foundation
import Synchronization

// Who did the work in a run, and how much memory the process held meanwhile.
//
// A streaming node's `run` returns a lazy `Frames` at once; its frames are computed later, inside whichever consumer
// pulls them. Timing `run` alone would bill that work to the consumer (a saver "taking" seven seconds to write a
// video whose upscaler "took" none), so the executor meters every stream it hands downstream: time spent in a
// stream's `makeSource()` and `next()` is moved from the consumer pulling it to the node that produced it. Nested
// streams bill each level to its own node, because every link is metered separately: SaveVideo pulling Upscale pays
// Upscale for the whole pull, and Upscale pulling LoadVideo inside that pull pays LoadVideo its part.

/// The resident memory of this process as Linux reports it in `/proc/self/status`.
public struct ProcessMemory: Sendable, Equatable {
    /// Resident set size now (`VmRSS`), in bytes.
    public var residentBytes: Int
    /// Highest resident set size since the process started (`VmHWM`), in bytes.
    public var peakResidentBytes: Int

    public init(residentBytes: Int, peakResidentBytes: Int) {
        self.residentBytes = residentBytes
        self.peakResidentBytes = peakResidentBytes
    }

    /// The current figures, or nil where `/proc/self/status` cannot be read (not Linux). One `read(2)` of a small
    /// file and no allocation beyond the buffer, so sampling it a few times a second costs nothing measurable.
    public static func current() -> ProcessMemory? {
        let fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 8192) { buffer -> ProcessMemory? in
            var length = 0
            while length < buffer.count {
                let n = read(fd, buffer.baseAddress! + length, buffer.count - length)
                if n < 0, errno == EINTR { continue }
                if n <= 0 { break }
                length += n
            }
            return parse(UnsafeBufferPointer(rebasing: buffer[..<length]))
        }
    }

    /// The figures in the text of a `/proc/PID/status` file, or nil when it lacks `VmRSS` or `VmHWM`.
    public init?(status text: String) {
        var text = text
        guard let memory = text.withUTF8({ Self.parse($0) }) else { return nil }
        self = memory
    }

    /// Reads `VmRSS:` and `VmHWM:` (kB) from the text of a `/proc/PID/status` file.
    static func parse(_ text: UnsafeBufferPointer<UInt8>) -> ProcessMemory? {
        var rss: Int?, hwm: Int?
        var lineStart = 0
        while lineStart < text.count, rss == nil || hwm == nil {
            var lineEnd = lineStart
            while lineEnd < text.count, text[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            let line = UnsafeBufferPointer(rebasing: text[lineStart..<lineEnd])
            if let value = kilobytes(line, key: "VmRSS:") { rss = value }
            if let value = kilobytes(line, key: "VmHWM:") { hwm = value }
            lineStart = lineEnd + 1
        }
        guard let rss, let hwm else { return nil }
        return ProcessMemory(residentBytes: rss * 1024, peakResidentBytes: hwm * 1024)
    }

    private static func kilobytes(_ line: UnsafeBufferPointer<UInt8>, key: StaticString) -> Int? {
        let keyLength = key.utf8CodeUnitCount
        guard line.count > keyLength, memcmp(line.baseAddress!, key.utf8Start, keyLength) == 0 else { return nil }
        var value = 0, digits = 0
        for byte in line[keyLength...] {
            if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
                digits += 1
            } else if digits > 0 {
                break
            }
        }
        return digits > 0 ? value : nil
    }
}

/// Nanoseconds of `CLOCK_MONOTONIC`: immune to wall-clock changes, and cheap enough to read twice per frame per link.
enum MonotonicClock {
    static func nanoseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return now.tv_sec * 1_000_000_000 + now.tv_nsec
    }
}

/// One node's stream counters, updated lock-free from whichever thread pulls its frames.
final class NodeMeter: Sendable {
    let nodeID: String
    let nodeType: String
    /// Time consumers spent inside this node's streams (`makeSource()` and `next()`), ns.
    let produced = Atomic<Int>(0)
    /// Time this node spent inside upstream streams it pulled, ns; already counted as theirs.
    let pulled = Atomic<Int>(0)
    /// Frames its streams delivered, over every consumer and pass.
    let frames = Atomic<Int>(0)
    /// Set once the node reports progress in `frame`s itself; until then the executor counts its frames for it.
    let reportsFrames = Atomic<Bool>(false)

    init(nodeID: String, nodeType: String) {
        self.nodeID = nodeID
        self.nodeType = nodeType
    }

    /// Moves `nanoseconds` spent by `consumer` inside this node's stream onto this node's account.
    func bill(_ nanoseconds: Int, pulledBy consumer: NodeMeter) {
        produced.add(nanoseconds, ordering: .relaxed)
        consumer.pulled.add(nanoseconds, ordering: .relaxed)
    }
}

/// Frame streams that bill the time spent producing them to their producer and count its frames.
enum MeteredFrames {
    /// `value` as handed from `producer` to `consumer`: a `Frames` becomes a metered stream, anything else passes.
    static func wrap(_ value: Value, producer: NodeMeter, consumer: NodeMeter, events: any RunEventSink) -> Value {
        guard case .object(let object) = value, let frames = object as? Frames else { return value }
        let total = frames.info.frameCount ?? 0
        return .object(Frames(info: frames.info) {
            let started = MonotonicClock.nanoseconds()
            defer { producer.bill(MonotonicClock.nanoseconds() - started, pulledBy: consumer) }
            return Source(try frames.makeSource(), producer: producer, consumer: consumer, total: total, events: events)
        })
    }

    final class Source: FrameSource {
        private let upstream: any FrameSource
        private let producer: NodeMeter
        private let consumer: NodeMeter
        private let total: Int
        private let events: any RunEventSink
        private var delivered = 0

        init(_ upstream: any FrameSource, producer: NodeMeter, consumer: NodeMeter, total: Int, events: any RunEventSink) {
            self.upstream = upstream
            self.producer = producer
            self.consumer = consumer
            self.total = total
            self.events = events
        }

        func next() throws -> Frame? {
            let started = MonotonicClock.nanoseconds()
            let frame: Frame?
            do {
                defer { producer.bill(MonotonicClock.nanoseconds() - started, pulledBy: consumer) }
                frame = try upstream.next()
            }
            guard let frame else { return nil }
            delivered += 1
            producer.frames.add(1, ordering: .relaxed)
            // A stream whose node counts nothing, or only inner units (tiles, steps), still gets a frame counter.
            if !producer.reportsFrames.load(ordering: .relaxed) {
                events.handle(.progress(nodeID: producer.nodeID, type: producer.nodeType, step: delivered, total: total, unit: "frame"))
            }
            return frame
        }
    }
}

/// The bookkeeping of one run: which nodes are running, their own time and the peak memory seen while each ran;
/// emits `nodeFinished` when a node is done, which for a node with a stream output is when every node that may
/// still pull it is done (or the run ends).
final class RunLedger: @unchecked Sendable {
    private enum Phase { case waiting, running, returned, closed, failed }

    private struct Entry {
        var phase = Phase.waiting
        /// Whether its outputs hold a lazy stream, which keeps it running after `run` returned.
        var holdsStream = false
        var cached = false
        /// Required nodes that take its outputs and are not closed yet.
        var openDependents: Int
        var runNanoseconds = 0
        var memoryAtStart: ProcessMemory?
        var peakResidentBytes = 0
    }

    private struct State {
        var entries: [String: Entry]
        /// Nodes whose peak the sampler keeps up to date.
        var open: Set<String> = []
        var reports: [String: NodeRunReport] = [:]
        var runPeakResidentBytes = 0
        var lastMemory: (sample: ProcessMemory, at: Int)?
        var finished = false
    }

    /// Memory samples younger than this are reused, so a long chain of tiny nodes does not read `/proc` per node.
    private static let memoryReuseNanoseconds = 5_000_000
    /// How often a background timer samples memory while nodes run.
    private static let samplingInterval = DispatchTimeInterval.milliseconds(100)

    private let meters: [String: NodeMeter]
    private let upstream: [String: [String]]
    private let orderIndex: [String: Int]
    private let events: any RunEventSink
    private let state: Mutex<State>
    private let startNanoseconds = MonotonicClock.nanoseconds()
    private let memoryAtStart: ProcessMemory?
    /// Samples memory in the background while the run goes on; nil where memory cannot be read.
    private let sampler: (any DispatchSourceTimer)?

    /// A ledger for the nodes of `order` (dependency order); `dependents` maps each node to the required nodes
    /// linked to it.
    init(graph: ValidatedGraph, order: [String], dependents: [String: [String]], events: any RunEventSink) {
        var meters: [String: NodeMeter] = [:]
        var upstream: [String: [String]] = [:]
        var orderIndex: [String: Int] = [:]
        var entries: [String: Entry] = [:]
        for (index, id) in order.enumerated() {
            meters[id] = NodeMeter(nodeID: id, nodeType: graph.nodes[id]!.type)
            orderIndex[id] = index
            entries[id] = Entry(openDependents: dependents[id]?.count ?? 0)
            for d in dependents[id] ?? [] { upstream[d, default: []].append(id) }
        }
        self.meters = meters
        self.upstream = upstream
        self.orderIndex = orderIndex
        self.events = events
        let memory = ProcessMemory.current()
        memoryAtStart = memory
        var initial = State(entries: entries)
        if let memory {
            initial.lastMemory = (memory, startNanoseconds)
            initial.runPeakResidentBytes = memory.residentBytes
        }
        state = Mutex(initial)
        if memory != nil {
            let timer = DispatchSource.makeTimerSource(queue: .global(qos: .utility))
            timer.schedule(deadline: .now() + Self.samplingInterval, repeating: Self.samplingInterval,
                           leeway: .milliseconds(20))
            sampler = timer
            timer.setEventHandler { [weak self] in self?.sample() }
            timer.resume()
        } else {
            sampler = nil
        }
    }

    deinit { sampler?.cancel() }

    /// The meter of a required node.
    func meter(_ id: String) -> NodeMeter { meters[id]! }

    /// `value` from `producer`'s outputs as `consumer` receives it (streams metered).
    func handOver(_ value: Value, from producer: String, to consumer: String) -> Value {
        guard let from = meters[producer], let to = meters[consumer] else { return value }
        return MeteredFrames.wrap(value, producer: from, consumer: to, events: events)
    }

    /// The node's `run` is about to be called.
    func started(_ id: String) {
        let memory = recentMemory()
        state.withLock { state in
            state.entries[id]!.phase = .running
            state.entries[id]!.memoryAtStart = memory
            state.entries[id]!.peakResidentBytes = memory?.residentBytes ?? 0
            state.open.insert(id)
        }
    }

    /// The node's `run` returned or threw after `nanoseconds`.
    func ran(_ id: String, nanoseconds: Int) {
        state.withLock { $0.entries[id]!.runNanoseconds = nanoseconds }
    }

    /// The node's outputs are ready (computed, or `cached`). It is done now unless they hold a stream that a node
    /// not yet done may still pull; being done may in turn finish the streaming nodes upstream of it.
    func returned(_ id: String, outputs: NodeOutputs, cached: Bool) {
        let holdsStream = !cached && outputs.values.values.contains {
            if case .object(let object) = $0 { object is Frames } else { false }
        }
        let memory = recentMemory()
        let closed = state.withLock { state -> [(String, NodeRunReport)] in
            state.entries[id]!.phase = .returned
            state.entries[id]!.cached = cached
            state.entries[id]!.holdsStream = holdsStream
            guard !holdsStream || state.entries[id]!.openDependents == 0 else { return [] }
            var closed: [(String, NodeRunReport)] = []
            var pending = [id]
            while let next = pending.popLast() {
                closed.append((next, close(next, status: cached && next == id ? .cached : .done, memory: memory, in: &state)))
                for u in upstream[next] ?? [] {
                    state.entries[u]!.openDependents -= 1
                    let entry = state.entries[u]!
                    if entry.phase == .returned, entry.openDependents == 0 { pending.append(u) }
                }
            }
            return closed
        }
        emitFinished(closed)
    }

    /// The node did not produce its outputs (an error, a cancellation, or no thread to run it).
    func failed(_ id: String, error: any Error) {
        let memory = recentMemory()
        state.withLock { state in
            let report = close(id, status: error is CancellationError ? .cancelled : .failed, memory: memory, in: &state)
            state.entries[id]!.phase = .failed
            state.reports[id] = report
        }
    }

    /// Ends the run: streaming nodes still open are done now (except one the run's `failure` names, which failed),
    /// sampling stops, and the report lists every node that ran or came from the cache, in dependency order.
    func finish(failure: (any Error)?) -> RunReport {
        sampler?.cancel()
        let memory = ProcessMemory.current()
        let blamed = (failure as? NodeExecutionError)?.nodeID
        let (closed, report) = state.withLock { state -> ([(String, NodeRunReport)], RunReport) in
            state.finished = true
            var closed: [(String, NodeRunReport)] = []
            for (id, entry) in state.entries where entry.phase == .returned {
                if id == blamed {
                    state.reports[id] = close(id, status: .failed, memory: memory, in: &state)
                    state.entries[id]!.phase = .failed
                } else {
                    // Cut short by another node's failure or a cancellation: it stops running with the run.
                    closed.append((id, close(id, status: failure == nil ? .done : .cancelled, memory: memory, in: &state)))
                }
            }
            if let memory { observe(memory, in: &state, runStart: memoryAtStart) }
            let nodes = state.reports.values.sorted { orderIndex[$0.nodeID]! < orderIndex[$1.nodeID]! }
            let wall = Double(MonotonicClock.nanoseconds() - startNanoseconds) / 1e9
            return (closed, RunReport(nodes: nodes, wallSeconds: wall,
                                      peakResidentBytes: memoryAtStart == nil ? nil : state.runPeakResidentBytes))
        }
        emitFinished(closed)
        return report
    }

    /// Marks a node done: its own time is its `run` plus what consumers spent in its streams, minus what it spent
    /// in upstream streams; its peak is the highest sample while it ran, or the process's high-water mark when
    /// that rose meanwhile (a spike between samples still counts).
    private func close(_ id: String, status: NodeRunStatus, memory: ProcessMemory?, in state: inout State) -> NodeRunReport {
        var entry = state.entries[id]!
        entry.phase = .closed
        state.open.remove(id)
        let meter = meters[id]!
        let own = entry.runNanoseconds + meter.produced.load(ordering: .relaxed) - meter.pulled.load(ordering: .relaxed)
        var peak: Int?
        if let start = entry.memoryAtStart {
            var bytes = entry.peakResidentBytes
            if let memory {
                bytes = max(bytes, memory.residentBytes)
                if memory.peakResidentBytes > start.peakResidentBytes { bytes = max(bytes, memory.peakResidentBytes) }
                observe(memory, in: &state, runStart: memoryAtStart)
            }
            peak = bytes
        }
        state.entries[id] = entry
        let report = NodeRunReport(nodeID: id, type: meter.nodeType, status: status,
                                   seconds: status == .cached ? 0 : Double(max(0, own)) / 1e9,
                                   peakResidentBytes: status == .cached ? nil : peak,
                                   frames: meter.frames.load(ordering: .relaxed))
        state.reports[id] = report
        return report
    }

    private func emitFinished(_ closed: [(String, NodeRunReport)]) {
        // Upstream first: a chain of streams finishes together, and reads best in the order its nodes started.
        for (id, report) in closed.sorted(by: { orderIndex[$0.0]! < orderIndex[$1.0]! }) {
            events.handle(.nodeFinished(nodeID: id, type: report.type, seconds: report.seconds, cached: report.status == .cached))
        }
    }

    /// The last memory sample if it is a few milliseconds old, else a fresh one.
    private func recentMemory() -> ProcessMemory? {
        guard memoryAtStart != nil else { return nil }
        let now = MonotonicClock.nanoseconds()
        if let last = state.withLock({ $0.lastMemory }), now - last.at < Self.memoryReuseNanoseconds { return last.sample }
        guard let memory = ProcessMemory.current() else { return nil }
        state.withLock { observe(memory, in: &$0, runStart: memoryAtStart) }
        return memory
    }

    /// The sampler's tick: raises the peak of every running node.
    private func sample() {
        guard let memory = ProcessMemory.current() else { return }
        state.withLock { state in
            guard !state.finished else { return }
            observe(memory, in: &state, runStart: memoryAtStart)
        }
    }

    private func observe(_ memory: ProcessMemory, in state: inout State, runStart: ProcessMemory?) {
        state.lastMemory = (memory, MonotonicClock.nanoseconds())
        state.runPeakResidentBytes = max(state.runPeakResidentBytes, memory.residentBytes)
        if let runStart, memory.peakResidentBytes > runStart.peakResidentBytes {
            state.runPeakResidentBytes = max(state.runPeakResidentBytes, memory.peakResidentBytes)
        }
        for id in state.open {
            state.entries[id]!.peakResidentBytes = max(state.entries[id]!.peakResidentBytes, memory.residentBytes)
        }
    }
}
