import Foundation
import Synchronization

/// Something that happened while a graph ran; renderers turn these into terminal lines, log lines or JSON.
public enum RunEvent: Sendable {
    case nodeStarted(nodeID: String, type: String)
    /// `step` of `total` (0 when unknown) units of work done.
    case progress(nodeID: String, type: String, step: Int, total: Int, unit: String)
    /// The node finished in `seconds`; `cached` when its result came from the cache and it did not run.
    case nodeFinished(nodeID: String, type: String, seconds: Double, cached: Bool)
    case log(nodeID: String?, message: String)
    case error(nodeID: String?, message: String)
}

extension RunEvent {
    /// The event with every text field made safe for a terminal (`TerminalText.escaped`): node ids, types, units and
    /// messages come from graph files, file names and checkpoints, which may hold escape sequences.
    public var escapedForTerminal: RunEvent {
        let e = { (text: String) in TerminalText.escaped(text, keepingNewlines: true) }
        switch self {
        case .nodeStarted(let id, let type): return .nodeStarted(nodeID: e(id), type: e(type))
        case .progress(let id, let type, let step, let total, let unit):
            return .progress(nodeID: e(id), type: e(type), step: step, total: total, unit: e(unit))
        case .nodeFinished(let id, let type, let seconds, let cached):
            return .nodeFinished(nodeID: e(id), type: e(type), seconds: seconds, cached: cached)
        case .log(let id, let message): return .log(nodeID: id.map(e), message: e(message))
        case .error(let id, let message): return .error(nodeID: id.map(e), message: e(message))
        }
    }
}

/// Receives run events; called from worker threads, so implementations synchronise themselves.
public protocol RunEventSink: Sendable {
    func handle(_ event: RunEvent)
    /// Called once when a run ends (succeeded, failed or cancelled), after its last node event, with each node's
    /// own time and peak memory. The default ignores it.
    func runFinished(_ report: RunReport)
}

extension RunEventSink {
    public func runFinished(_ report: RunReport) {}
}

/// How a node's part in a run ended.
public enum NodeRunStatus: String, Sendable {
    /// It ran, and so did everything that pulled its streams.
    case done
    /// Its result came from the cache; it did not run.
    case cached
    /// It threw, or a stream it produced threw in the node pulling it.
    case failed
    /// The run was cancelled, or failed elsewhere, while it ran or while its stream was still being pulled.
    case cancelled
}

/// One node's line of a run's summary.
public struct NodeRunReport: Sendable, Equatable {
    public var nodeID: String
    public var type: String
    public var status: NodeRunStatus
    /// The node's own seconds: its `run`, plus the time consumers spent inside its streams, minus the time it spent
    /// inside upstream streams (billed to them). A streaming node's frames are its work, not its consumer's.
    public var seconds: Double
    /// The process's highest resident memory seen while the node was running (from `run` until its streams were
    /// drained), in bytes; nil when unknown (not Linux) or for a cached node.
    public var peakResidentBytes: Int?
    /// Frames its streams delivered to the nodes pulling them, over every consumer (0 without a stream output).
    public var frames: Int

    public init(nodeID: String, type: String, status: NodeRunStatus, seconds: Double, peakResidentBytes: Int?, frames: Int) {
        self.nodeID = nodeID
        self.type = type
        self.status = status
        self.seconds = seconds
        self.peakResidentBytes = peakResidentBytes
        self.frames = frames
    }
}

/// What a run cost: per node and in total. `lapse run` prints it at the end (a `summary` event with `--events json`).
public struct RunReport: Sendable, Equatable {
    /// Every node that ran or came from the cache, in dependency order.
    public var nodes: [NodeRunReport]
    /// Seconds from the start of the run to its end.
    public var wallSeconds: Double
    /// The process's highest resident memory during the run, in bytes; nil when unknown (not Linux).
    public var peakResidentBytes: Int?

    public init(nodes: [NodeRunReport], wallSeconds: Double, peakResidentBytes: Int?) {
        self.nodes = nodes
        self.wallSeconds = wallSeconds
        self.peakResidentBytes = peakResidentBytes
    }

