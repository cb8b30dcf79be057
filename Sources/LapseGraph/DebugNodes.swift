import Foundation
import LapseTensor

/// Synthetic node types for benchmarks and end-to-end tests of the runtime itself (category `debug`).
///
/// They know nothing about media or models. The CLI registers them only when the environment variable
/// `LAPSE_DEBUG_NODES=1` is set, so they never clutter `lapse nodes` for users.
public enum DebugNodes: NodePlugin {
    public static let name = "LapseGraph (debug nodes)"

    /// The environment variable that enables these nodes in the CLI.
    public static let environmentVariable = "LAPSE_DEBUG_NODES"

    public static func register(into registry: NodeRegistry) throws {
        for node in nodeTypes { try registry.register(node, source: name) }
    }

    static let nodeTypes: [any Node.Type] = [DebugInt.self, DebugSleep.self, DebugWriteText.self, DebugFrames.self,
                                             DebugFrameSink.self, DebugFail.self]
}

/// `value + in`: the trivial node of the 10,000-node chain benchmark.
public struct DebugInt: Node {
    public static let schema = NodeSchema(
        type: "DebugInt", category: "debug", summary: "Adds a literal to an optional linked integer.",
        inputs: [InputSpec("value", .int, default: .int(0), doc: "Integer to add."),
                 InputSpec("in", .int, optional: true, doc: "Upstream integer, 0 when unlinked.")],
        outputs: [OutputSpec("value", .int, doc: "value + in")])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let upstream = inputs.has("in") ? try inputs.int("in") : 0
        return NodeOutputs(["value": .int(try inputs.int("value") &+ upstream)])
    }
}

/// Sleeps `steps` × `step_ms`, reporting progress and checking cancellation between steps.
public struct DebugSleep: Node {
    public static let schema = NodeSchema(
        type: "DebugSleep", category: "debug", summary: "Waits in small steps, reporting progress; cancellable.",
        inputs: [InputSpec("steps", .int, default: .int(10), min: 0, doc: "Number of steps."),
                 InputSpec("step_ms", .int, default: .int(10), min: 0, max: 60_000, doc: "Milliseconds per step."),
                 InputSpec("in", .int, optional: true, doc: "Passed through to the output.")],
        outputs: [OutputSpec("value", .int, doc: "The linked input, or the number of steps.")])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let steps = try inputs.int("steps"), ms = try inputs.int("step_ms")
        for step in 0..<steps {
            try context.checkCancellation()
            usleep(UInt32(ms * 1000))
            context.progress(step: step + 1, total: steps, unit: "step")
        }
        return NodeOutputs(["value": .int(inputs.has("in") ? try inputs.int("in") : steps)])
    }
}

/// Writes `lines` lines of text to `path` atomically, pausing between lines; an output node.
public struct DebugWriteText: Node {
    public static let schema = NodeSchema(
        type: "DebugWriteText", category: "debug", summary: "Writes lines of text to a file, atomically and slowly.",
        inputs: [InputSpec("path", .string, doc: "File to write."),
                 InputSpec("lines", .int, default: .int(1), min: 0, doc: "Number of lines."),
                 InputSpec("line_ms", .int, default: .int(0), min: 0, max: 60_000, doc: "Milliseconds between lines."),
                 InputSpec("value", .int, optional: true, doc: "Integer written on every line.")],
        isOutput: true, outputFileParams: ["path"])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let lines = try inputs.int("lines"), ms = try inputs.int("line_ms")
        let value = inputs.has("value") ? try inputs.int("value") : 0
        try AtomicFile.write(to: URL(fileURLWithPath: try inputs.string("path"))) { temp in
            guard let handle = fopen(temp.path, "w") else {
                throw NodeError.invalidValue(port: "path", reason: "cannot create \(temp.path): \(String(cString: strerror(errno)))")
            }
            defer { fclose(handle) }
            for line in 0..<lines {
                try context.checkCancellation()
                fputs("\(line) \(value)\n", handle)
                fflush(handle)
                if ms > 0 { usleep(UInt32(ms * 1000)) }
                context.progress(step: line + 1, total: lines, unit: "line")
            }
            if lines == 0 { fputs("", handle) }
        }
        return .none
    }
}

/// A lazily generated stream of solid-colour frames.
public struct DebugFrames: Node {
    public static let schema = NodeSchema(
        type: "DebugFrames", category: "debug", summary: "Generates a stream of solid grey frames on demand.",
        inputs: [InputSpec("count", .int, default: .int(10), min: 0, doc: "Number of frames."),
                 InputSpec("width", .int, default: .int(8), min: 1, max: 8192, doc: "Frame width."),
                 InputSpec("height", .int, default: .int(8), min: 1, max: 8192, doc: "Frame height.")],
        outputs: [OutputSpec("frames", .frames)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let count = try inputs.int("count"), width = try inputs.int("width"), height = try inputs.int("height")
        let info = FrameStreamInfo(width: width, height: height, frameRate: (24, 1), frameCount: count)
        let frames = Frames(info: info) { CountingSource(count: count, width: width, height: height) }
        return NodeOutputs("frames", .frames, frames)
    }

    private final class CountingSource: FrameSource {
        let count: Int, width: Int, height: Int
        var index = 0
        init(count: Int, width: Int, height: Int) { (self.count, self.width, self.height) = (count, width, height) }
        func next() throws -> Frame? {
            guard index < count else { return nil }
            defer { index += 1 }
            let level = Float(index % 256) / 255
            return Frame(image: Tensor(repeating: level, shape: [3, height, width]), index: index, time: Double(index) / 24)
        }
    }
}

/// Pulls every frame of a stream and logs how many there were; an output node.
public struct DebugFrameSink: Node {
    public static let schema = NodeSchema(
        type: "DebugFrameSink", category: "debug", summary: "Consumes a frame stream, reporting progress per frame.",
        inputs: [InputSpec("frames", .frames, doc: "The stream to drain.")],
        isOutput: true)
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let frames = try inputs.frames("frames")
        let source = try frames.makeSource()
        var n = 0
        while try source.next() != nil {
            n += 1
            context.progress(step: n, total: frames.info.frameCount ?? 0, unit: "frame")
        }
        context.log("\(n) frames")
        return .none
    }
}

/// Fails with its `message`; tests the runtime's error path.
public struct DebugFail: Node {
    public static let schema = NodeSchema(
        type: "DebugFail", category: "debug", summary: "Always fails with the given message.",
        inputs: [InputSpec("message", .string, default: .string("failed on purpose"), doc: "Error message."),
                 InputSpec("in", .int, optional: true, doc: "Upstream integer (ignored).")],
        outputs: [OutputSpec("value", .int)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        throw NodeError.failed(try inputs.string("message"))
    }
}
