import ArgumentParser
import Foundation
import LapseGraph

/// `lapse batch`: one worker of a batch, as a Kubernetes Indexed Job pod or a Slurm array task runs it.
struct BatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batch",
        abstract: "Run a graph once per manifest item, for one shard of the items; idempotent and resumable.",
        discussion: """
        MANIFEST is JSON Lines, one item a line: {"id": "clip-007", "set": {"prompt.text": "a rose blooming"}}.
        Item k (from 0) belongs to shard k mod N. Each item's outputs go under OUT/<id>/ (savers' relative paths
        are placed there; relative input paths are looked for as lapse run looks for them, --models-dir included)
        and OUT/<id>/.done is written last; an item already done for the same graph and overrides
        is skipped, a half-written one is redone. Workers on one shard never run an item twice (OUT/<id>.lock, with
        a heartbeat; a stale lock is taken over). Without --shard, the shard comes from JOB_COMPLETION_INDEX
        (Kubernetes; with --shards N or LAPSE_SHARD_COUNT) or SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT.
        Exit status: 0 every item of the shard done, 1 some failed after --retries (see OUT/_shard-I-of-N.json).

        Examples:
          lapse batch graphs/magictime.json prompts.jsonl --shard 0/4 --out-dir /shared/out
          lapse batch --status prompts.jsonl --out-dir /shared/out
        See docs/scale-out.md for a Kubernetes Indexed Job and a Slurm array.
        """)

    @Argument(help: "GRAPH MANIFEST (with --status: MANIFEST, or GRAPH MANIFEST to count only records of that graph).")
    var paths: [String]

    @Option(help: ArgumentHelp("This worker's shard: I/N, 0 ≤ I < N.", valueName: "I/N"))
    var shard: String?

    @Option(help: ArgumentHelp("The number of shards, when the index comes from JOB_COMPLETION_INDEX.", valueName: "N"))
    var shards: Int?

    @Option(name: .customLong("out-dir"), help: ArgumentHelp("Where items' folders and reports go.", valueName: "dir"))
    var outputDirectory = "batch-out"

    @Option(help: "Extra attempts for a failing item.")
    var retries = 0

    @Option(name: .customLong("cache-dir"), help: ArgumentHelp("Keep node results here across runs and workers.", valueName: "dir"))
    var cacheDirectory: String?

    @Flag(help: "Print done / failed / running / pending over all shards instead of running.")
    var status = false

    @Flag(help: "Also print each node's start, finish or cache hit for every item.")
    var verbose = false

    @OptionGroup var models: ModelsOptions
    @OptionGroup var plugins: PluginOptions

    func validate() throws {
        guard retries >= 0, retries <= 100 else { throw ValidationError("--retries must be in 0…100") }
        guard status ? (1...2).contains(paths.count) : paths.count == 2 else {
            throw ValidationError(status ? "--status takes MANIFEST (or GRAPH MANIFEST)" : "expected GRAPH MANIFEST")
        }
    }

    func run() throws {
        let env = self.env
        let out = resolve(outputDirectory, env)
        do {
            let manifestPath = paths[paths.count - 1]
            let items = try BatchManifest.parse(try InputFile.read(resolve(manifestPath, env).path), path: manifestPath)
            if status {
                let graphHash = paths.count == 2 ? SHA256.hex(try InputFile.read(resolve(paths[0], env).path)) : nil
                printStatus(BatchStatus.read(items: items, outputDirectory: out, graphSHA256: graphHash), total: items.count)
                return
            }
            let registry = try plugins.registry(env)
            let graphURL = resolve(paths[0], env)
            let graphData = try InputFile.read(graphURL.path)
            // Relative input paths: the graph's folder, the current directory, the models folders, as in `lapse run`.
            let searchPath = InputSearchPath(graphFolder: graphURL.deletingLastPathComponent(),
                                             currentDirectory: env.currentDirectory, modelsFolders: try models.folders(env))
            let shard = try BatchShard.resolve(option: shard, count: shards, environment: env.environment)
            let staleAfter = env.environment["LAPSE_BATCH_STALE_SECONDS"].flatMap(Double.init) ?? 60
            let console = env.console
            let runner = BatchRunner(graphPath: paths[0], graphData: graphData, items: items, shard: shard,
                                     outputDirectory: out, retries: retries, registry: registry,
                                     cache: ResultCache(directory: cacheDirectory.map { resolve($0, env) }),
                                     baseDirectory: env.currentDirectory, inputSearchPath: searchPath,
                                     cancellation: env.cancellation,
                                     staleAfter: staleAfter,
                                     events: verbose ? PlainLogRenderer { console.err($0) } : QuietRenderer(),
                                     log: { console.err(TerminalText.escaped($0) + "\n") })
            let report = try runner.run()
            console.err(String(format: "shard %@: %d done, %d already done, %d failed of %d items, in %.1f s\n",
                               shard.description, report.completed.count, report.skipped.count, report.failed.count,
                               runner.shardItems.count, report.seconds))
            if !report.failed.isEmpty {
                console.err("failed: \(report.failed.map(\.id).joined(separator: ", ")) (errors in \(out.path)/_shard-\(shard.index)-of-\(shard.count).json)\n")
                throw ExitCode(ExitStatus.runtimeError)
            }
        } catch let error as ExitCode {
            throw error
        } catch is CancellationError {
            env.console.err("\ncancelled\n")
            throw ExitCode(ExitStatus.cancelled)
        } catch let error as ValidationFailure {
            env.console.err(error.diagnostics.map { TerminalText.escaped($0.description) }.joined(separator: "\n") + "\n")
            throw ExitCode(ExitStatus.invalidGraph)
        } catch {
            env.console.err("error: \(TerminalText.escaped(error.localizedDescription))\n")
            throw ExitCode(error is BatchError ? ExitStatus.invalidGraph : ExitStatus.runtimeError)
        }
    }

    private func printStatus(_ status: BatchStatus, total: Int) {
        var text = "\(status.done.count) done, \(status.failed.count) failed, \(status.running.count) running, "
            + "\(status.pending.count) pending, of \(total) items\n"
        for failure in status.failed { text += "failed \(failure.id): \(TerminalText.escaped(failure.error))\n" }
        env.console.out(text)
    }
}
