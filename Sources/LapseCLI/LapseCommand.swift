import ArgumentParser
import Foundation
import LapseGraph
import LapseTensor

/// What a command invocation runs against: output, node registry, cancellation and environment.
/// Passed as a task-local so `lapse` and in-process tests run the same command code.
public struct CLIEnvironment: Sendable {
    public var console: any Console
    /// Builds the registry of built-in node types; external plugins are added to it per invocation.
    public var makeRegistry: @Sendable () throws -> NodeRegistry
    public var cancellation: CancellationToken
    public var environment: [String: String]
    /// Relative graph and input paths resolve against this directory.
    public var currentDirectory: URL

    public init(console: any Console = StandardConsole(),
                makeRegistry: @escaping @Sendable () throws -> NodeRegistry,
                cancellation: CancellationToken = CancellationToken(),
                environment: [String: String] = ProcessInfo.processInfo.environment,
                currentDirectory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)) {
        self.console = console
        self.makeRegistry = makeRegistry
        self.cancellation = cancellation
        self.environment = environment
        self.currentDirectory = currentDirectory
    }

    @TaskLocal static var current: CLIEnvironment?
}

/// Exit statuses of `lapse` (see docs/cli.md).
public enum ExitStatus {
    public static let success: Int32 = 0
    public static let runtimeError: Int32 = 1
    public static let invalidGraph: Int32 = 2
    /// A malformed command line (unknown option, missing argument): `EX_USAGE` from sysexits(3), as ArgumentParser
    /// reports it.
    public static let usage: Int32 = 64
    public static let cancelled: Int32 = 130
}

/// The `lapse` command line.
public enum LapseCLI {
    /// The version printed by `lapse --version`.
    public static let version = "0.1.0"

    /// Registers built-in node families into a fresh registry, plus the debug nodes when `LAPSE_DEBUG_NODES=1`.
    public static func registry(plugins: [any NodePlugin.Type],
                                environment: [String: String] = ProcessInfo.processInfo.environment) throws -> NodeRegistry {
        let registry = NodeRegistry()
        for plugin in plugins { try plugin.register(into: registry) }
        if environment[DebugNodes.environmentVariable] == "1" { try DebugNodes.register(into: registry) }
        return registry
    }

    /// Runs `arguments` (without the program name) in-process and returns the exit status.
    public static func run(_ arguments: [String], environment: CLIEnvironment) -> Int32 {
        CLIEnvironment.$current.withValue(environment) {
            do {
                var command = try Lapse.parseAsRoot(arguments)
                try command.run()
                return ExitStatus.success
            } catch let exit as ExitCode {
                return exit.rawValue
            } catch {
                let code = Lapse.exitCode(for: error).rawValue
                let message = TerminalText.escaped(Lapse.fullMessage(for: error), keepingNewlines: true)
                if code == 0 {
                    environment.console.out(message + "\n")
                } else {
                    environment.console.err(message + "\n")
                }
                return code
            }
        }
    }

    /// The `lapse` executable's entry point: real console, Ctrl-C wired to cancellation, never returns.
    ///
    /// SIGINT, SIGTERM and SIGHUP all cancel the run cooperatively (running nodes stop at their next step and their
    /// temporary outputs are removed); a second signal exits at once, still removing temporary output files.
    public static func main(makeRegistry: @escaping @Sendable () throws -> NodeRegistry) -> Never {
        useBestOpenBLASKernels()
        let token = CancellationToken()
        let console = StandardConsole()
        let presses = SignalCounter()
        var sources: [any DispatchSourceSignal] = []
        for (number, name) in [(SIGINT, "Ctrl-C"), (SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP")] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                if presses.increment() == 1 {
                    console.err("\n\(name): cancelling at the next step (\(name == "Ctrl-C" ? "Ctrl-C" : "signal") again to stop now)…\n")
                    token.cancel()
                } else {
                    AtomicFile.removeAllPending()
                    exit(ExitStatus.cancelled)
                }
            }
            source.resume()
            sources.append(source)
        }
        let environment = CLIEnvironment(console: console, makeRegistry: makeRegistry, cancellation: token)
        let status = run(Array(CommandLine.arguments.dropFirst()), environment: environment)
        for source in sources { source.cancel() }
        exit(status)
    }
}

