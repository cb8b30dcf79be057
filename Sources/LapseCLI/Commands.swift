import ArgumentParser
import Foundation
import LapseGraph
import LapseTensor

/// How `lapse run` reports progress.
enum EventFormat: String, ExpressibleByArgument, CaseIterable {
    /// A redrawn status line on a terminal, plain lines otherwise.
    case auto
    case terminal
    case plain
    /// One JSON object per event on standard output.
    case json
}

/// `lapse run`.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Validate a graph, then run the nodes its output nodes need.",
        discussion: """
        Independent branches run concurrently (--jobs). Frames stream between nodes in small batches, so memory does not
        grow with a video's length. Ctrl-C cancels at the next step, removes partial outputs and exits 130.
        Exit status: 0 success, 1 runtime error, 2 invalid graph, 130 cancelled.

        Examples:
          lapse run upscale.json
          lapse run upscale.json --set src.path=clip.mp4 --set up.tile=128
          lapse run upscale.json --cache-dir ~/.cache/lapse      # re-runs only what changed
          lapse run upscale.json --events json | jq .
          lapse run upscale.json --models-dir ~/models           # model paths also looked up in ~/models
        """)

    @OptionGroup var graphOptions: GraphOptions
    @OptionGroup var models: ModelsOptions
    @OptionGroup var plugins: PluginOptions

    @Option(name: .customLong("cache-dir"), help: ArgumentHelp(
        "Keep node results here across runs; unchanged nodes are not run again.", valueName: "dir"))
    var cacheDirectory: String?

    @Flag(name: .shortAndLong, help: "Print no progress or log lines (errors still go to stderr).")
    var quiet = false

    @Option(name: .customLong("events"), help: "Progress format: auto, terminal, plain or json (JSON lines on stdout).")
    var events: EventFormat = .auto

    @Option(name: .shortAndLong, help: "Nodes running at once.")
    var jobs = 2

    func validate() throws {
        guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
    }

    func run() throws {
        let env = self.env
        let registry = try plugins.registry(env)
        let graph = try graphOptions.validated(registry, env, modelsFolders: try models.folders(env))
        let console = env.console
        let sink: any RunEventSink
        switch (quiet, events) {
        case (true, _): sink = QuietRenderer()
        case (_, .json): sink = JSONLinesRenderer { console.out($0) }
        case (_, .plain): sink = PlainLogRenderer { console.err($0) }
        case (_, .terminal): sink = TerminalProgressRenderer { console.err($0) }
        case (_, .auto):
            sink = console.isTerminal ? TerminalProgressRenderer { console.err($0) } : PlainLogRenderer { console.err($0) }
        }
        let cache = cacheDirectory.map { ResultCache(directory: resolve($0, env)) }
        let options = ExecutionOptions(maxConcurrency: jobs, cache: cache, events: sink, cancellation: env.cancellation)
        // Only a JSON stream carries the ending as an event; the other renderers would print the error twice.
        let executor = Executor(registry: registry, options: options)
        switch executor.runReportingOutcome(graph, finalEvents: events == .json && !quiet ? sink : nil) {
        case .succeeded:
            if console.isTerminal && !quiet && events != .json { console.err("\r\u{1B}[K") }
        case .cancelled:
            console.err("\ncancelled\n")
            throw ExitCode(ExitStatus.cancelled)
        case .failed(_, let message):
            console.err("error: \(message)\n")
            throw ExitCode(ExitStatus.runtimeError)
        }
    }
}

/// `lapse validate`.
struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check a graph without running anything; report every problem, one per line.",
        discussion: """
        Checks JSON syntax, node types, ports, links, types, literal values, ranges, cycles, output nodes and that
        input files exist. A relative input path is looked for in the graph file's folder, then the current directory,
        then each --models-dir and LAPSE_MODELS folder (docs/models.md). Exit status 0 when valid, 2 when not.

        Examples:
          lapse validate upscale.json
          lapse validate upscale.json --set up.tile=4096
          LAPSE_MODELS=~/models:/shared/models lapse validate magictime.json
        """)

    @OptionGroup var graphOptions: GraphOptions
    @OptionGroup var models: ModelsOptions
    @OptionGroup var plugins: PluginOptions

    func run() throws {
        let env = self.env
        let registry = try plugins.registry(env)
        let graph = try graphOptions.validated(registry, env, modelsFolders: try models.folders(env))
        let running = graph.requiredOrder.count
        env.console.out("\(graphOptions.graph): valid (\(graph.nodes.count) node\(graph.nodes.count == 1 ? "" : "s"), \(running) to run)\n")
    }
}

