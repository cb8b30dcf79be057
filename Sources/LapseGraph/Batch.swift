import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A problem with a batch's manifest, shard or output folder; the message names the file and line.
public struct BatchError: LocalizedError, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var errorDescription: String? { message }
}

/// One item of a batch manifest: a line `{"id": "…", "set": {"node.param": value, …}}`.
public struct BatchItem: Sendable {
    public var id: String
    public var overrides: [ParamOverride]
    /// The overrides as canonical JSON (keys sorted), recorded in `.done` and compared on the next run.
    public var canonicalSet: String
    /// 1-based line in the manifest.
    public var line: Int
}

/// JSON Lines manifests.
public enum BatchManifest {
    /// Parses a manifest; blank lines are skipped, every other line must be an item. Ids are unique folder names.
    public static func parse(_ data: Data, path: String) throws -> [BatchItem] {
        var items: [BatchItem] = []
        var seen: [String: Int] = [:]
        for (index, raw) in data.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
            let line = index + 1
            let text = String(decoding: raw, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty else { continue }
            func fail(_ reason: String) -> BatchError { BatchError("\(TerminalText.quoted(path)):\(line): \(reason)") }
            let value: JSONValue
            do { value = try JSONParser.parse(text) } catch { throw fail(error.localizedDescription) }
            guard case .object(let members) = value.kind else { throw fail("each line must be a JSON object {\"id\": …, \"set\": {…}}") }
            for member in members where member.key != "id" && member.key != "set" {
                throw fail("unknown key \"\(TerminalText.quoted(member.key))\" (an item has \"id\" and \"set\")")
            }
            guard case .string(let id)? = value["id"]?.kind else { throw fail("the item has no \"id\" string") }
            guard isValidID(id) else {
                throw fail("id \"\(TerminalText.quoted(id))\" is not a folder name: 1–128 of A-Z a-z 0-9 . _ -, not starting with . or _")
            }
            if let first = seen[id] { throw fail("id \"\(id)\" is also on line \(first)") }
            seen[id] = line
            var overrides: [ParamOverride] = []
            var canonical: [(String, String)] = []
            if let set = value["set"] {
                guard case .object(let entries) = set.kind else { throw fail("\"set\" must be an object of \"node.param\": value") }
                for (key, entry) in entries {
                    guard let dot = key.firstIndex(of: "."), GraphDocument.isValidID(String(key[..<dot])),
                          key.index(after: dot) < key.endIndex else {
                        throw fail("\"set\" key \"\(TerminalText.quoted(key))\" is not node.param")
                    }
                    overrides.append(ParamOverride(nodeID: String(key[..<dot]), param: String(key[key.index(after: dot)...]), value: entry))
                    canonical.append((key, entry.jsonText))
                }
            }
            let set = "{" + canonical.sorted { $0.0 < $1.0 }.map { "\(JSONValue.quote($0.0)):\($0.1)" }.joined(separator: ",") + "}"
            items.append(BatchItem(id: id, overrides: overrides, canonicalSet: set, line: line))
        }
        guard !items.isEmpty else { throw BatchError("\(TerminalText.quoted(path)): the manifest has no items") }
        return items
    }

