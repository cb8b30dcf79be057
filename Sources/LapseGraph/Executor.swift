import Foundation
import Synchronization

/// A flag shared by everything in one run; set by Ctrl-C (or a test) to stop at the next step.
public final class CancellationToken: Sendable {
    private let flag = Atomic<Bool>(false)

    public init() {}

    /// Requests cancellation; running nodes see it at their next `checkCancellation()`.
    public func cancel() { flag.store(true, ordering: .sequentiallyConsistent) }

    public var isCancelled: Bool { flag.load(ordering: .sequentiallyConsistent) }
}

/// A node failed while running; the message names the node id and type.
public struct NodeExecutionError: LocalizedError, @unchecked Sendable {
    public let nodeID: String
    public let nodeType: String
    public let underlying: any Error

    public init(nodeID: String, nodeType: String, underlying: any Error) {
        self.nodeID = nodeID
        self.nodeType = nodeType
        self.underlying = underlying
    }

    public var errorDescription: String? {
        "node \"\(nodeID)\" (\(nodeType)): \(underlying.localizedDescription)"
    }
}

/// How a graph runs.
public struct ExecutionOptions: Sendable {
    /// Nodes running at once. Model code inside a node already uses every core, so a small bound is right.
    public var maxConcurrency: Int
    /// Results by cache key; `nil` disables caching.
    public var cache: ResultCache?
    public var events: any RunEventSink
    public var cancellation: CancellationToken
    /// Keep every node's outputs to the end of the run, for `RunSummary.outputs` (tests that inspect intermediate
    /// values). By default an output is dropped once every node reading it has finished, so a text encoder no longer
    /// needed is freed before sampling starts and a UNet before decoding.
    public var keepsIntermediateResults: Bool

    public init(maxConcurrency: Int = 2, cache: ResultCache? = nil, events: any RunEventSink = QuietRenderer(),
                cancellation: CancellationToken = CancellationToken(), keepsIntermediateResults: Bool = false) {
        self.maxConcurrency = max(1, maxConcurrency)
        self.cache = cache
        self.events = events
        self.cancellation = cancellation
        self.keepsIntermediateResults = keepsIntermediateResults
    }
}

/// What a run did.
public struct RunSummary: Sendable {
    /// Nodes whose `run` was called, in completion order.
    public var executed: [String]
    /// Nodes whose result came from the cache.
    public var cached: [String]
    /// Outputs of every node that ran or was taken from the cache; without
    /// `ExecutionOptions.keepsIntermediateResults`, less the outputs that nodes read (and so released).
    public var outputs: [String: NodeOutputs]
    /// Cache key of every required node.
    public var keys: [String: String]
    /// Each node's own time and peak memory, and the run's (also handed to `RunEventSink.runFinished`).
    public var report: RunReport
}

/// Runs a validated graph: only what output nodes need, in dependency order, independent branches concurrently.
public struct Executor: Sendable {
    public let registry: NodeRegistry
    public var options: ExecutionOptions

    public init(registry: NodeRegistry, options: ExecutionOptions = ExecutionOptions()) {
        self.registry = registry
        self.options = options
    }

    /// Runs the graph. Throws `NodeExecutionError` for the first node that failed, or `CancellationError`.
    /// Either way the events sink's `runFinished` gets the run's report last.
    ///
    /// With a cache, the graph is planned from its output nodes back before anything runs: a node runs only when
    /// a node that runs consumes its output and the cache holds no result for it. A node whose result is in the
    /// cache is not run, and neither is anything upstream of it that no running node needs: a second identical run
    /// loads no model, and changing one parameter re-runs that node, what depends on it, and whatever it consumes
    /// that the cache cannot hold (loaded models). Nodes left out either way are reported as cached.
    public func run(_ graph: ValidatedGraph) throws -> RunSummary {
        let order = graph.requiredOrder
        let required = Set(order)
        var keys: [String: String] = [:]
        keys.reserveCapacity(order.count)
        var dependents: [String: [String]] = [:]
        for id in order {
            let node = graph.nodes[id]!
            keys[id] = CacheKey.compute(for: node, upstreamKeys: keys)
            for u in Set(node.links.map(\.nodeID)).filter(required.contains) { dependents[u, default: []].append(id) }
        }
        let plan = plan(graph, order: order, keys: keys, dependents: dependents)
        // Scheduling covers the nodes that run; results from the cache are already there.
        var remaining: [String: Int] = [:]
        var runDependents: [String: [String]] = [:]
        for id in order where plan.runs.contains(id) {
            let upstream = Set(graph.nodes[id]!.links.map(\.nodeID)).filter(plan.runs.contains)
            remaining[id] = upstream.count
            for u in upstream { runDependents[u, default: []].append(id) }
        }
        let ledger = RunLedger(graph: graph, order: order, dependents: runDependents, events: options.events)
        let scheduler = Scheduler(graph: graph, keys: keys, remaining: remaining, dependents: runDependents,
                                  order: order, plan: plan, executor: self, ledger: ledger)
        return try scheduler.run()
    }

