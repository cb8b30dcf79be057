import ArgumentParser
import Foundation
import LapseGraph
import LapseServer

/// `lapse serve`: the HTTP API with a job queue (docs/serve.md).
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve an HTTP API that validates and runs graphs as queued jobs.",
        discussion: """
        Endpoints (docs/serve.md, docs/serve.openapi.yaml): POST /jobs, GET /jobs, GET /jobs/ID, DELETE /jobs/ID,
        GET /jobs/ID/events, GET /jobs/ID/outputs/NAME, GET /nodes, POST /validate, and a web page at /.
        Jobs run one at a time by default (--max-jobs runs more at once); the rest wait in a first-in first-out queue.
        Every file a job reads or writes must resolve inside the workspace or a models folder (symbolic links
        followed; models folders are read-only): a relative input path is looked for in the workspace, then in each
        --models-dir and LAPSE_MODELS folder (docs/models.md); relative output paths resolve against the job's own
        folder, WORKSPACE/jobs/ID/.
        Listening on an address other than localhost requires a token (--token or LAPSE_TOKEN), which every request
        must then send as "Authorization: Bearer TOKEN".

        Examples:
          lapse serve --workspace .
          lapse serve --workspace . --models-dir /shared/models
          LAPSE_TOKEN=$(openssl rand -hex 16) lapse serve --host 0.0.0.0 --port 8188
          curl -s localhost:8188/jobs -d @graphs/upscale-image.json
        """)

    @Option(help: "Address to listen on; anything but localhost needs a token.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one; the chosen port is printed).")
    var port = 8188

    @Option(help: ArgumentHelp("Folder jobs read from and write into (default: the current folder).", valueName: "dir"))
    var workspace: String?

    @Option(help: ArgumentHelp("Token clients must send (Authorization: Bearer T). Default: LAPSE_TOKEN.", valueName: "T"))
    var token: String?

    @Option(name: .customLong("max-jobs"), help: "Jobs running at once; the others wait in the queue.")
    var maxJobs = 1

    @Option(name: .shortAndLong, help: "Nodes of one job running at once (as lapse run --jobs).")
    var jobs = 2

    @Option(name: .customLong("max-body-bytes"), help: "Largest request body accepted, in bytes.")
    var maxBodyBytes = 8 << 20

    @Option(name: .customLong("model-memory-mb"), help: ArgumentHelp(
        "Memory for loaded models kept between jobs, in MiB (default: a quarter of the machine's memory; 0 keeps none).",
        valueName: "MiB"))
    var modelMemoryMB: Int?

    @Option(name: .customLong("cache-dir"), help: ArgumentHelp(
        "Keep node results here across jobs (as lapse run --cache-dir).", valueName: "dir"))
    var cacheDirectory: String?

    @OptionGroup var models: ModelsOptions
    @OptionGroup var plugins: PluginOptions

    func validate() throws {
        guard maxJobs >= 1 else { throw ValidationError("--max-jobs must be at least 1") }
        guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
        guard maxBodyBytes >= 1024 else { throw ValidationError("--max-body-bytes must be at least 1024") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0…65535") }
        guard (modelMemoryMB ?? 0) >= 0 else { throw ValidationError("--model-memory-mb must be 0 or more") }
    }

    func run() throws {
        let env = self.env
        let console = env.console
        var options = ServerOptions()
        options.host = host
        options.port = port
        options.token = token ?? env.environment["LAPSE_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        options.maxJobs = maxJobs
        options.nodeConcurrency = jobs
        options.maxBodyBytes = maxBodyBytes
        if let modelMemoryMB { options.modelMemoryBytes = modelMemoryMB << 20 }
        // Refused before anything else is set up, so a misconfiguration is reported at once.
        do { try options.check() } catch {
            console.err("error: \(error.localizedDescription)\n")
            throw ExitCode(ExitStatus.usage)
        }
        let registry = try plugins.registry(env)
        let modelsFolders = try models.folders(env)
        let server: LapseHTTPServer
        do {
            let space = try Workspace(root: resolve(workspace ?? ".", env), readOnlyFolders: modelsFolders)
            let cache = cacheDirectory.map { ResultCache(directory: resolve($0, env)) }
            let queue = JobQueue(registry: registry, workspace: space, maxRunning: maxJobs, nodeConcurrency: jobs,
                                 maxQueued: options.maxQueued, cache: cache)
            server = try LapseHTTPServer(options: options, queue: queue)
        } catch {
            console.err("error: \(error.localizedDescription)\n")
            throw ExitCode(ExitStatus.runtimeError)
        }
        let finished = DispatchSemaphore(value: 0)
        let failure = FailureBox()
        let host = self.host, maxJobs = self.maxJobs, root = server.queue.workspace.root.path
        let auth = options.token == nil ? "no token" : "token required"
        Task {
            do {
                try await server.run(shutdown: env.cancellation) { port in
                    let shown = host.contains(":") ? "[\(host)]" : host
                    console.out("lapse serve: listening on http://\(shown):\(port) (workspace \(root), \(maxJobs) job\(maxJobs == 1 ? "" : "s") at a time, \(auth))\n")
                }
            } catch {
                failure.set(error)
            }
            finished.signal()
        }
        finished.wait()
        if let error = failure.error {
            // SwiftNIO's errors are not LocalizedError; their description holds the system's words ("Address already in use").
            let reason = (error as? LocalizedError)?.errorDescription ?? String(describing: error)
            console.err("error: cannot serve on \(host):\(port): \(reason)\n")
            throw ExitCode(ExitStatus.runtimeError)
        }
    }
}

/// The server task's error, handed to the waiting command thread.
private final class FailureBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: (any Error)?
    func set(_ error: any Error) { lock.lock(); stored = error; lock.unlock() }
    var error: (any Error)? { lock.lock(); defer { lock.unlock() }; return stored }
}