    static func isValidID(_ id: String) -> Bool {
        guard (1...128).contains(id.utf8.count), let first = id.utf8.first, first != UInt8(ascii: "."), first != UInt8(ascii: "_") else { return false }
        return id.utf8.allSatisfy { b in
            (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b == 46 || b == 95 || b == 45
        }
    }
}

/// Which items a worker runs: item k (0-based, in manifest order) belongs to shard k mod count.
public struct BatchShard: Sendable, Equatable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    /// From `--shard I/N`, else from the scheduler's environment: Kubernetes Indexed Jobs (`JOB_COMPLETION_INDEX`, with
    /// `--shards N` or `LAPSE_SHARD_COUNT`) or Slurm job arrays (`SLURM_ARRAY_TASK_ID` and `SLURM_ARRAY_TASK_COUNT`,
    /// which count from `SLURM_ARRAY_TASK_MIN`).
    public static func resolve(option: String?, count: Int?, environment: [String: String]) throws -> BatchShard {
        if let option {
            let parts = option.split(separator: "/")
            guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else {
                throw BatchError("--shard \(TerminalText.quoted(option)): expected I/N with 0 ≤ I < N, e.g. 0/3")
            }
            return BatchShard(index: i, count: n)
        }
        if let text = environment["JOB_COMPLETION_INDEX"] {
            guard let i = Int(text), i >= 0 else { throw BatchError("JOB_COMPLETION_INDEX=\(text) is not an index") }
            guard let n = count ?? environment["LAPSE_SHARD_COUNT"].flatMap({ Int($0) }), n > i else {
                throw BatchError("JOB_COMPLETION_INDEX=\(i) is set but not the number of shards: pass --shards N (the Job's completions) or set LAPSE_SHARD_COUNT")
            }
            return BatchShard(index: i, count: n)
        }
        if let text = environment["SLURM_ARRAY_TASK_ID"] {
            let minimum = environment["SLURM_ARRAY_TASK_MIN"].flatMap { Int($0) } ?? 0
            guard let id = Int(text), let n = count ?? environment["SLURM_ARRAY_TASK_COUNT"].flatMap({ Int($0) }),
                  id - minimum >= 0, id - minimum < n else {
                throw BatchError("SLURM_ARRAY_TASK_ID=\(text) with SLURM_ARRAY_TASK_COUNT=\(environment["SLURM_ARRAY_TASK_COUNT"] ?? "unset") does not name a shard: submit with --array=0-(N-1)")
            }
            return BatchShard(index: id - minimum, count: n)
        }
        if let count { return BatchShard(index: 0, count: count) }
        return BatchShard(index: 0, count: 1)
    }

    public var description: String { "\(index)/\(count)" }
}

/// The record an item leaves in `DIR/<id>/.done` once all its outputs are written: the graph and overrides it ran
/// with, and every output file with its size and SHA-256.
public struct BatchDoneRecord: Codable, Sendable {
    public struct Output: Codable, Sendable {
        public var path: String
        public var bytes: Int
        public var sha256: String
    }

    public var id: String
    public var graph: String
    public var graphSHA256: String
    public var set: String
    public var outputs: [Output]
    public var worker: String
    public var attempts: Int
    public var started: Date
    public var finished: Date

    enum CodingKeys: String, CodingKey {
        case id, graph, set, outputs, worker, attempts, started, finished
        case graphSHA256 = "graph_sha256"
    }

    /// The record at `folder/.done` when it holds for this graph and these overrides and its outputs are all there.
    static func valid(in folder: URL, graphSHA256: String?, set: String) -> BatchDoneRecord? {
        let file = folder.appendingPathComponent(".done")
        guard FileKind(path: file.path) == .regular, let data = try? InputFile.read(file.path),
              let record = try? BatchJSON.decoder.decode(BatchDoneRecord.self, from: data),
              graphSHA256 == nil || record.graphSHA256 == graphSHA256, record.set == set else { return nil }
        for output in record.outputs {
            let path = folder.appendingPathComponent(output.path).path
            guard FileKind(path: path) == .regular,
                  ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue == output.bytes else {
                return nil
            }
        }
        return record
    }
}

/// A shard's report, written to `DIR/_shard-I-of-N.json`.
public struct BatchShardReport: Codable, Sendable {
    public struct Failure: Codable, Sendable {
        public var id: String
        public var error: String
        public var attempts: Int
    }

    public var shard: Int
    public var shards: Int
    public var graphSHA256: String
    /// Items this worker ran to completion.
    public var completed: [String]
    /// Items found already done (valid `.done`), not run again.
    public var skipped: [String]
    public var failed: [Failure]
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case shard, shards, completed, skipped, failed, seconds
        case graphSHA256 = "graph_sha256"
    }
}

enum BatchJSON {
    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }

    /// SHA-256 of a file, read in 1 MiB blocks.
    static func sha256(of path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw BatchError("cannot read \(TerminalText.quoted(path)) to checksum it")
        }
        defer { try? handle.close() }
        var hash = SHA256()
        while let block = try handle.read(upToCount: 1 << 20), !block.isEmpty { hash.update(block) }
        return hash.finalizeHex()
    }
}