    /// Which nodes run, and the cached results the others provide.
    struct Plan {
        var runs: Set<String> = []
        /// Results taken from the cache, by node.
        var hits: [String: NodeOutputs] = [:]
        /// Nodes in order that do not run (cache hits, and nodes only they would have needed).
        var notRun: [String] = []
    }

    /// Walks from the output nodes back, looking results up only for nodes something that runs needs.
    private func plan(_ graph: ValidatedGraph, order: [String], keys: [String: String], dependents: [String: [String]]) -> Plan {
        var plan = Plan()
        for id in order.reversed() {
            let node = graph.nodes[id]!
            let consumers = dependents[id] ?? []
            // Output nodes (savers) always run: their effect is the file they write, which no entry stands for.
            guard node.schema.isOutput || consumers.isEmpty || consumers.contains(where: plan.runs.contains) else { continue }
            if !node.schema.isOutput, let cache = options.cache, let outputs = cachedResult(node, key: keys[id]!, cache: cache) {
                plan.hits[id] = outputs
            } else {
                plan.runs.insert(id)
            }
        }
        plan.notRun = order.filter { !plan.runs.contains($0) }
        return plan
    }

    /// A usable cached result of `node`, its streams tagged with the node as a fresh result's are; damaged entries
    /// are reported and dropped.
    private func cachedResult(_ node: ResolvedNode, key: String, cache: ResultCache) -> NodeOutputs? {
        let events = options.events
        switch cache.lookup(key, registry: registry) {
        case .hit(var outputs):
            if let problem = node.schema.outputProblem(outputs) {
                // Written by a build whose node had other outputs: of no use to this one.
                cache.remove(key)
                events.handle(.log(nodeID: node.id, message: "warning: ignored the cached result: \(problem.localizedDescription); recomputing"))
                return nil
            }
            for (name, value) in outputs.values {
                if case .object(let object) = value, let frames = object as? Frames {
                    outputs.values[name] = .object(GuardedFrames.wrap(frames, nodeID: node.id, nodeType: node.type, token: options.cancellation))
                }
            }
            return outputs
        case .corrupt(let path, let reason):
            events.handle(.log(nodeID: node.id, message: "warning: ignored the cache entry \(TerminalText.quoted(path)): \(reason); recomputing"))
            return nil
        case .miss:
            return nil
        }
    }

    /// Runs one node (the plan already found no cached result for it). Called on a worker thread.
    fileprivate func execute(_ node: ResolvedNode, key: String, upstream: [String: NodeOutputs],
                             ledger: RunLedger) throws -> NodeOutputs {
        let events = options.events
        let token = options.cancellation
        if token.isCancelled { throw CancellationError() }
        var values = node.literals
        var empty: [String: EmptyOutput] = [:]
        for link in node.links {
            // Only an optional output can be missing here (the producer's outputs were checked): reading it fails.
            guard let value = upstream[link.nodeID]?.values[link.output] else {
                empty[link.port] = EmptyOutput(nodeID: link.nodeID, output: link.output,
                                               reason: upstream[link.nodeID]?.emptyReasons[link.output])
                continue
            }
            // Metered per link: time this node spends pulling an upstream stream is the producer's.
            values[link.port] = ledger.handOver(value, from: link.nodeID, to: node.id)
        }
        ledger.started(node.id)
        events.handle(.nodeStarted(nodeID: node.id, type: node.type))
        let context = RunContext(nodeID: node.id, nodeType: node.type, token: token, events: events,
                                 workDirectory: options.cache?.workDirectory(for: key), meter: ledger.meter(node.id))
        let started = MonotonicClock.nanoseconds()
        // Its `run` and the cache entry it writes, whichever way this returns.
        defer { ledger.ran(node.id, nanoseconds: MonotonicClock.nanoseconds() - started) }
        var outputs: NodeOutputs
        do {
            outputs = try node.entry.nodeType.init().run(NodeInputs(values, empty: empty), context: context)
        } catch let error as NodeExecutionError {
            throw error  // raised by an upstream stream this node pulled; it already names its node
        } catch let error as CancellationError {
            throw error
        } catch {
            throw NodeExecutionError(nodeID: node.id, nodeType: node.type, underlying: error)
        }
        if token.isCancelled { throw CancellationError() }
        if let problem = node.schema.outputProblem(outputs) {
            throw NodeExecutionError(nodeID: node.id, nodeType: node.type, underlying: problem)
        }
        // Streams are lazy: errors surface in whichever node pulls them, so tag them with the producing node now.
        for (name, value) in outputs.values {
            if case .object(let object) = value, let frames = object as? Frames {
                outputs.values[name] = .object(GuardedFrames.wrap(frames, nodeID: node.id, nodeType: node.type, token: token))
            }
        }
        if !node.schema.isOutput, let cache = options.cache {
            let id = node.id
            outputs = cache.store(outputs, for: key, nodeType: node.type, toDisk: !(node.entry.nodeType is any DiskCacheExempt.Type),
                                  log: { message in events.handle(.log(nodeID: id, message: message)) })
        }
        // `nodeFinished` comes from the ledger: at once, or for a stream once every node that may pull it is done.
        return outputs
    }
}

