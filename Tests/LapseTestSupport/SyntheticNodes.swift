import Foundation
import LapseGraph
import LapseTensor
import Synchronization

/// Test-only node types for exercising the graph runtime: values, counting, barriers, slow steps, cancellation
/// triggers and frame streams with a dedicated live-buffer counter. Tests isolate themselves with a `group`
/// parameter, so parallel tests never share state.
public enum SyntheticNodes: NodePlugin {
    public static let name = "SyntheticNodes"

    public static func register(into registry: NodeRegistry) throws {
        for node: any Node.Type in [TestValue.self, TestAdd.self, TestOutput.self, TestBarrier.self, TestSlow.self,
                                    TestFail.self, TestLoad.self, TestWriteFile.self, TestFrameGenerator.self,
                                    TestFramePassthrough.self, TestFrameSink.self, TestTwoOutputs.self] {
            try registry.register(node, source: name)
        }
    }

    /// A fresh registry holding only the synthetic nodes.
    public static func registry() -> NodeRegistry {
        let registry = NodeRegistry()
        try! register(into: registry)
        return registry
    }
}

/// Shared, group-keyed state the synthetic nodes record into.
public enum SyntheticState {
    private static let executions = Mutex<[String: [String]]>([:])
    private static let outputs = Mutex<[String: Int]>([:])
    private static let tokens = Mutex<[String: CancellationToken]>([:])
    private static let barriers = Mutex<[String: Int]>([:])
    private static let peaks = Mutex<[String: Int]>([:])

    /// Node ids that ran in `group`, in start order.
    public static func executed(_ group: String) -> [String] { executions.withLock { $0[group] ?? [] } }
    static func record(_ group: String, _ id: String) { executions.withLock { $0[group, default: []].append(id) } }

    /// The value a `TestOutput` received.
    public static func output(_ group: String) -> Int? { outputs.withLock { $0[group] } }
    static func setOutput(_ group: String, _ value: Int) { outputs.withLock { $0[group] = value } }

    /// The token `TestSlow` cancels when it reaches `cancel_at`.
    public static func setToken(_ token: CancellationToken, for group: String) { tokens.withLock { $0[group] = token } }
    static func token(_ group: String) -> CancellationToken? { tokens.withLock { $0[group] } }

    /// Arrives at the group's rendezvous and waits until `parties` have arrived; false on timeout.
    static func rendezvous(_ group: String, parties: Int, timeout: TimeInterval) -> Bool {
        barriers.withLock { $0[group, default: 0] += 1 }
        let deadline = Date().addingTimeInterval(timeout)
        while barriers.withLock({ $0[group, default: 0] }) < parties {
            if Date() > deadline { return false }
            usleep(200)
        }
        return true
    }

    /// Highest number of tracked frame buffers alive at once, as seen by `TestFrameSink`.
    public static func peakLiveBuffers(_ group: String) -> Int? { peaks.withLock { $0[group] } }
    static func setPeak(_ group: String, _ value: Int) { peaks.withLock { $0[group] = value } }
}

/// Frame memory counted separately from every other tensor, so the streaming test is immune to parallel tests.
public final class TrackedBuffer: @unchecked Sendable {
    private static let live = Atomic<Int>(0)
    /// Tracked buffers alive now.
    public static var liveCount: Int { live.load(ordering: .relaxed) }

    let pointer: UnsafeMutablePointer<Float>
    let count: Int

    init(count: Int) {
        pointer = .allocate(capacity: count)
        pointer.initialize(repeating: 0, count: count)
        self.count = count
        Self.live.add(1, ordering: .relaxed)
    }

    deinit {
        pointer.deallocate()
        Self.live.subtract(1, ordering: .relaxed)
    }

    /// A tensor whose memory is a new tracked buffer.
    static func tensor(_ shape: [Int], fill: Float) -> Tensor {
        let buffer = TrackedBuffer(count: Tensor.elementCount(shape))
        buffer.pointer.update(repeating: fill, count: buffer.count)
        return Tensor(shape: shape, storage: TensorStorage(borrowing: buffer.pointer, count: buffer.count, owner: buffer))
    }
}

private let groupInput = InputSpec("group", .string, default: .string(""), doc: "Isolates test state.")

