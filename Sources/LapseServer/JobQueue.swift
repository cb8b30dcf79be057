import Foundation
import LapseGraph
import Synchronization

/// The server's jobs: a first-in first-out queue of which at most `maxRunning` run at once (one by default, since a
/// model node already uses every core), the finished ones kept for clients to read.
public final class JobQueue: Sendable {
    /// The node types jobs may use.
    public let registry: NodeRegistry
    /// The folders jobs may read and write.
    public let workspace: Workspace
    /// Jobs running at once (`--max-jobs`).
    public let maxRunning: Int
    /// Nodes of one job running at once (as `lapse run --jobs`).
    public let nodeConcurrency: Int
    /// Jobs waiting at most; a submission beyond is refused with 503 so a flood cannot exhaust memory.
    public let maxQueued: Int
    /// Finished jobs remembered; older ones are forgotten (their files stay in the workspace).
    public let keepFinished: Int
    let cache: ResultCache?

    private struct State {
        var jobs: [String: Job] = [:]
        /// Submission order of every remembered job.
        var order: [String] = []
        var waiting: [String] = []
        var running = 0
    }

    private let state = Mutex(State())
    /// Signalled whenever a job finishes (tests and shutdown wait on it).
    private let idle = Mutex<[CheckedContinuation<Void, Never>]>([])

    /// An empty queue; `cache` keeps node results across jobs (`--cache-dir`).
    public init(registry: NodeRegistry, workspace: Workspace, maxRunning: Int = 1, nodeConcurrency: Int = 2,
                maxQueued: Int = 1000, keepFinished: Int = 1000, cache: ResultCache? = nil) {
        self.registry = registry
        self.workspace = workspace
        self.maxRunning = max(1, maxRunning)
        self.nodeConcurrency = max(1, nodeConcurrency)
        self.maxQueued = max(1, maxQueued)
        self.keepFinished = max(1, keepFinished)
        self.cache = cache
    }

    /// A new random job id: 128 bits from the system's secure generator, as 32 hex digits.
    public static func newID() -> String {
        var generator = SystemRandomNumberGenerator()
        return String(format: "%016llx%016llx", generator.next() as UInt64, generator.next() as UInt64)
    }

    /// Queues a validated graph under `id` (whose folder its outputs were confined to); nil when the queue is full.
    public func submit(_ graph: ValidatedGraph, id: String) -> Job? {
        let folder = workspace.jobFolder(id)
        var outside: [String] = []
        for nodeID in graph.requiredOrder {
            guard let node = graph.nodes[nodeID] else { continue }
            for name in node.schema.outputFileParams {
                if case .string(let path)? = node.literals[name], !path.isEmpty, !Workspace.isInside(path, folder.path) {
                    outside.append(path)
                }
            }
        }
        let job = Job(id: id, graph: graph, folder: folder, outsideOutputs: outside)
        let accepted = state.withLock { state -> Bool in
            guard state.waiting.count < maxQueued else { return false }
            state.jobs[id] = job
            state.order.append(id)
            state.waiting.append(id)
            forgetOldJobs(&state)
            return true
        }
        guard accepted else { return nil }
        startWaitingJobs()
        return job
    }

    /// The job with this id, if remembered.
    public func job(_ id: String) -> Job? { state.withLock { $0.jobs[id] } }

    /// Every remembered job, oldest first.
    public var jobs: [Job] { state.withLock { state in state.order.compactMap { state.jobs[$0] } } }

    /// Position in the queue (0 = next to run), for a waiting job.
    public func queuePosition(of id: String) -> Int? { state.withLock { $0.waiting.firstIndex(of: id) } }

    /// Cancels a job: a waiting one at once, a running one at its next step. False when it had already finished.
    @discardableResult
    public func cancel(_ job: Job) -> Bool {
        let removedFromQueue = state.withLock { state -> Bool? in
            guard !job.snapshot.state.isFinished else { return nil }
            if let index = state.waiting.firstIndex(of: job.id) {
                state.waiting.remove(at: index)
                return true
            }
            return false
        }
        guard let removedFromQueue else { return false }
        job.state.withLock { $0.cancelRequested = true }
        job.token.cancel()
        if removedFromQueue {
            job.finish(.cancelled, error: nil, outputs: [])
            wakeIdleWaiters()
        }
        return true
    }

    /// Cancels every job, waiting or running (server shutdown).
    public func cancelAll() {
        for job in jobs { cancel(job) }
    }

    /// Waits until no job is waiting or running.
    public func waitUntilIdle() async {
        while true {
            let busy = state.withLock { !$0.waiting.isEmpty || $0.running > 0 }
            guard busy else { return }
            await withCheckedContinuation { continuation in
                let stillBusy = state.withLock { !$0.waiting.isEmpty || $0.running > 0 }
                if stillBusy { idle.withLock { $0.append(continuation) } } else { continuation.resume() }
            }
        }
    }

    private func wakeIdleWaiters() {
        for continuation in idle.withLock({ waiting in defer { waiting.removeAll() }; return waiting }) {
            continuation.resume()
        }
    }