/// The `NodeContext` handed to nodes: forwards progress and logs as events, exposes the cancellation flag.
struct RunContext: NodeContext {
    let nodeID: String
    let nodeType: String
    let token: CancellationToken
    let events: any RunEventSink
    let workDirectory: URL?
    let meter: NodeMeter

    func progress(step: Int, total: Int, unit: String) {
        if unit == "frame" { meter.reportsFrames.store(true, ordering: .relaxed) }
        events.handle(.progress(nodeID: nodeID, type: nodeType, step: step, total: total, unit: unit))
    }

    var isCancelled: Bool { token.isCancelled }

    func log(_ message: String) { events.handle(.log(nodeID: nodeID, message: message)) }
}

/// Frame sources that check cancellation before every frame and attribute errors to the producing node.
enum GuardedFrames {
    static func wrap(_ frames: Frames, nodeID: String, nodeType: String, token: CancellationToken) -> Frames {
        Frames(info: frames.info) {
            if token.isCancelled { throw CancellationError() }
            do {
                return Source(upstream: try frames.makeSource(), nodeID: nodeID, nodeType: nodeType, token: token)
            } catch {
                throw attribute(error, nodeID: nodeID, nodeType: nodeType)
            }
        }
    }

    static func attribute(_ error: any Error, nodeID: String, nodeType: String) -> any Error {
        if error is NodeExecutionError || error is CancellationError { return error }
        return NodeExecutionError(nodeID: nodeID, nodeType: nodeType, underlying: error)
    }

    final class Source: FrameSource {
        let upstream: any FrameSource
        let nodeID: String
        let nodeType: String
        let token: CancellationToken

        init(upstream: any FrameSource, nodeID: String, nodeType: String, token: CancellationToken) {
            self.upstream = upstream
            self.nodeID = nodeID
            self.nodeType = nodeType
            self.token = token
        }

        func next() throws -> Frame? {
            if token.isCancelled { throw CancellationError() }
            do {
                return try upstream.next()
            } catch {
                throw GuardedFrames.attribute(error, nodeID: nodeID, nodeType: nodeType)
            }
        }
    }
}

/// Ready-queue scheduling over a bounded number of worker threads.
private final class Scheduler: @unchecked Sendable {
    private struct State {
        var ready: [String] = []
        var readyHead = 0
        var running = 0
        var finished = 0
        var remaining: [String: Int]
        var results: [String: NodeOutputs] = [:]
        /// Links still to be read, by upstream node and output port: at 0 the value is dropped from `results`.
        var unreadLinks: [String: [String: Int]] = [:]
        var executed: [String] = []
        var cached: [String] = []
        var failure: (any Error)?
    }

    private let graph: ValidatedGraph
    private let keys: [String: String]
    private let dependents: [String: [String]]
    private let total: Int
    private let executor: Executor
    private let ledger: RunLedger
    private let state: Mutex<State>
    private let done = DispatchSemaphore(value: 0)
    /// Stack of a node's thread: room for `GraphValidator.maximumStreamDepth` chained stream stages (a 4,096-stage
    /// chain uses a few MiB; deep model code stays far below this).
    static let nodeStackSize = 128 << 20

    private let plan: Executor.Plan

    init(graph: ValidatedGraph, keys: [String: String], remaining: [String: Int], dependents: [String: [String]],
         order: [String], plan: Executor.Plan, executor: Executor, ledger: RunLedger) {
        self.graph = graph
        self.ledger = ledger
        self.keys = keys
        self.dependents = dependents
        self.total = plan.runs.count
        self.executor = executor
        self.plan = plan
        var initial = State(remaining: remaining)
        initial.ready = order.filter { plan.runs.contains($0) && remaining[$0] == 0 }
        initial.results = plan.hits
        initial.cached = plan.notRun
        for id in order where plan.runs.contains(id) {
            for link in graph.nodes[id]!.links { initial.unreadLinks[link.nodeID, default: [:]][link.output, default: 0] += 1 }
        }
        state = Mutex(initial)
    }