/// The exclusive claim on an item: `DIR/<id>.lock`, holding its owner, kept fresh by a heartbeat (the file's
/// modification time). A lock whose heartbeat is older than `staleAfter`, or whose owner is a dead process on this
/// host, is taken over; a worker that finds its lock taken stops before writing `.done`.
final class BatchItemLock: @unchecked Sendable {
    let path: String
    let owner: String
    private let staleAfter: Double
    private let state = NSLock()
    private var stopped = false
    private var lost = false

    init(path: String, owner: String, staleAfter: Double) {
        self.path = path
        self.owner = owner
        self.staleAfter = staleAfter
    }

    static var workerName: String {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        return "\(String(cString: name)):\(getpid())"
    }

    /// Takes the lock; false when another live worker holds it.
    func acquire() -> Bool {
        if create() { return true }
        guard isStale() else { return false }
        // Take over: replace the stale lock atomically, then check that no other worker replaced it after us.
        let temp = path + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        guard FileManager.default.createFile(atPath: temp, contents: Data(owner.utf8)) else { return false }
        guard rename(temp, path) == 0 else {
            unlink(temp)
            return false
        }
        usleep(200_000)
        return currentOwner() == owner
    }

    private func create() -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        let bytes = Array(owner.utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        return true
    }

    func currentOwner() -> String? {
        (try? InputFile.read(path)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Stale: no heartbeat for `staleAfter` seconds, or held by a process of this host that no longer exists.
    private func isStale() -> Bool {
        guard let holder = currentOwner() else { return true }
        let parts = holder.split(separator: ":")
        if parts.count == 2, let pid = Int32(parts[1]), String(parts[0]) == BatchItemLock.workerName.split(separator: ":")[0],
           kill(pid, 0) != 0, errno == ESRCH {
            return true
        }
        guard let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date else { return true }
        return Date().timeIntervalSince(modified) > staleAfter
    }

    /// Refreshes the heartbeat every `staleAfter / 4` seconds until `release`; notices a takeover.
    func startHeartbeat() {
        let interval = max(0.05, staleAfter / 4)
        Thread.detachNewThread { [self] in
            while true {
                Thread.sleep(forTimeInterval: interval)
                let done: Bool = state.withLock { stopped }
                if done { return }
                if currentOwner() != owner {
                    state.withLock { lost = true }
                    return
                }
                utimes(path, nil)
            }
        }
    }

    /// True while no other worker has taken the lock over.
    var isHeld: Bool { state.withLock { !lost } && currentOwner() == owner }

    func release() {
        state.withLock { stopped = true }
        if currentOwner() == owner { unlink(path) }
    }
}

/// Runs one shard of a batch: every item of the shard, each in its own output folder, idempotent and resumable.
///
/// An item with a valid `.done` for the same graph and overrides is skipped. Otherwise the worker takes the item's
/// lock, empties its folder (a half-written item is redone from scratch), runs the graph with the item's overrides
/// (relative output paths land in the item's folder; relative input paths are looked for in `inputSearchPath`),
/// retries up to `retries` times, and writes `.done` last and atomically. One `ResultCache` serves every item, so a
/// model loaded for one item is reused by the next.
public final class BatchRunner {
    public let graphPath: String
    public let graphData: Data
    public let items: [BatchItem]
    public let shard: BatchShard
    public let outputDirectory: URL
    public let retries: Int
    public let registry: NodeRegistry
    public let cache: ResultCache
    public let baseDirectory: URL
    /// Where relative input paths are looked for (by default `baseDirectory` only).
    public let inputSearchPath: InputSearchPath
    public let cancellation: CancellationToken
    /// Seconds without a heartbeat after which another worker's lock is taken over.
    public let staleAfter: Double
    /// One line per item and a summary (`item-3: done in 0.42 s, 1 output`).
    public let log: @Sendable (String) -> Void
    /// Node events of every item's run (`--verbose`).
    public let events: any RunEventSink

    public init(graphPath: String, graphData: Data, items: [BatchItem], shard: BatchShard, outputDirectory: URL,
                retries: Int, registry: NodeRegistry, cache: ResultCache, baseDirectory: URL,
                inputSearchPath: InputSearchPath? = nil,
                cancellation: CancellationToken = CancellationToken(), staleAfter: Double = 60,
                events: any RunEventSink = QuietRenderer(), log: @escaping @Sendable (String) -> Void) {
        self.graphPath = graphPath
        self.graphData = graphData
        self.items = items
        self.shard = shard
        self.outputDirectory = outputDirectory
        self.retries = retries
        self.registry = registry
        self.cache = cache
        self.baseDirectory = baseDirectory
        self.inputSearchPath = inputSearchPath ?? InputSearchPath([.init(baseDirectory, role: .currentDirectory)])
        self.cancellation = cancellation
        self.staleAfter = staleAfter
        self.events = events
        self.log = log
    }

    public var graphSHA256: String { SHA256.hex(graphData) }

    /// The items of this shard, in manifest order.
    public var shardItems: [BatchItem] {
        items.enumerated().filter { $0.offset % shard.count == shard.index }.map(\.element)
    }

    private enum Outcome {
        case completed, skipped, busy
        case failed(String, attempts: Int)
    }

    /// Runs the shard; returns its report (also written to `DIR/_shard-I-of-N.json`).
    public func run() throws -> BatchShardReport {
        let started = Date()
        try FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
        let graphHash = graphSHA256
        let (parsed, parseDiagnostics) = GraphDocument.load(data: graphData, name: graphPath)
        guard let document = parsed else { throw ValidationFailure(diagnostics: parseDiagnostics) }
        var report = BatchShardReport(shard: shard.index, shards: shard.count, graphSHA256: graphHash,
                                      completed: [], skipped: [], failed: [], seconds: 0)
        var waiting: [BatchItem] = []
        func record(_ item: BatchItem, _ outcome: Outcome) {
            switch outcome {
            case .completed: report.completed.append(item.id)
            case .skipped: report.skipped.append(item.id)
            case .busy: waiting.append(item)
            case .failed(let message, let attempts):
                report.failed.append(.init(id: item.id, error: message, attempts: attempts))
            }
        }
        for item in shardItems {
            if cancellation.isCancelled { throw CancellationError() }
            record(item, try runItem(item, document: document, graphHash: graphHash))
        }
        // Items another worker held: wait until it finishes them, or its lock goes stale and this worker takes over.
        while !waiting.isEmpty {
            if cancellation.isCancelled { throw CancellationError() }
            Thread.sleep(forTimeInterval: min(1, staleAfter / 4))
            let pending = waiting
            waiting = []
            for item in pending { record(item, try runItem(item, document: document, graphHash: graphHash)) }
        }
        report.seconds = Date().timeIntervalSince(started)
        let file = outputDirectory.appendingPathComponent("_shard-\(shard.index)-of-\(shard.count).json")
        try AtomicFile.write(try BatchJSON.encoder.encode(report), to: file)
        return report
    }

    private func runItem(_ item: BatchItem, document: GraphDocument, graphHash: String) throws -> Outcome {
        let folder = outputDirectory.appendingPathComponent(item.id)
        if BatchDoneRecord.valid(in: folder, graphSHA256: graphHash, set: item.canonicalSet) != nil { return .skipped }
        let lock = BatchItemLock(path: outputDirectory.appendingPathComponent(item.id + ".lock").path,
                                 owner: BatchItemLock.workerName, staleAfter: staleAfter)
        guard lock.acquire() else {
            // Another worker may have finished it between our check and its release.
            return BatchDoneRecord.valid(in: folder, graphSHA256: graphHash, set: item.canonicalSet) != nil ? .skipped : .busy
        }
        lock.startHeartbeat()
        defer { lock.release() }
        // Checked again under the lock: another worker may have completed it meanwhile.
        if BatchDoneRecord.valid(in: folder, graphSHA256: graphHash, set: item.canonicalSet) != nil { return .skipped }
        let started = Date()
        var lastError = ""
        for attempt in 1...(retries + 1) {
            if cancellation.isCancelled { throw CancellationError() }
            do {
                try? FileManager.default.removeItem(at: folder)
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                let keys = try execute(item, document: document, in: folder)
                cache.retainOnly(keys)
                guard lock.isHeld else {
                    log("\(item.id): another worker took the item over; leaving it to that worker")
                    return .busy
                }
                let record = BatchDoneRecord(id: item.id, graph: graphPath, graphSHA256: graphHash, set: item.canonicalSet,
                                             outputs: try outputs(in: folder), worker: lock.owner, attempts: attempt,
                                             started: started, finished: Date())
                try AtomicFile.write(try BatchJSON.encoder.encode(record), to: folder.appendingPathComponent(".done"))
                let count = record.outputs.count
                log(String(format: "%@: done in %.2f s, %d output%@", item.id, Date().timeIntervalSince(started), count,
                           count == 1 ? "" : "s"))
                return .completed
            } catch is CancellationError {
                try? FileManager.default.removeItem(at: folder)
                throw CancellationError()
            } catch {
                lastError = error.localizedDescription
                log("\(item.id): attempt \(attempt) of \(retries + 1) failed: \(lastError)")
            }
        }
        try? FileManager.default.removeItem(at: folder)
        return .failed(lastError, attempts: retries + 1)
    }

    /// Validates and runs the graph for one item with the process's folder set to the item's folder, so relative
    /// output paths land there; validation gives nodes their input files as absolute paths, found through
    /// `inputSearchPath` before the folder changes, as in `lapse run`. Returns the run's cache keys.
    private func execute(_ item: BatchItem, document: GraphDocument, in folder: URL) throws -> Set<String> {
        let (overridden, diagnostics) = document.applying(item.overrides)
        let validator = GraphValidator(registry: registry, searchPath: inputSearchPath)
        let graph: ValidatedGraph
        switch validator.validate(overridden, preceding: diagnostics) {
        case .success(let validated): graph = validated
        case .failure(let failure): throw failure
        }
        let previous = FileManager.default.currentDirectoryPath
        guard FileManager.default.changeCurrentDirectoryPath(folder.path) else {
            throw BatchError("cannot enter the item folder \(TerminalText.quoted(folder.path))")
        }
        defer { _ = FileManager.default.changeCurrentDirectoryPath(previous) }
        let options = ExecutionOptions(cache: cache, events: events, cancellation: cancellation)
        let summary = try Executor(registry: registry, options: options).run(graph)
        return Set(summary.keys.values)
    }

    /// Every file the item wrote, relative to its folder, with size and checksum.
    private func outputs(in folder: URL) throws -> [BatchDoneRecord.Output] {
        var found: [BatchDoneRecord.Output] = []
        let base = folder.standardizedFileURL.path
        guard let walker = FileManager.default.enumerator(atPath: base) else { return [] }
        while let relative = walker.nextObject() as? String {
            let path = base + "/" + relative
            guard FileKind(path: path, followLinks: false) == .regular, relative != ".done" else { continue }
            let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
            found.append(.init(path: relative, bytes: size, sha256: try BatchJSON.sha256(of: path)))
        }
        return found.sorted { $0.path < $1.path }
    }
}

/// Where a whole batch stands, over all shards: `lapse batch --status`.
public struct BatchStatus: Sendable {
    public var done: [String] = []
    public var failed: [(id: String, error: String)] = []
    public var running: [String] = []
    public var pending: [String] = []

    /// Reads the items' `.done` records, locks and the shards' reports under `outputDirectory`. With a graph hash,
    /// only records of that graph count as done.
    public static func read(items: [BatchItem], outputDirectory: URL, graphSHA256: String?) -> BatchStatus {
        var status = BatchStatus()
        var failures: [String: String] = [:]
        let names = (try? FileManager.default.contentsOfDirectory(atPath: outputDirectory.path)) ?? []
        for name in names where name.hasPrefix("_shard-") && name.hasSuffix(".json") {
            let path = outputDirectory.appendingPathComponent(name).path
            guard let data = try? InputFile.read(path),
                  let report = try? BatchJSON.decoder.decode(BatchShardReport.self, from: data) else { continue }
            for failure in report.failed { failures[failure.id] = failure.error }
        }
        for item in items {
            let folder = outputDirectory.appendingPathComponent(item.id)
            if BatchDoneRecord.valid(in: folder, graphSHA256: graphSHA256, set: item.canonicalSet) != nil {
                status.done.append(item.id)
            } else if FileKind(path: outputDirectory.appendingPathComponent(item.id + ".lock").path) == .regular {
                status.running.append(item.id)
            } else if let error = failures[item.id] {
                status.failed.append((item.id, error))
            } else {
                status.pending.append(item.id)
            }
        }
        return status
    }
}
