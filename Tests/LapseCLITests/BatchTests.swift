import Foundation
import LapseCLI
import LapseGraph
import LapseTestSupport
import Testing

/// `lapse batch` as schedulers run it: several worker processes over one output folder, killed and restarted.
@Suite("lapse batch", .serialized)
struct BatchTests {
    /// A graph whose one output is `out.txt` with `lines` lines "i value", written slowly (`line_ms` per line).
    static func graph(lines: Int = 2, lineMS: Int = 0) -> String {
        #"{"version": 1, "nodes": {"a": {"type": "DebugInt", "params": {"value": 1}}, "w": {"type": "DebugWriteText", "inputs": {"value": "a"}, "params": {"path": "out.txt", "lines": \#(lines), "line_ms": \#(lineMS)}}}}"#
    }

    static func manifest(_ count: Int) -> String {
        (0..<count).map { #"{"id": "item-\#($0)", "set": {"a.value": \#($0)}}"# }.joined(separator: "\n") + "\n"
    }

    struct Worker {
        let process: Process
        let err: Pipe
        /// Everything the worker wrote to stderr (waits for it to exit).
        func finish() -> (status: Int32, log: String) {
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return (process.terminationStatus, text)
        }
    }

    /// Starts `lapse batch ARGS` in `dir` with the debug nodes.
    static func start(_ arguments: [String], in dir: URL, environment extra: [String: String] = [:]) throws -> Worker {
        let process = Process()
        process.executableURL = Paths.products.appendingPathComponent("lapse")
        process.arguments = ["batch"] + arguments
        process.currentDirectoryURL = dir
        var environment = ProcessInfo.processInfo.environment
        environment["LAPSE_DEBUG_NODES"] = "1"
        environment["LAPSE_BATCH_STALE_SECONDS"] = "2"
        for (key, value) in extra { environment[key] = value }
        process.environment = environment
        let err = Pipe()
        process.standardError = err
        process.standardOutput = Pipe()
        try process.run()
        return Worker(process: process, err: err)
    }

    /// Ids a worker log reports as done (run to completion by that worker).
    static func completed(_ log: String) -> [String] {
        log.split(separator: "\n").compactMap { line in
            line.contains(": done in ") ? String(line.prefix { $0 != ":" }) : nil
        }
    }

    /// Every item has its `.done` and the right output, and nothing temporary is left.
    static func expectAllDone(_ count: Int, lines: Int = 2, in out: URL) throws {
        for k in 0..<count {
            let folder = out.appendingPathComponent("item-\(k)")
            #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent(".done").path), "item-\(k)")
            let text = try String(contentsOf: folder.appendingPathComponent("out.txt"), encoding: .utf8)
            #expect(text == (0..<lines).map { "\($0) \(k)\n" }.joined(), "item-\(k): \(text)")
        }
        let leftovers = try FileManager.default.subpathsOfDirectory(atPath: out.path)
            .filter { $0.hasSuffix(".lock") || $0.contains("lapse-tmp") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    @Test func threeShardsRunEveryItemExactlyOnceThenSkipAndRerunOnAChangedGraph() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(Self.graph(lines: 2, lineMS: 5).utf8).write(to: dir.appendingPathComponent("g.json"))
        try Data(Self.manifest(30).utf8).write(to: dir.appendingPathComponent("m.jsonl"))
        let workers = try (0..<3).map { try Self.start(["g.json", "m.jsonl", "--shard", "\($0)/3", "--out-dir", "out"], in: dir) }
        let results = workers.map { $0.finish() }
        #expect(results.allSatisfy { $0.status == 0 }, "\(results.map(\.log))")
        let done = results.flatMap { Self.completed($0.log) }
        #expect(done.count == 30 && Set(done).count == 30, "every item exactly once: \(done.sorted())")
        for (shard, result) in results.enumerated() {
            #expect(Self.completed(result.log).allSatisfy { Int($0.dropFirst(5))! % 3 == shard }, "item k runs in shard k mod 3")
        }
        let out = dir.appendingPathComponent("out")
        try Self.expectAllDone(30, in: out)

        // A second run finds every item done.
        let again = try Self.start(["g.json", "m.jsonl", "--shard", "1/3", "--out-dir", "out"], in: dir).finish()
        #expect(again.status == 0)
        #expect(again.log.contains("shard 1/3: 0 done, 10 already done, 0 failed of 10 items"), "\(again.log)")
        let status = try Self.start(["--status", "g.json", "m.jsonl", "--out-dir", "out"], in: dir)
        let statusText = String(decoding: (status.process.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        _ = status.finish()
        #expect(statusText.hasPrefix("30 done, 0 failed, 0 running, 0 pending, of 30 items"), "\(statusText)")

        // A changed graph runs every item again.
        try Data(Self.graph(lines: 3).utf8).write(to: dir.appendingPathComponent("g.json"))
        let changed = try Self.start(["g.json", "m.jsonl", "--shard", "2/3", "--out-dir", "out"], in: dir).finish()
        #expect(changed.log.contains("shard 2/3: 10 done, 0 already done"), "\(changed.log)")
        let rerun = try String(contentsOf: out.appendingPathComponent("item-2/out.txt"), encoding: .utf8)
        #expect(rerun == "0 2\n1 2\n2 2\n")
    }

    @Test func aWorkerKilledMidItemIsResumedWithNothingLostOrDuplicated() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(Self.graph(lines: 4, lineMS: 60).utf8).write(to: dir.appendingPathComponent("g.json"))
        try Data(Self.manifest(8).utf8).write(to: dir.appendingPathComponent("m.jsonl"))
        let first = try Self.start(["g.json", "m.jsonl", "--shard", "0/1", "--out-dir", "out"], in: dir)
        // Kill it while it writes the fourth item: three are done, the fourth is half-written.
        let out = dir.appendingPathComponent("out")
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: out.appendingPathComponent("item-3.lock").path), Date() < deadline {
            usleep(10_000)
        }
        usleep(100_000)
        kill(first.process.processIdentifier, SIGKILL)
        let killed = first.finish()
        #expect(killed.status != 0)
        let before = Self.completed(killed.log)
        #expect(before == ["item-0", "item-1", "item-2"], "\(killed.log)")
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("item-3/.done").path))

        // The same command again: the dead worker's lock is taken over, the half-written item redone.
        let second = try Self.start(["g.json", "m.jsonl", "--shard", "0/1", "--out-dir", "out"], in: dir).finish()
        #expect(second.status == 0, "\(second.log)")
        #expect(Self.completed(second.log) == (3..<8).map { "item-\($0)" }, "\(second.log)")
        #expect(second.log.contains("shard 0/1: 5 done, 3 already done"), "\(second.log)")
        try Self.expectAllDone(8, lines: 4, in: out)
    }