    func run() throws -> RunSummary {
        // What the cache provided finishes first, as cached, before anything starts.
        for id in plan.notRun { ledger.returned(id, outputs: plan.hits[id] ?? .none, cached: true) }
        if total > 0 {
            pump()
            done.wait()
        }
        let final = state.withLock { $0 }
        let report = ledger.finish(failure: final.failure)
        executor.options.events.runFinished(report)
        if let failure = final.failure { throw failure }
        return RunSummary(executed: final.executed, cached: final.cached, outputs: final.results, keys: keys, report: report)
    }

    /// Starts ready nodes while there is room.
    private func pump() {
        var launch: [(String, [String: NodeOutputs])] = []
        state.withLock { state in
            while state.running < executor.options.maxConcurrency, state.readyHead < state.ready.count,
                  state.failure == nil {
                let id = state.ready[state.readyHead]
                state.readyHead += 1
                state.running += 1
                var upstream: [String: NodeOutputs] = [:]
                for link in graph.nodes[id]!.links { upstream[link.nodeID] = state.results[link.nodeID] }
                launch.append((id, upstream))
            }
            if state.readyHead > 1024, state.readyHead * 2 > state.ready.count {
                state.ready.removeFirst(state.readyHead)
                state.readyHead = 0
            }
        }
        for (id, upstream) in launch {
            // Pulling a stream recurses through every stage feeding it (and releasing the sources unwinds the same
            // way), so nodes run on threads with a large stack rather than Dispatch's 512 KiB workers. Only touched
            // pages are committed; `GraphValidator.maximumStreamDepth` bounds the recursion.
            let started = NodeThread.start(stackSize: Self.nodeStackSize) { self.runNode(id, upstream: upstream) }
            if let reason = started {
                let node = graph.nodes[id]!
                complete(id, .failure(NodeExecutionError(nodeID: id, nodeType: node.type,
                                                         underlying: NodeError.failed("cannot start a thread to run it: \(reason)"))))
            }
        }
    }

    private func runNode(_ id: String, upstream: [String: NodeOutputs]) {
        let node = graph.nodes[id]!
        complete(id, Result { try executor.execute(node, key: keys[id]!, upstream: upstream, ledger: ledger) })
    }

    /// Records a node's result, then starts what became ready (or signals the end of the run).
    private func complete(_ id: String, _ result: Result<NodeOutputs, any Error>) {
        // Before the dependents start, so a node's `nodeFinished` precedes their `nodeStarted`.
        switch result {
        case .success(let outputs): ledger.returned(id, outputs: outputs, cached: false)
        case .failure(let error): ledger.failed(id, error: error)
        }
        let finishedAll = state.withLock { state -> Bool in
            state.running -= 1
            switch result {
            case .success(let outputs):
                state.results[id] = outputs
                if !executor.options.keepsIntermediateResults {
                    // This node has read its inputs: what nothing else will read goes (the node's own copies of
                    // them went with its thread).
                    for link in graph.nodes[id]!.links {
                        state.unreadLinks[link.nodeID]![link.output]! -= 1
                        if state.unreadLinks[link.nodeID]![link.output]! == 0 {
                            state.results[link.nodeID]?.values[link.output] = nil
                        }
                    }
                }
                state.executed.append(id)
                state.finished += 1
                for d in dependents[id] ?? [] {
                    state.remaining[d]! -= 1
                    if state.remaining[d] == 0 { state.ready.append(d) }
                }
            case .failure(let error):
                // A failure stops new work; nodes already running finish on their own. A real error wins over
                // the cancellations it may trigger elsewhere.
                if state.failure == nil || state.failure is CancellationError && !(error is CancellationError) {
                    state.failure = error
                }
            }
            if state.failure == nil, executor.options.cancellation.isCancelled { state.failure = CancellationError() }
            return state.finished == total || (state.failure != nil && state.running == 0)
        }
        if finishedAll { done.signal() } else { pump() }
    }
}

/// A detached POSIX thread with a chosen stack size; unlike `Thread`, a failure to start (out of address space or
/// threads) is reported rather than silently leaving the work undone.
enum NodeThread {
    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    /// Starts `body`; returns nil, or the system's reason when no thread could be started.
    static func start(stackSize: Int, _ body: @escaping () -> Void) -> String? {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, stackSize)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, &attributes, { raw in
            Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, context)
        guard status == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            return String(cString: strerror(status))
        }
        return nil
    }
}
