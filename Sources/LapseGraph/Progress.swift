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
        n("time", String(format: "%.6f", Date().timeIntervalSince(start)))
        let line = "{" + fields.map { "\(JSONValue.quote($0.0)):\($0.1)" }.joined(separator: ",") + "}\n"
        lock.withLock { _ in write(line) }
    }
}

/// Plain log lines for pipes and files: node start and finish, progress at most once a second per node.
public final class PlainLogRenderer: RunEventSink {
    private let write: @Sendable (String) -> Void
    private let lastPrinted = Mutex<[String: Date]>([:])

    public init(write: @escaping @Sendable (String) -> Void) { self.write = write }

    public func handle(_ event: RunEvent) {
        switch event.escapedForTerminal {
        case .nodeStarted(let id, let type): write("\(id) (\(type)): started\n")
        case .progress(let id, let type, let step, let total, let unit):
            let now = Date()
            let due = lastPrinted.withLock { last -> Bool in
                if step < total, let previous = last[id], now.timeIntervalSince(previous) < 1 { return false }
                last[id] = now
                return true
            }
            if due { write("\(id) (\(type)): \(unit) \(step)" + (total > 0 ? "/\(total)" : "") + "\n") }
        case .nodeFinished(let id, let type, let seconds, let cached):
            write("\(id) (\(type)): " + (cached ? "cached\n" : String(format: "done in %.2f s\n", seconds)))
        case .log(let id, let message): write((id.map { "\($0): " } ?? "") + message + "\n")
        case .error(let id, let message): write("error: " + (id.map { "\($0): " } ?? "") + message + "\n")
        }
    }
}

/// A single redrawn status line for terminals: node id, step, rate and ETA; finished nodes scroll above it.
public final class TerminalProgressRenderer: RunEventSink {
    private struct Track {
        var type: String
        var started: Date
        var step = 0
        var total = 0
        var unit = "step"
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
                if track.firstStepAt == nil { track.firstStepAt = now; track.firstStep = step }
                track.step = step
                track.total = total
                track.unit = unit
                state.tracks[id] = track
                guard now.timeIntervalSince(state.lastDraw) >= 0.1 || step == total else { return }
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

    private static func statusLine(_ tracks: [String: Track], now: Date) -> String {
        tracks.sorted { $0.key < $1.key }.map { id, track in
            var part = "\(id) (\(track.type))"
            guard track.step > 0 || track.total > 0 else {
                return part + String(format: " %.0fs", now.timeIntervalSince(track.started))
            }
            part += " \(track.unit) \(track.step)" + (track.total > 0 ? "/\(track.total)" : "")
            if let first = track.firstStepAt, track.step > track.firstStep {
                let rate = Double(track.step - track.firstStep) / max(now.timeIntervalSince(first), 1e-6)
                part += String(format: " %.2f ", rate) + "\(track.unit)/s"
                if track.total > 0 {
                    let eta = Int((Double(track.total - track.step) / rate).rounded())
                    part += String(format: " ETA %d:%02d", eta / 60, eta % 60)
                }
            }
            return part
        }.joined(separator: " | ")
    }
}