    @Test func twoWorkersOnOneShardNeverBothRunAnItem() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(Self.graph(lines: 2, lineMS: 20).utf8).write(to: dir.appendingPathComponent("g.json"))
        try Data(Self.manifest(12).utf8).write(to: dir.appendingPathComponent("m.jsonl"))
        let workers = try (0..<2).map { _ in try Self.start(["g.json", "m.jsonl", "--shard", "0/1", "--out-dir", "out"], in: dir) }
        let results = workers.map { $0.finish() }
        #expect(results.allSatisfy { $0.status == 0 }, "\(results.map(\.log))")
        let done = results.flatMap { Self.completed($0.log) }
        #expect(done.count == 12 && Set(done).count == 12, "each item run by exactly one worker: \(results.map(\.log))")
        try Self.expectAllDone(12, in: dir.appendingPathComponent("out"))
    }

    @Test func failuresAreRetriedReportedAndExit1() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let graph = #"{"version": 1, "nodes": {"f": {"type": "DebugFail", "params": {"message": "boom"}}, "w": {"type": "DebugWriteText", "inputs": {"value": "f"}, "params": {"path": "out.txt"}}}}"#
        try Data(graph.utf8).write(to: dir.appendingPathComponent("g.json"))
        try Data(Self.manifest(2).replacingOccurrences(of: "a.value", with: "f.message").utf8).write(to: dir.appendingPathComponent("m.jsonl"))
        let result = try Self.start(["g.json", "m.jsonl", "--retries", "1", "--out-dir", "out"], in: dir).finish()
        #expect(result.status == 1)
        #expect(result.log.contains("item-0: attempt 2 of 2 failed"), "\(result.log)")
        #expect(result.log.contains("shard 0/1: 0 done, 0 already done, 2 failed of 2 items"), "\(result.log)")
        let report = try String(contentsOf: dir.appendingPathComponent("out/_shard-0-of-1.json"), encoding: .utf8)
        #expect(report.contains(#""attempts" : 2"#) && report.contains("item-1"), "\(report)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("out/item-0").path), "no partial outputs")
    }

    @Test func manifestAndShardErrorsNameTheLine() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let graph = try writeGraph(Self.graph(), in: dir)
        let manifest = dir.appendingPathComponent("m.jsonl")
        try Data("{\"id\": \"a\"}\n\n{\"id\": \"a\"}\n".utf8).write(to: manifest)
        let duplicate = lapse(["batch", graph, manifest.path, "--out-dir", dir.appendingPathComponent("out").path])
        #expect(duplicate.code == 2)
        #expect(duplicate.err.contains("m.jsonl:3: id \"a\" is also on line 1"), "\(duplicate.err)")
        try Data("{\"id\": \"../x\"}\n".utf8).write(to: manifest)
        #expect(lapse(["batch", graph, manifest.path]).err.contains("m.jsonl:1: id \"../x\" is not a folder name"))
        try Data("{\"id\": \"a\"}\n".utf8).write(to: manifest)
        #expect(lapse(["batch", graph, manifest.path, "--shard", "3/3"]).err.contains("expected I/N with 0 ≤ I < N"))
        #expect(throws: BatchError.self) { try BatchShard.resolve(option: nil, count: nil, environment: ["JOB_COMPLETION_INDEX": "2"]) }
        #expect(try BatchShard.resolve(option: nil, count: nil, environment: ["JOB_COMPLETION_INDEX": "2", "LAPSE_SHARD_COUNT": "4"])
                == BatchShard(index: 2, count: 4))
        #expect(try BatchShard.resolve(option: nil, count: nil, environment: ["SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4",
                                                                              "SLURM_ARRAY_TASK_COUNT": "3"]) == BatchShard(index: 1, count: 3))
    }

    @Test func theScaleOutExamplesAreValid() throws {
        let docs = Paths.repoRoot.appendingPathComponent("docs/scale-out")
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        check.arguments = ["python3", "-c", """
            import sys, yaml
            docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
            job = [d for d in docs if d.get("kind") == "Job"][0]
            spec = job["spec"]
            assert job["apiVersion"] == "batch/v1", job["apiVersion"]
            assert spec["completionMode"] == "Indexed" and spec["completions"] >= 1 and spec["parallelism"] >= 1, spec
            container = spec["template"]["spec"]["containers"][0]
            assert "batch" in container["args"], container
            """, docs.appendingPathComponent("lapse-batch-job.yaml").path]
        try check.run()
        check.waitUntilExit()
        #expect(check.terminationStatus == 0, "the Kubernetes manifest is a valid Indexed Job")
        let syntax = Process()
        syntax.executableURL = URL(fileURLWithPath: "/bin/bash")
        syntax.arguments = ["-n", docs.appendingPathComponent("lapse-batch.sbatch").path]
        try syntax.run()
        syntax.waitUntilExit()
        #expect(syntax.terminationStatus == 0, "the sbatch script parses")
    }
}

extension BatchTests {
    /// The worker keeps the last item's results in memory: a node whose inputs do not change between items (a model
    /// loader in real graphs) runs for the first item only.
    @Test func unchangedNodesRunOncePerWorker() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(Self.graph().utf8).write(to: dir.appendingPathComponent("g.json"))
        let manifest = (0..<4).map { #"{"id": "item-\#($0)", "set": {"w.lines": \#($0 + 1)}}"# }.joined(separator: "\n")
        try Data(manifest.utf8).write(to: dir.appendingPathComponent("m.jsonl"))
        let result = try Self.start(["g.json", "m.jsonl", "--verbose", "--out-dir", "out"], in: dir).finish()
        #expect(result.status == 0, "\(result.log)")
        let lines = result.log.split(separator: "\n")
        #expect(lines.filter { $0.hasPrefix("a (DebugInt): done") }.count == 1, "\(result.log)")
        #expect(lines.filter { $0 == "a (DebugInt): cached" }.count == 3, "\(result.log)")
        #expect(lines.filter { $0.hasPrefix("w (DebugWriteText): done") }.count == 4, "\(result.log)")
    }
}
