import Foundation
import LapseGraph
import Synchronization

/// Where a job is in its life.
public enum JobState: String, Sendable {
    case queued, running, done, failed, cancelled

    /// True once the job will not change any more.
    public var isFinished: Bool { self == .done || self == .failed || self == .cancelled }
}

/// One node's progress within a job, as `GET /jobs/{id}` reports it.
public struct NodeProgress: Sendable {
    /// `pending`, `running`, `done`, `cached` or `failed`.
    public var state = "pending"
    /// The node's type name.
    public var type: String
    /// The last progress report: `step` of `total` `unit`s (0 of 0 before any).
    public var step = 0
    public var total = 0
    public var unit = "step"
    /// Seconds the node ran, once finished.
    public var seconds: Double?
}

/// A file a job wrote, served at `GET /jobs/{id}/outputs/{name}`.
public struct JobOutput: Sendable {
    /// The name clients ask for: the path relative to the job's folder (or to the workspace for an absolute
    /// output path inside it).
    public var name: String
    /// The absolute path on disk.
    public var path: String
    /// The size when the job ended.
    public var bytes: Int
}

/// One submitted graph: its validated form, its state, per-node progress, event log and outputs.
public final class Job: Sendable {
    /// 32 hex digits from the system's secure generator.
    public let id: String
    /// The validated graph, file paths already made absolute and confined to the workspace.
    public let graph: ValidatedGraph
    /// Relative output paths of the job resolve here.
    public let folder: URL
    /// When the job was submitted.
    public let created = Date()
    let token = CancellationToken()
    /// Absolute output paths the graph names outside the job's folder (still inside the workspace).
    let outsideOutputs: [String]

    /// Events kept per job for clients that connect late; progress events beyond this are streamed but not kept.
    static let maximumStoredEvents = 20_000
    /// Events a slow event-stream client may fall behind by before the oldest are dropped for it.
    static let subscriberBuffer = 10_000

    struct State {
        var state: JobState = .queued
        var started: Date?
        var finished: Date?
        var error: (nodeID: String?, message: String)?
        var cancelRequested = false
        var nodes: [String: NodeProgress]
        var events: [String] = []
        var droppedEvents = 0
        var subscribers: [UInt64: AsyncStream<String>.Continuation] = [:]
        var nextSubscriber: UInt64 = 0
        var outputs: [JobOutput] = []
    }

    let state: Mutex<State>

    init(id: String, graph: ValidatedGraph, folder: URL, outsideOutputs: [String]) {
        self.id = id
        self.graph = graph
        self.folder = folder
        self.outsideOutputs = outsideOutputs
        var nodes: [String: NodeProgress] = [:]
        for nodeID in graph.requiredOrder { nodes[nodeID] = NodeProgress(type: graph.nodes[nodeID]!.type) }
        state = Mutex(State(nodes: nodes))
    }

    /// A snapshot of the mutable state.
    var snapshot: State { state.withLock { $0 } }

    /// Appends one `--events json` line to the log and hands it to every connected event stream.
    func record(event line: String, isProgress: Bool) {
        let text = line.hasSuffix("\n") ? String(line.dropLast()) : line
        state.withLock { state in
            if state.events.count < Job.maximumStoredEvents || !isProgress {
                state.events.append(text)
            } else {
                state.droppedEvents += 1
            }
            for continuation in state.subscribers.values { continuation.yield(text) }
        }
    }

    /// The events so far, a stream of the ones to come (which ends when the job does), taken atomically so none is
    /// missed or repeated, and `stop`, which unsubscribes. Ending the iteration of `future` (its task cancelled)
    /// unsubscribes too; `stop` covers a client that went away before `future` was iterated at all (while the past
    /// events were being written), whose subscription would otherwise last until the job ends.
    func subscribe() -> (past: [String], future: AsyncStream<String>, stop: @Sendable () -> Void) {
        let (stream, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(Job.subscriberBuffer))
        let (past, key) = state.withLock { state -> ([String], UInt64?) in
            if state.state.isFinished {
                continuation.finish()
                return (state.events, nil)
            }
            let key = state.nextSubscriber
            state.nextSubscriber += 1
            state.subscribers[key] = continuation
            continuation.onTermination = { [weak self] _ in
                _ = self?.state.withLock { $0.subscribers.removeValue(forKey: key) }
            }
            return (state.events, key)
        }
        let stop: @Sendable () -> Void = { [weak self] in
            guard let key else { return }
            // Finished outside the lock: finishing runs onTermination, which takes the lock.
            self?.state.withLock { $0.subscribers.removeValue(forKey: key) }?.finish()
        }
        return (past, stream, stop)
    }

    /// Event streams (Server-Sent Events or WebSocket) connected to the job now.
    public var eventSubscribers: Int { state.withLock { $0.subscribers.count } }

    /// Moves the job to a finished state and ends every event stream.
    func finish(_ final: JobState, error: (nodeID: String?, message: String)?, outputs: [JobOutput]) {
        let subscribers = state.withLock { state -> [AsyncStream<String>.Continuation] in
            state.state = final
            state.finished = Date()
            state.error = error
            state.outputs = outputs
            let all = Array(state.subscribers.values)
            state.subscribers.removeAll()
            return all
        }
        for continuation in subscribers { continuation.finish() }
    }
}

/// Keeps a job's per-node table up to date from run events.
struct JobProgressSink: RunEventSink {
    let job: Job

    func handle(_ event: RunEvent) {
        job.state.withLock { state in
            switch event {
            case .nodeStarted(let id, _):
                state.nodes[id]?.state = "running"
            case .progress(let id, _, let step, let total, let unit):
                state.nodes[id]?.step = step
                state.nodes[id]?.total = total
                state.nodes[id]?.unit = unit
            case .nodeFinished(let id, _, let seconds, let cached):
                state.nodes[id]?.state = cached ? "cached" : "done"
                state.nodes[id]?.seconds = seconds
            case .error(let id?, let message) where message != "cancelled":
                state.nodes[id]?.state = "failed"
            case .log, .error:
                break
            }
        }
    }
}

extension Job {
    /// The job's event log as a sink: the same `--events json` lines `lapse run` prints.
    func eventLog() -> JSONLinesRenderer {
        JSONLinesRenderer { [self] line in
            // The renderer writes the event name first, so progress lines (the only ones the log may drop) are
            // recognised without parsing.
            record(event: line, isProgress: line.hasPrefix(#"{"event":"progress""#))
        }
    }
}
