import Foundation
import Synchronization

/// Loaded models kept in memory between runs of one process (`lapse serve`'s jobs), so a second job on the same
/// checkpoint does not read and build it again.
///
/// Entries are keyed by what was loaded (a kind such as `UpscaleModel`), the identity of every file read (canonical
/// path, device, inode, size and modification time, so a replaced or edited file is loaded afresh) and the loader's
/// parameters. They are evicted least recently used first to stay within `budgetBytes`; a budget of 0 (the default,
/// and what `lapse run` keeps) turns caching off, since a single run gains nothing from it. Concurrent requests for
/// the same key load it once; the others wait for that load.
///
/// A cached value is shared by every job that asks for it, so it must not be mutated after loading (loader nodes
/// return immutable models).
public final class ModelCache: Sendable {
    /// The process's cache, used by loader nodes; its budget is set by the host (`lapse serve --model-memory-mb`).
    public static let shared = ModelCache(budgetBytes: 0)

    /// What identifies one file: a replaced or rewritten file gets a new identity.
    public struct FileIdentity: Hashable, Sendable {
        public var path: String
        public var device: UInt64
        public var inode: UInt64
        public var size: Int64
        public var modified: Int64

        /// The identity of the file at `path` now; nil when it cannot be examined.
        public init?(path: String) {
            var info = stat()
            guard let real = realpath(path, nil) else { return nil }
            defer { free(real) }
            let canonical = String(cString: real)
            guard stat(canonical, &info) == 0 else { return nil }
            self.path = canonical
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
            size = Int64(info.st_size)
            modified = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
        }
    }

    /// One cache key.
    public struct Key: Hashable, Sendable {
        public var kind: String
        public var files: [FileIdentity]
        public var params: String
    }

    /// What the cache did, for tests and the server's status.
    public struct Statistics: Sendable, Equatable {
        /// Loader calls made (misses).
        public var loads = 0
        /// Requests answered from memory.
        public var hits = 0
        public var evictions = 0
        public var entries = 0
        public var bytes = 0
    }

    private struct Entry {
        var value: any Sendable
        var bytes: Int
        var lastUse: UInt64
    }

    /// A load in progress that other requests for the same key wait on.
    private final class Gate: @unchecked Sendable {
        let condition = NSCondition()
        var finished = false

        func wait() {
            condition.lock()
            while !finished { condition.wait() }
            condition.unlock()
        }

        func open() {
            condition.lock()
            finished = true
            condition.broadcast()
            condition.unlock()
        }
    }

    /// What a request does next, decided under the lock.
    private enum Step { case hit(any Sendable), wait(Gate), load(Gate), bypass }

    private struct State {
        var budget: Int
        var entries: [Key: Entry] = [:]
        var loading: [Key: Gate] = [:]
        var clock: UInt64 = 0
        var statistics = Statistics()
        /// Loads per canonical file path, so a test can count its own model's loads whatever else runs.
        var loadsByFile: [String: Int] = [:]
    }

    private let state: Mutex<State>

    /// A cache keeping at most `budgetBytes` of models (0: none).
    public init(budgetBytes: Int) {
        state = Mutex(State(budget: max(0, budgetBytes)))
    }

    /// Bytes of models kept at most; 0 keeps none.
    public var budgetBytes: Int { state.withLock { $0.budget } }

    /// Changes the budget, evicting what no longer fits.
    public func setBudget(_ bytes: Int) {
        state.withLock { state in
            state.budget = max(0, bytes)
            evict(&state)
        }
    }

    /// Counters since the cache was made.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// How many times a loader ran for requests reading `path` (symbolic links resolved).
    public func loadCount(file path: String) -> Int {
        guard let identity = FileIdentity(path: path) else { return 0 }
        return state.withLock { $0.loadsByFile[identity.path] ?? 0 }
    }

    /// Drops every entry (their memory is freed once no running job holds them).
    public func removeAll() {
        state.withLock { state in
            state.statistics.evictions += state.entries.count
            state.entries.removeAll()
            state.statistics.entries = 0
            state.statistics.bytes = 0
        }
    }

    /// The value loaded by `load` for these files and parameters: from memory when an identical request was loaded
    /// before and is still kept, else loaded now (and kept if it fits the budget). `bytes` estimates the value's
    /// memory; by default the files' total size (a checkpoint's weights are about that size once loaded as float32
    /// from float32 files). A file that cannot be examined bypasses the cache, so the loader reports the problem.
    public func value<T: Sendable>(kind: String, files: [String], params: String = "", bytes: Int? = nil,
                                   load: () throws -> T) throws -> T {
        var identities: [FileIdentity] = []
        for file in files {
            guard let identity = FileIdentity(path: file) else {
                state.withLock { $0.statistics.loads += 1 }
                return try load()
            }
            identities.append(identity)
        }
        let key = Key(kind: kind + "/" + String(reflecting: T.self), files: identities, params: params)
        while true {
            let step = state.withLock { state -> Step in
                if state.budget == 0 {
                    state.statistics.loads += 1
                    for file in identities { state.loadsByFile[file.path, default: 0] += 1 }
                    return .bypass
                }
                state.clock += 1
                if var entry = state.entries[key] {
                    entry.lastUse = state.clock
                    state.entries[key] = entry
                    state.statistics.hits += 1
                    return .hit(entry.value)
                }
                if let gate = state.loading[key] { return .wait(gate) }
                let gate = Gate()
                state.loading[key] = gate
                state.statistics.loads += 1
                for file in identities { state.loadsByFile[file.path, default: 0] += 1 }
                return .load(gate)
            }
            switch step {
            case .bypass:
                return try load()
            case .hit(let value):
                if let typed = value as? T { return typed }
                return try load()  // unreachable: the key includes the type
            case .wait(let gate):
                gate.wait()  // then look again: the load may have failed or not fitted
                continue
            case .load(let gate):
                defer {
                    _ = state.withLock { $0.loading.removeValue(forKey: key) }
                    gate.open()
                }
                let value = try load()
                let size = bytes ?? Int(identities.reduce(0) { $0 + $1.size })
                state.withLock { state in
                    guard size <= state.budget else { return }
                    state.clock += 1
                    state.entries[key] = Entry(value: value, bytes: size, lastUse: state.clock)
                    state.statistics.bytes += size
                    state.statistics.entries = state.entries.count
                    evict(&state)
                }
                return value
            }
        }
    }

    /// Removes least recently used entries until the total fits the budget.
    private func evict(_ state: inout State) {
        while state.statistics.bytes > state.budget,
              let oldest = state.entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            state.entries[oldest.key] = nil
            state.statistics.bytes -= oldest.value.bytes
            state.statistics.evictions += 1
        }
        state.statistics.entries = state.entries.count
    }
}