    /// Rows of `text` at most: a graph of thousands of nodes lists its slowest ones and sums up the rest.
    public static let textRowLimit = 40

    /// The summary as aligned text lines for people, node ids and types escaped for a terminal.
    public var text: String {
        var text = String(format: "summary: %.2f s wall", wallSeconds)
        if let peak = peakResidentBytes { text += ", peak RSS " + Self.bytes(peak) }
        text += "\n"
        guard !nodes.isEmpty else { return text }
        var shown = nodes
        var rest = ""
        if nodes.count > Self.textRowLimit {
            let slowest = Set(nodes.indices.sorted { nodes[$0].seconds > nodes[$1].seconds }.prefix(Self.textRowLimit))
            shown = nodes.indices.filter(slowest.contains).map { nodes[$0] }
            let others = nodes.indices.filter { !slowest.contains($0) }
            rest = String(format: "  … and %d faster nodes, %.2f s together\n", others.count,
                          others.reduce(0) { $0 + nodes[$1].seconds })
        }
        let header = ["node", "type", "own time", "peak RSS", "frames", ""]
        var rows = shown.map { node -> [String] in
            [TerminalText.escaped(node.nodeID), TerminalText.escaped(node.type),
             node.status == .cached ? "cached" : String(format: "%.2f s", node.seconds),
             node.peakResidentBytes.map(Self.bytes) ?? "-",
             node.frames > 0 ? String(node.frames) : "-",
             node.status == .done || node.status == .cached ? "" : node.status.rawValue]
        }
        rows.insert(header, at: 0)
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        // Names left-aligned, figures right-aligned, the status note (failed, cancelled) last.
        for row in rows {
            var line = "  "
            for (column, cell) in row.enumerated() {
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                line += column < 2 ? cell + pad + "  " : (column < 5 ? pad + cell + "  " : cell)
            }
            while line.last == " " { line.removeLast() }
            text += line + "\n"
        }
        return text + rest
    }

    /// `bytes` as MiB below 1 GiB, GiB above.
    static func bytes(_ bytes: Int) -> String {
        bytes < 1 << 30 ? String(format: "%.1f MiB", Double(bytes) / 1_048_576)
            : String(format: "%.2f GiB", Double(bytes) / 1_073_741_824)
    }
}

/// A sink that drops every event (`--quiet`).
public struct QuietRenderer: RunEventSink {
    public init() {}
    public func handle(_ event: RunEvent) {}
}

/// Calls a closure for each event; handy in tests.
public struct ClosureEventSink: RunEventSink {
    private let body: @Sendable (RunEvent) -> Void
    public init(_ body: @escaping @Sendable (RunEvent) -> Void) { self.body = body }
    public func handle(_ event: RunEvent) { body(event) }
}

/// One JSON object per line per event (`--events json`), for programs driving `lapse`.
public final class JSONLinesRenderer: RunEventSink {
    private let write: @Sendable (String) -> Void
    private let start = Date()
    private let lock = Mutex(())

    public init(write: @escaping @Sendable (String) -> Void) { self.write = write }

    public func handle(_ event: RunEvent) {
        var fields: [(String, String)] = []
        func s(_ key: String, _ value: String) { fields.append((key, JSONValue.quote(value))) }
        func n(_ key: String, _ value: String) { fields.append((key, value)) }
        switch event {
        case .nodeStarted(let id, let type): s("event", "nodeStarted"); s("node", id); s("type", type)
        case .progress(let id, let type, let step, let total, let unit):
            s("event", "progress"); s("node", id); s("type", type); n("step", String(step)); n("total", String(total)); s("unit", unit)
        case .nodeFinished(let id, let type, let seconds, let cached):
            s("event", "nodeFinished"); s("node", id); s("type", type); n("seconds", String(format: "%.6f", seconds)); n("cached", String(cached))
        case .log(let id, let message): s("event", "log"); if let id { s("node", id) }; s("message", message)
        case .error(let id, let message): s("event", "error"); if let id { s("node", id) }; s("message", message)
        }
        emit(fields)
    }