extension LapseCLI {
    /// Set (to the core OpenBLAS had chosen) when lapse restarted itself with `OPENBLAS_CORETYPE`; also stops a loop.
    static let reexecMarker = "LAPSE_OPENBLAS_REEXEC"

    /// Restarts the process once with `OPENBLAS_CORETYPE` naming the best core the CPU supports, when OpenBLAS fell
    /// back to generic kernels because it does not know this CPU (see `MachineInfo`). OpenBLAS reads the variable
    /// only when it loads, so a restart is the one way to change its choice. A variable the user set is respected.
    static func useBestOpenBLASKernels() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OPENBLAS_CORETYPE"] == nil, environment[reexecMarker] == nil else { return }
        let machine = MachineInfo.current
        guard machine.openBLASFellBack, let best = machine.bestOpenBLASCore else { return }
        setenv("OPENBLAS_CORETYPE", best, 1)
        setenv(reexecMarker, machine.openBLASCore, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // exec failed (no /proc): carry on with the kernels OpenBLAS chose.
        unsetenv("OPENBLAS_CORETYPE")
    }
}

/// Counts Ctrl-C presses from the signal handler's queue.
private final class SignalCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() -> Int { lock.lock(); defer { lock.unlock() }; count += 1; return count }
}

/// `lapse`: the root command.
struct Lapse: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lapse",
        abstract: "Run generative-video and upscaling pipelines declared as JSON node graphs, on the CPU.",
        discussion: """
        A graph file names nodes (LoadImage, Upscale, SaveVideo, …) and links their ports; see docs/graph-format.md.

        Examples:
          lapse nodes                                 list node types by category
          lapse nodes Upscale                         show one node type's ports
          lapse validate upscale.json                 check a graph without running it
          lapse run upscale.json --set up.tile=128    run it with one parameter changed
          lapse graph upscale.json --dot | dot -Tpng -o graph.png   (dot is Graphviz: apt-get install graphviz)
          lapse serve --workspace .                   HTTP API and web page on 127.0.0.1:8188 (docs/serve.md)
          lapse doctor                                the CPU and the OpenBLAS kernels in use
        """,
        version: "lapse \(LapseCLI.version)",
        subcommands: [RunCommand.self, ValidateCommand.self, NodesCommand.self, GraphCommand.self, BatchCommand.self, ServeCommand.self,
                      DoctorCommand.self])
}

/// Options shared by every command that needs the node registry.
struct PluginOptions: ParsableArguments {
    @Option(name: .customLong("plugin-path"), help: ArgumentHelp(
        "A directory of external plugin libraries (*.so) to load; repeatable. LAPSE_PLUGIN_PATH adds more (colon-separated).",
        valueName: "dir"))
    var pluginPaths: [String] = []

    /// The built-in registry plus every plugin found; load problems are reported and skipped.
    func registry(_ env: CLIEnvironment) throws -> NodeRegistry {
        let registry: NodeRegistry
        do {
            registry = try env.makeRegistry()
        } catch {
            env.console.err("error: \(error.localizedDescription)\n")
            throw ExitCode(ExitStatus.runtimeError)
        }
        let directories = pluginPaths.map { resolve($0, env) } + PluginLoader.environmentDirectories(env.environment)
        for directory in directories {
            for problem in PluginLoader.loadDirectory(directory, into: registry) {
                let level = problem is RegistryError ? "error" : "warning"
                env.console.err("\(level): \(problem.localizedDescription)\n")
            }
        }
        return registry
    }
}

/// `--models-dir`: folders where relative input paths are looked for after the graph's folder and the current
/// directory (docs/models.md).
struct ModelsOptions: ParsableArguments {
    @Option(name: .customLong("models-dir"), help: ArgumentHelp(
        "A folder where relative model and input paths are looked for after the graph's folder and the current directory; repeatable, searched in order. LAPSE_MODELS adds more (colon-separated). See docs/models.md.",
        valueName: "dir"))
    var modelsDirectories: [String] = []