    /// Starts waiting jobs while fewer than `maxRunning` run, each on its own thread (the executor blocks).
    private func startWaitingJobs() {
        let starting = state.withLock { state -> [Job] in
            var jobs: [Job] = []
            while state.running < maxRunning, !state.waiting.isEmpty {
                let id = state.waiting.removeFirst()
                guard let job = state.jobs[id] else { continue }
                state.running += 1
                jobs.append(job)
            }
            return jobs
        }
        for job in starting {
            let thread = Thread { [self] in
                run(job)
                state.withLock { $0.running -= 1 }
                startWaitingJobs()
                wakeIdleWaiters()
            }
            thread.name = "lapse-job-\(job.id.prefix(8))"
            thread.start()
        }
    }

    /// Runs one job to its end on the calling thread.
    private func run(_ job: Job) {
        job.state.withLock { state in
            state.state = .running
            state.started = Date()
        }
        let started = Date()
        let sink = FanOutEventSink([job.eventLog(), JobProgressSink(job: job)])
        if job.token.isCancelled {
            sink.handle(.error(nodeID: nil, message: "cancelled"))
            job.finish(.cancelled, error: nil, outputs: [])
            return
        }
        let options = ExecutionOptions(maxConcurrency: nodeConcurrency, cache: cache, events: sink, cancellation: job.token)
        let outcome = Executor(registry: registry, options: options).runReportingOutcome(job.graph, finalEvents: sink)
        let outputs = JobQueue.outputs(of: job, since: started, workspace: workspace)
        switch outcome {
        case .succeeded: job.finish(.done, error: nil, outputs: outputs)
        case .cancelled: job.finish(.cancelled, error: nil, outputs: outputs)
        case .failed(let nodeID, let message): job.finish(.failed, error: (nodeID, message), outputs: outputs)
        }
    }

    /// Drops the oldest finished jobs beyond `keepFinished`.
    private func forgetOldJobs(_ state: inout State) {
        let finished = state.order.filter { state.jobs[$0]?.snapshot.state.isFinished == true }
        guard finished.count > keepFinished else { return }
        let forget = Set(finished.prefix(finished.count - keepFinished))
        for id in forget { state.jobs[id] = nil }
        state.order.removeAll { forget.contains($0) }
    }

    /// The files a job wrote: every regular file under its folder, and each output path it named elsewhere in the
    /// workspace (frame-number patterns and `{stem}`/`{n}` templates matched) that was modified since the job started.
    static func outputs(of job: Job, since started: Date, workspace: Workspace) -> [JobOutput] {
        var found: [JobOutput] = []
        var seen = Set<String>()
        func add(_ path: String, name: String) {
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG, seen.insert(path).inserted else { return }
            found.append(JobOutput(name: name, path: path, bytes: Int(info.st_size)))
        }
        let root = job.folder.path
        if let walker = FileManager.default.enumerator(atPath: root) {
            var files: [String] = []
            while let relative = walker.nextObject() as? String {
                // Hidden files are savers' temporaries (`.name.lapse-tmp-…`), never outputs.
                if relative.split(separator: "/").contains(where: { $0.hasPrefix(".") }) { continue }
                files.append(relative)
            }
            for relative in files.sorted() { add(root + "/" + relative, name: relative) }
        }
        for path in job.outsideOutputs {
            let name = String(path.dropFirst(workspace.root.path.count + 1))
            let template = try? OutputPathTemplate(path)
            if Workspace.isSequencePattern(path) || template?.isTemplate == true {
                let folder = (path as NSString).deletingLastPathComponent
                let pattern = (path as NSString).lastPathComponent
                // A `{stem}`/`{n}` template names files only known once the saver ran: match its file name.
                let matcher = template?.isTemplate == true ? template!.matchesFileName : sequenceMatcher(pattern)
                let entries = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
                for entry in entries.sorted() where matcher(entry) {
                    let full = folder + "/" + entry
                    if modified(full, since: started) {
                        add(full, name: String(full.dropFirst(workspace.root.path.count + 1)))
                    }
                }
            } else if modified(path, since: started) {
                add(path, name: name)
            }
        }
        return found
    }

    private static func modified(_ path: String, since date: Date) -> Bool {
        var info = stat()
        guard stat(path, &info) == 0 else { return false }
        return Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9 >= date.timeIntervalSince1970 - 1
    }

    /// Matches file names against a `%05d`-style pattern.
    private static func sequenceMatcher(_ pattern: String) -> (String) -> Bool {
        guard let range = pattern.range(of: #"%0?[0-9]*d"#, options: .regularExpression) else { return { $0 == pattern } }
        let prefix = String(pattern[..<range.lowerBound]), suffix = String(pattern[range.upperBound...])
        return { name in
            guard name.count > prefix.count + suffix.count, name.hasPrefix(prefix), name.hasSuffix(suffix) else { return false }
            return name.dropFirst(prefix.count).dropLast(suffix.count).allSatisfy(\.isWholeNumber)
        }
    }
}