    /// The closing `{"event":"summary",…}` line: the run's wall `seconds` and `peakRSSBytes`, and per node its
    /// own `seconds`, `status`, `cached`, `peakRSSBytes` and `frames` (`null` where memory is unknown).
    public func runFinished(_ report: RunReport) {
        let nodes = report.nodes.map { node in
            Self.object([
                ("node", JSONValue.quote(node.nodeID)), ("type", JSONValue.quote(node.type)),
                ("status", JSONValue.quote(node.status.rawValue)), ("seconds", String(format: "%.6f", node.seconds)),
                ("cached", String(node.status == .cached)), ("peakRSSBytes", node.peakResidentBytes.map(String.init) ?? "null"),
                ("frames", String(node.frames)),
            ])
        }
        emit([("event", JSONValue.quote("summary")), ("seconds", String(format: "%.6f", report.wallSeconds)),
              ("peakRSSBytes", report.peakResidentBytes.map(String.init) ?? "null"),
              ("nodes", JSONValue.arrayText(nodes))])
    }

    /// Writes one line: `fields` (values already JSON) and the seconds since the renderer was made.
    private func emit(_ fields: [(String, String)]) {
        let line = Self.object(fields + [("time", String(format: "%.6f", Date().timeIntervalSince(start)))]) + "\n"
        lock.withLock { _ in write(line) }
    }

    private static func object(_ fields: [(String, String)]) -> String {
        JSONValue.objectText(fields.map { (key: $0.0, text: $0.1) })
    }
}

/// The latest count of each unit a node reports, as one progress line shows them: a stream's `frame` counter first
/// (the outer loop), then inner units (`tile`, `step`) in the order they first came. A node that upscales each frame
/// in tiles thus reads "frame 12/48, tile 3/4" instead of a "tile 1/1" line per frame.
struct UnitCounters {
    struct Count {
        var unit: String
        var step: Int
        var total: Int
        var text: String { "\(unit) \(step)" + (total > 0 ? "/\(total)" : "") }
    }

    private(set) var counts: [Count] = []

    mutating func update(unit: String, step: Int, total: Int) {
        let count = Count(unit: unit, step: step, total: total)
        if let index = counts.firstIndex(where: { $0.unit == unit }) {
            counts[index] = count
        } else if unit == "frame" {
            counts.insert(count, at: 0)
        } else {
            counts.append(count)
        }
    }

    /// The outer count, which rates and ETAs are computed on.
    var primary: Count? { counts.first }
    var text: String { counts.map(\.text).joined(separator: ", ") }
}

/// Plain log lines for pipes and files: node start and finish, and per node at most one progress line per
/// `minimumInterval` (its last one is printed before it finishes), then the run's summary.
public final class PlainLogRenderer: RunEventSink {
    private struct Line {
        var type: String
        var counters = UnitCounters()
        var lastPrinted: Date?
        /// Progress came since the last printed line.
        var pending = false
    }

    private let write: @Sendable (String) -> Void
    private let minimumInterval: TimeInterval
    private let lines = Mutex<[String: Line]>([:])

    /// A renderer writing through `write`; `minimumInterval` seconds at least between two progress lines of a node.
    public init(minimumInterval: TimeInterval = 1, write: @escaping @Sendable (String) -> Void) {
        self.minimumInterval = minimumInterval
        self.write = write
    }

    public func handle(_ event: RunEvent) {
        // Written under the lock, so a node's last progress line always comes before its "done" line.
        lines.withLock { lines in
            switch event.escapedForTerminal {
            case .nodeStarted(let id, let type): write("\(id) (\(type)): started\n")
            case .progress(let id, let type, let step, let total, let unit):
                let now = Date()
                var line = lines[id] ?? Line(type: type)
                line.counters.update(unit: unit, step: step, total: total)
                if let last = line.lastPrinted, now.timeIntervalSince(last) < minimumInterval {
                    line.pending = true
                } else {
                    write("\(id) (\(type)): \(line.counters.text)\n")
                    line.lastPrinted = now
                    line.pending = false
                }
                lines[id] = line
            case .nodeFinished(let id, let type, let seconds, let cached):
                if let line = lines.removeValue(forKey: id), line.pending { write("\(id) (\(type)): \(line.counters.text)\n") }
                write("\(id) (\(type)): " + (cached ? "cached\n" : String(format: "done in %.2f s\n", seconds)))
            case .log(let id, let message): write((id.map { "\($0): " } ?? "") + message + "\n")
            case .error(let id, let message): write("error: " + (id.map { "\($0): " } ?? "") + message + "\n")
            }
        }
    }