    /// The `--models-dir` folders, then `LAPSE_MODELS`'s, absolute (relative ones against the current directory). A
    /// `--models-dir` that is not a folder is an error; a `LAPSE_MODELS` entry that is not one is skipped with a
    /// warning, as a search path set once for every run should not stop one.
    func folders(_ env: CLIEnvironment) throws -> [URL] {
        var folders: [URL] = []
        for given in modelsDirectories {
            let url = resolve(given, env)
            guard FileKind(path: url.path) == .directory else {
                env.console.err("error: --models-dir \(TerminalText.quoted(given)): \(Self.notAFolder(url.path))\n")
                throw ExitCode(ExitStatus.usage)
            }
            folders.append(url)
        }
        for given in InputSearchPath.environmentFolders(env.environment) {
            let url = resolve(given, env)
            guard FileKind(path: url.path) == .directory else {
                env.console.err("warning: \(InputSearchPath.environmentVariable) entry \(TerminalText.quoted(given)): \(Self.notAFolder(url.path)); skipped\n")
                continue
            }
            folders.append(url)
        }
        return folders
    }

    private static func notAFolder(_ path: String) -> String {
        let kind = FileKind(path: path)
        return kind == .missing ? "no such folder (\(TerminalText.quoted(path)))" : "\(TerminalText.quoted(path)) is \(kind.description), not a folder"
    }
}

/// Options naming a graph and its overrides.
struct GraphOptions: ParsableArguments {
    /// Graph files are small JSON documents; a larger file is a mistake (or an attack), refused before reading.
    static let maximumGraphBytes = 64 << 20

    @Argument(help: "The graph file (JSON).")
    var graph: String

    @Option(name: .customLong("set"), help: ArgumentHelp(
        "Override a parameter: ID.PARAM=VALUE, VALUE a JSON literal or else a string (e.g. --set up.tile=128). Repeatable.",
        valueName: "id.param=value"))
    var overrides: [String] = []

    /// Parses, applies overrides and validates; prints every diagnostic and exits 2 when invalid. Relative input
    /// paths are looked for in the graph file's folder, the current directory, then `modelsFolders`.
    func validated(_ registry: NodeRegistry, _ env: CLIEnvironment, checkInputFiles: Bool = true,
                   modelsFolders: [URL] = []) throws -> ValidatedGraph {
        let url = resolve(graph, env)
        let data: Data
        do {
            let size = try InputFile.check(url.path)
            guard size <= GraphOptions.maximumGraphBytes else {
                throw FileAccessError.notReadable(path: url.path, reason: "\(size) bytes is more than a graph file may hold (\(GraphOptions.maximumGraphBytes))")
            }
            data = try InputFile.read(url.path)
        } catch {
            env.console.err("error: cannot read the graph file: \(error.localizedDescription)\n")
            throw ExitCode(ExitStatus.invalidGraph)
        }
        let searchPath = InputSearchPath(graphFolder: url.deletingLastPathComponent(), currentDirectory: env.currentDirectory,
                                         modelsFolders: modelsFolders)
        let validator = GraphValidator(registry: registry, searchPath: searchPath, checkInputFiles: checkInputFiles)
        let problems: [String]
        switch validator.validate(data: data, name: graph, overrideTexts: overrides) {
        case .success(let validated):
            return validated
        case .failure(let failure):
            problems = failure.diagnostics.map(\.description)
        }
        env.console.err(problems.map { TerminalText.escaped($0) }.joined(separator: "\n") + "\n")
        env.console.err("\(TerminalText.quoted(graph)): \(problems.count) error\(problems.count == 1 ? "" : "s")\n")
        throw ExitCode(ExitStatus.invalidGraph)
    }
}

func resolve(_ path: String, _ env: CLIEnvironment) -> URL {
    path.hasPrefix("/") ? URL(fileURLWithPath: path) : env.currentDirectory.appendingPathComponent(path)
}

extension ParsableCommand {
    var env: CLIEnvironment {
        guard let current = CLIEnvironment.current else {
            preconditionFailure("lapse commands run through LapseCLI.run, which sets the environment")
        }
        return current
    }
}