/// `lapse nodes`.
struct NodesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodes",
        abstract: "List node types by category, or show one type's ports and documentation.",
        discussion: """
        Examples:
          lapse nodes
          lapse nodes Upscale
          lapse nodes --json > schemas.json
        """)

    @Argument(help: "A node type to describe.")
    var type: String?

    @Flag(help: "Print machine-readable schemas (JSON).")
    var json = false

    @OptionGroup var plugins: PluginOptions

    func run() throws {
        let env = self.env
        let registry = try plugins.registry(env)
        var entries = registry.all
        if let type {
            guard let entry = registry.entry(for: type) else {
                env.console.err("error: unknown node type \"\(type)\"\(Suggestions.hint(for: type, in: entries.map(\.schema.type)))\n")
                throw ExitCode(ExitStatus.invalidGraph)
            }
            entries = [entry]
        }
        if json {
            env.console.out(SchemaJSON.render(entries, single: type != nil) + "\n")
        } else if let entry = entries.first, type != nil {
            env.console.out(Self.describe(entry))
        } else {
            env.console.out(Self.list(entries))
        }
    }

    static func list(_ entries: [NodeRegistry.Entry]) -> String {
        guard !entries.isEmpty else { return "no node types registered\n" }
        let width = entries.map(\.schema.type.count).max() ?? 0
        var text = ""
        var category: String?
        for entry in entries {
            if entry.schema.category != category {
                category = entry.schema.category
                text += (text.isEmpty ? "" : "\n") + entry.schema.category + "\n"
            }
            text += "  " + entry.schema.type.padding(toLength: width + 2, withPad: " ", startingAt: 0) + entry.schema.summary + "\n"
        }
        return text
    }

    static func describe(_ entry: NodeRegistry.Entry) -> String {
        let schema = entry.schema
        var text = "\(schema.type)  (\(schema.category)\(schema.isOutput ? ", output node" : ""); from \(entry.source))\n  \(schema.summary)\n"
        text += "\nInputs:\n"
        if schema.inputs.isEmpty { text += "  (none)\n" }
        for input in schema.inputs {
            var facts: [String] = [input.type.description]
            if input.isRequired { facts.append("required") }
            else if let value = input.defaultValue { facts.append("default \(SchemaJSON.literal(value))") }
            else { facts.append("optional") }
            if input.min != nil || input.max != nil {
                facts.append("range [\(input.min.map(SchemaJSON.number) ?? "-∞"), \(input.max.map(SchemaJSON.number) ?? "∞")]")
            }
            if let allowed = input.allowed { facts.append("one of: \(allowed.joined(separator: ", "))") }
            if schema.inputFileParams.contains(input.name) { facts.append("input file") }
            if schema.outputFileParams.contains(input.name) { facts.append("output file") }
            text += "  \(input.name)  \(facts.joined(separator: ", "))\n"
            if !input.doc.isEmpty { text += "      \(input.doc)\n" }
        }
        text += "\nOutputs:\n"
        if schema.outputs.isEmpty { text += "  (none)\n" }
        for output in schema.outputs {
            text += "  \(output.name)  \(output.type)\n"
            if !output.doc.isEmpty { text += "      \(output.doc)\n" }
        }
        text += "\nValue inputs (Int, Float, Bool, String) go in \"params\" or are linked; data inputs are linked in \"inputs\".\n"
        return text
    }
}

/// `lapse graph`.
struct GraphCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "graph",
        abstract: "Print a graph as Graphviz DOT.",
        discussion: """
        Examples:
          lapse graph upscale.json --dot | dot -Tsvg -o upscale.svg
        """)

    @OptionGroup var graphOptions: GraphOptions
    @OptionGroup var plugins: PluginOptions

    @Flag(help: "Print Graphviz DOT (the only format for now).")
    var dot = false

    func validate() throws {
        guard dot else { throw ValidationError("choose an output format: --dot") }
    }

    func run() throws {
        let env = self.env
        let registry = try plugins.registry(env)
        let graph = try graphOptions.validated(registry, env, checkInputFiles: false)
        let name = URL(fileURLWithPath: graphOptions.graph).deletingPathExtension().lastPathComponent
        env.console.out(graph.dot(name: name))
    }
}

/// `lapse doctor`: the CPU, its vector extensions and the kernels OpenBLAS uses, so a slow run can be explained.
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Show the CPU, its vector extensions and which OpenBLAS kernels Lapse runs with.",
        discussion: """
        OpenBLAS picks its kernels from the CPU model when it loads. An OpenBLAS older than the CPU does not know the
        model and falls back to slow generic kernels (Prescott, SSE3); lapse then restarts itself once with
        OPENBLAS_CORETYPE set to the best core the CPU supports. Setting OPENBLAS_CORETYPE yourself turns that off.
        """)

    func run() throws {
        let machine = MachineInfo.current
        var lines: [String] = [
            "lapse \(LapseCLI.version)",
            "CPU:        \(machine.cpuDescription)",
            "extensions: \(machine.vectorExtensions.isEmpty ? "none beyond baseline" : machine.vectorExtensions.joined(separator: " "))",
            "OpenBLAS:   \(machine.openBLASVersion) (\(machine.openBLASConfig))",
            "kernels:    \(machine.openBLASCore)",
            // Lapse's own loops; LAPSE_CPU_LEVEL picks a weaker level, e.g. to benchmark AVX2 on an AVX-512 CPU.
            "Lapse:      kernels \(KernelDispatch.summary); this CPU runs \(KernelDispatch.supported.map(\.description).joined(separator: " "))",
        ]
        if let note = KernelDispatch.note { lines.append("note:       \(note)") }
        let environment = env.environment
        if let before = environment[LapseCLI.reexecMarker], let forced = environment["OPENBLAS_CORETYPE"] {
            lines.append("note:       OpenBLAS did not recognise this CPU and chose \(before); lapse restarted with OPENBLAS_CORETYPE=\(forced)")
        } else if let forced = environment["OPENBLAS_CORETYPE"] {
            lines.append("note:       OPENBLAS_CORETYPE=\(forced) is set, so lapse leaves OpenBLAS's choice alone")
        } else if machine.openBLASFellBack, let best = machine.bestOpenBLASCore {
            lines.append("warning:    OpenBLAS runs \(machine.openBLASCore) kernels on a CPU that supports \(best); run with OPENBLAS_CORETYPE=\(best)")
        }
        env.console.out(lines.joined(separator: "\n") + "\n")
    }
}