    /// Prints the run's summary table.
    public func runFinished(_ report: RunReport) {
        lines.withLock { _ in write(report.text) }
    }
}

/// A single redrawn status line for terminals: node id, counts, rate and ETA; finished nodes and the run's summary
/// scroll above it. Redrawn at most ten times a second.
public final class TerminalProgressRenderer: RunEventSink {
    private struct Track {
        var type: String
        var started: Date
        var counters = UnitCounters()
        /// Where the rate of the primary count is measured from.
        var rateUnit: String?
        var firstStepAt: Date?
        var firstStep = 0
    }

    private struct State {
        var tracks: [String: Track] = [:]
        var lastDraw = Date.distantPast
        var lineShown = false
    }

    private let write: @Sendable (String) -> Void
    private let state = Mutex(State())

    public init(write: @escaping @Sendable (String) -> Void) { self.write = write }

    public func handle(_ event: RunEvent) {
        state.withLock { state in
            let now = Date()
            var above: String?
            switch event.escapedForTerminal {
            case .nodeStarted(let id, let type):
                state.tracks[id] = Track(type: type, started: now)
            case .progress(let id, let type, let step, let total, let unit):
                var track = state.tracks[id] ?? Track(type: type, started: now)
                track.counters.update(unit: unit, step: step, total: total)
                if let primary = track.counters.primary, primary.unit != track.rateUnit || primary.step < track.firstStep {
                    // A new outer unit (a stream's frames after a first tile), or a count that restarted.
                    track.rateUnit = primary.unit
                    track.firstStepAt = now
                    track.firstStep = primary.step
                }
                state.tracks[id] = track
                guard now.timeIntervalSince(state.lastDraw) >= 0.1 else { return }
            case .nodeFinished(let id, let type, let seconds, let cached):
                state.tracks[id] = nil
                above = cached ? "\(id) (\(type)): cached" : String(format: "\(id) (\(type)): done in %.2f s", seconds)
            case .log(let id, let message): above = (id.map { "\($0): " } ?? "") + message
            case .error(let id, let message): above = "error: " + (id.map { "\($0): " } ?? "") + message
            }
            var text = state.lineShown ? "\r\u{1B}[K" : ""
            if let above { text += above + "\n" }
            let line = Self.statusLine(state.tracks, now: now)
            text += line
            state.lineShown = !line.isEmpty
            state.lastDraw = now
            write(text)
        }
    }

    /// Clears the status line and prints the run's summary table.
    public func runFinished(_ report: RunReport) {
        state.withLock { state in
            write((state.lineShown ? "\r\u{1B}[K" : "") + report.text)
            state.lineShown = false
            state.tracks = [:]
        }
    }

    private static func statusLine(_ tracks: [String: Track], now: Date) -> String {
        tracks.sorted { $0.key < $1.key }.map { id, track in
            var part = "\(id) (\(track.type))"
            guard let primary = track.counters.primary else {
                return part + String(format: " %.0fs", now.timeIntervalSince(track.started))
            }
            part += " " + primary.text
            if let first = track.firstStepAt, primary.step > track.firstStep {
                let rate = Double(primary.step - track.firstStep) / max(now.timeIntervalSince(first), 1e-6)
                part += String(format: " %.2f ", rate) + "\(primary.unit)/s"
                if primary.total > 0 {
                    let eta = Int((Double(primary.total - primary.step) / rate).rounded())
                    part += String(format: " ETA %d:%02d", eta / 60, eta % 60)
                }
            }
            let inner = track.counters.counts.dropFirst().map(\.text)
            return inner.isEmpty ? part : part + ", " + inner.joined(separator: ", ")
        }.joined(separator: " | ")
    }
}
