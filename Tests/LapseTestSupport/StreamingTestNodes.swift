import Foundation
import LapseGraph
import LapseTensor

/// Test-only node types for progress accounting: a stream whose frames cost a known time to produce, a stage that
/// costs a known time per frame and reports an inner `tile` count per frame (as `Upscale` does), and a node that
/// holds a known amount of resident memory.
public enum StreamingTestNodes: NodePlugin {
    public static let name = "StreamingTestNodes"

    public static func register(into registry: NodeRegistry) throws {
        for node: any Node.Type in [TestSlowFrames.self, TestTiledMap.self, TestHoldMemory.self] {
            try registry.register(node, source: name)
        }
    }

    /// A fresh registry with the synthetic nodes and these.
    public static func registry() -> NodeRegistry {
        let registry = SyntheticNodes.registry()
        try! register(into: registry)
        return registry
    }
}

/// A lazy stream of `count` 4×4 frames, each taking `sleep_ms` to produce; reports no progress of its own.
public struct TestSlowFrames: Node {
    public static let schema = NodeSchema(type: "TestSlowFrames", category: "test", summary: "Slow lazy frames.",
        inputs: [InputSpec("count", .int, default: .int(8), min: 0, max: 10_000, doc: "Frames."),
                 InputSpec("sleep_ms", .int, default: .int(20), min: 0, max: 10_000, doc: "Time per frame."),
                 InputSpec("fail_at", .int, default: .int(-1), min: -1, max: 10_000,
                           doc: "Index of the frame whose production throws; -1 never.")],
        outputs: [OutputSpec("frames", .frames)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let count = try inputs.int("count")
        let sleep = UInt32(try inputs.int("sleep_ms")) * 1000
        let failAt = try inputs.int("fail_at")
        let frames = Frames(info: FrameStreamInfo(width: 4, height: 4, frameCount: count)) {
            var index = 0
            return ClosureFrameSource {
                guard index < count else { return nil }
                if index == failAt { throw NodeError.failed("frame \(index) cannot be made") }
                usleep(sleep)
                defer { index += 1 }
                return Frame(image: Tensor(repeating: 0.5, shape: [3, 4, 4]), index: index)
            }
        }
        return NodeOutputs(["frames": .object(frames)])
    }
}

/// Passes frames through lazily, spending `sleep_ms` on each and reporting `tile 1/1` per frame.
public struct TestTiledMap: Node {
    public static let schema = NodeSchema(type: "TestTiledMap", category: "test", summary: "Slow per-frame stage.",
        inputs: [InputSpec("frames", .frames, doc: "In."),
                 InputSpec("sleep_ms", .int, default: .int(10), min: 0, max: 10_000, doc: "Time per frame.")],
        outputs: [OutputSpec("frames", .frames)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let sleep = UInt32(try inputs.int("sleep_ms")) * 1000
        return NodeOutputs(["frames": .object(try inputs.frames("frames").map { frame in
            usleep(sleep)
            context.progress(step: 1, total: 1, unit: "tile")
            return frame
        })])
    }
}

/// Keeps `mib` MiB resident (every page written) for `hold_ms`, then frees it; outputs `mib`.
public struct TestHoldMemory: Node {
    public static let schema = NodeSchema(type: "TestHoldMemory", category: "test", summary: "Holds memory.",
        inputs: [InputSpec("mib", .int, default: .int(64), min: 1, max: 4096, doc: "MiB to hold."),
                 InputSpec("hold_ms", .int, default: .int(300), min: 0, max: 60_000, doc: "How long.")],
        outputs: [OutputSpec("value", .int)])
    public init() {}
    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let mib = try inputs.int("mib")
        let bytes = mib << 20
        let memory = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { memory.deallocate() }
        memset(memory, 1, bytes)
        usleep(UInt32(try inputs.int("hold_ms")) * 1000)
        return NodeOutputs(["value": .int(min(mib, 1000))])
    }
}
