import Foundation
import LapseGraph
import LapseMedia
import LapseTensor
import LapseTestSupport
import Synchronization
import Testing

/// Remembers every frame storage that passes a point of a pipeline without keeping it alive, and reports how many
/// are still alive. Unlike `TensorStorage.liveCount`, this ignores tensors other tests allocate in parallel.
final class FrameWatcher: @unchecked Sendable {
    private final class WeakStorage {
        weak var storage: TensorStorage?
        init(_ storage: TensorStorage) { self.storage = storage }
    }
    private let lock = NSLock()
    private var seen: [WeakStorage] = []
    private(set) var peakAlive = 0
    private(set) var count = 0

    func watch(_ frames: Frames) -> Frames {
        frames.map { [self] frame in
            lock.withLock {
                seen.append(WeakStorage(frame.image.storage))
                count += 1
                // Drop entries whose storage is gone, so counting stays cheap over thousands of frames.
                seen.removeAll { $0.storage == nil }
                peakAlive = max(peakAlive, seen.count)
            }
            return frame
        }
    }
}

@Suite("Streaming: decode → filter → encode holds a bounded number of frames")
struct StreamingTests {
    @Test("3,000 frames through LoadVideo → Filter → SaveVideo keep live frames bounded")
    func boundedLiveFrames() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("long.mkv").path
        let output = dir.appendingPathComponent("long.mp4").path
        let count = 3000
        try MediaIO.saveVideo(try MediaIO.synthesize("testsrc2=size=64x48:rate=25", frameCount: count), path: input)

        let watcher = FrameWatcher()
        let decoded = watcher.watch(try MediaIO.loadVideo(path: input))
        let filtered = watcher.watch(try MediaIO.filter(decoded, graph: "hflip,eq=contrast=1.2"))
        try MediaIO.saveVideo(filtered, path: output, options: VideoEncodingOptions(preset: "ultrafast"))
        #expect(watcher.count == 2 * count)
        // The frame being decoded, the one in flight to the encoder and at most a couple held by a stage.
        #expect(watcher.peakAlive <= 4, "up to \(watcher.peakAlive) frames were alive at once while streaming \(count)")
        let back = try MediaIO.loadVideo(path: output)
        #expect(back.info.frameCount == count)
    }
}