private func recordRun(_ inputs: NodeInputs, _ context: NodeContext) throws -> String {
    let group = try inputs.string("group")
    SyntheticState.record(group, context.nodeID)
    return group
}

/// Outputs its `value`.
public struct TestValue: Node {
    public static let schema = NodeSchema(type: "TestValue", category: "test", summary: "An integer.",
        inputs: [InputSpec("value", .int, default: .int(0), min: -1000, max: 1000, doc: "The value."), groupInput],
        outputs: [OutputSpec("value", .int)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        _ = try recordRun(inputs, context)
        return NodeOutputs(["value": .int(try inputs.int("value"))])
    }
}

/// `a + b`.
public struct TestAdd: Node {
    public static let schema = NodeSchema(type: "TestAdd", category: "test", summary: "Adds two integers.",
        inputs: [InputSpec("a", .int, doc: "First."), InputSpec("b", .int, default: .int(0), doc: "Second."),
                 InputSpec("mode", .string, default: .string("add"), allowed: ["add", "sub"], doc: "Operation."),
                 InputSpec("scale", .float, default: .float(1), min: 0, max: 10, doc: "Unused factor."),
                 InputSpec("flag", .bool, default: .bool(false), doc: "Unused flag."), groupInput],
        outputs: [OutputSpec("sum", .int)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        _ = try recordRun(inputs, context)
        let a = try inputs.int("a"), b = try inputs.int("b")
        return NodeOutputs(["sum": .int(try inputs.string("mode") == "add" ? a + b : a - b)])
    }
}

/// Two outputs, for "link needs an output name" checks.
public struct TestTwoOutputs: Node {
    public static let schema = NodeSchema(type: "TestTwoOutputs", category: "test", summary: "Two integers.",
        inputs: [groupInput], outputs: [OutputSpec("first", .int), OutputSpec("second", .int)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        _ = try recordRun(inputs, context)
        return NodeOutputs(["first": .int(1), "second": .int(2)])
    }
}

/// An output node remembering the value it received.
public struct TestOutput: Node {
    public static let schema = NodeSchema(type: "TestOutput", category: "test", summary: "Records a value.",
        inputs: [InputSpec("value", .int, optional: true, doc: "Recorded."), groupInput], isOutput: true)
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let group = try recordRun(inputs, context)
        if inputs.has("value") { SyntheticState.setOutput(group, try inputs.int("value")) }
        return .none
    }
}

/// Signals the group's barrier, then waits for the other party; fails after `timeout_ms` if it never comes,
/// which is what happens when the two branches do not run at the same time.
public struct TestBarrier: Node {
    public static let schema = NodeSchema(type: "TestBarrier", category: "test", summary: "Two-party rendezvous.",
        inputs: [InputSpec("timeout_ms", .int, default: .int(5000), doc: "Wait limit."), groupInput],
        outputs: [OutputSpec("value", .int)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let group = try recordRun(inputs, context)
        // Both parties pass only if both are inside `run` at the same time.
        guard SyntheticState.rendezvous(group, parties: 2, timeout: Double(try inputs.int("timeout_ms")) / 1000) else {
            throw NodeError.failed("barrier timed out: the other branch was not running concurrently")
        }
        return NodeOutputs(["value": .int(1)])
    }
}

/// `steps` short steps with progress; cancels the group's token when reaching `cancel_at` (if ≥ 0).
public struct TestSlow: Node {
    public static let schema = NodeSchema(type: "TestSlow", category: "test", summary: "Slow cancellable work.",
        inputs: [InputSpec("steps", .int, default: .int(10), doc: "Steps."),
                 InputSpec("cancel_at", .int, default: .int(-1), doc: "Step at which to cancel the run."),
                 InputSpec("in", .int, optional: true, doc: "Passed through."), groupInput],
        outputs: [OutputSpec("value", .int)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let group = try recordRun(inputs, context)
        let steps = try inputs.int("steps"), cancelAt = try inputs.int("cancel_at")
        for step in 0..<steps {
            try context.checkCancellation()
            if step == cancelAt { SyntheticState.token(group)?.cancel() }
            usleep(1000)
            context.progress(step: step + 1, total: steps)
        }
        return NodeOutputs(["value": .int(inputs.has("in") ? try inputs.int("in") : steps)])
    }
}

/// Always throws.
public struct TestFail: Node {
    public static let schema = NodeSchema(type: "TestFail", category: "test", summary: "Fails.",
        inputs: [InputSpec("in", .int, optional: true, doc: "Ignored."), groupInput], outputs: [OutputSpec("value", .int)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        _ = try recordRun(inputs, context)
        throw NodeError.failed("synthetic failure")
    }
}

/// Reads the size of an input file (exercises `inputFileParams`).
public struct TestLoad: Node {
    public static let schema = NodeSchema(type: "TestLoad", category: "test", summary: "File size.",
        inputs: [InputSpec("path", .string, doc: "Input file."), groupInput],
        outputs: [OutputSpec("value", .int)], inputFileParams: ["path"])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        _ = try recordRun(inputs, context)
        let attributes = try FileManager.default.attributesOfItem(atPath: try inputs.string("path"))
        return NodeOutputs(["value": .int((attributes[.size] as? NSNumber)?.intValue ?? 0)])
    }
}

/// An output node writing `value` to `path` through `AtomicFile`, one line per step with cancellation checks.
public struct TestWriteFile: Node {
    public static let schema = NodeSchema(type: "TestWriteFile", category: "test", summary: "Writes a file slowly.",
        inputs: [InputSpec("path", .string, doc: "Output."), InputSpec("value", .int, default: .int(0), doc: "Written."),
                 InputSpec("lines", .int, default: .int(3), doc: "Lines."), groupInput],
        isOutput: true, outputFileParams: ["path"])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        _ = try recordRun(inputs, context)
        let value = try inputs.int("value"), lines = try inputs.int("lines")
        try AtomicFile.write(to: URL(fileURLWithPath: try inputs.string("path"))) { temp in
            var text = ""
            for line in 0..<lines {
                try context.checkCancellation()
                text += "\(line) \(value)\n"
                try Data(text.utf8).write(to: temp)
                usleep(1000)
            }
        }
        return .none
    }
}

/// A lazy stream of `count` tracked frames.
public struct TestFrameGenerator: Node {
    public static let schema = NodeSchema(type: "TestFrameGenerator", category: "test", summary: "Tracked frames.",
        inputs: [InputSpec("count", .int, default: .int(10), doc: "Frames."), groupInput],
        outputs: [OutputSpec("frames", .frames)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        _ = try recordRun(inputs, context)
        let count = try inputs.int("count")
        let frames = Frames(info: FrameStreamInfo(width: 4, height: 4, frameCount: count)) { Generator(count: count) }
        return NodeOutputs(["frames": .object(frames)])
    }

    private final class Generator: FrameSource {
        let count: Int
        var index = 0
        init(count: Int) { self.count = count }
        func next() throws -> Frame? {
            guard index < count else { return nil }
            defer { index += 1 }
            return Frame(image: TrackedBuffer.tensor([3, 4, 4], fill: Float(index % 7) / 7), index: index)
        }
    }
}

/// Copies each frame into a new tracked buffer, adding 0.01.
public struct TestFramePassthrough: Node {
    public static let schema = NodeSchema(type: "TestFramePassthrough", category: "test", summary: "Copies frames.",
        inputs: [InputSpec("frames", .frames, doc: "In."), groupInput], outputs: [OutputSpec("frames", .frames)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        _ = try recordRun(inputs, context)
        let mapped = try inputs.frames("frames").map { frame in
            var out = frame
            let first = frame.image.withUnsafeBufferPointer { $0[0] }
            out.image = TrackedBuffer.tensor(frame.image.shape, fill: first + 0.01)
            return out
        }
        return NodeOutputs(["frames": .object(mapped)])
    }
}

/// Drains a stream, recording the frame count as the group's output and the peak of live tracked buffers.
public struct TestFrameSink: Node {
    public static let schema = NodeSchema(type: "TestFrameSink", category: "test", summary: "Counts frames.",
        inputs: [InputSpec("frames", .frames, doc: "In."), groupInput], isOutput: true)
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let group = try recordRun(inputs, context)
        let source = try inputs.frames("frames").makeSource()
        var count = 0, peak = 0
        while let frame = try source.next() {
            count += 1
            peak = max(peak, TrackedBuffer.liveCount)
            _ = frame
            context.progress(step: count, total: 0, unit: "frame")
        }
        SyntheticState.setOutput(group, count)
        SyntheticState.setPeak(group, peak)
        return .none
    }
}
