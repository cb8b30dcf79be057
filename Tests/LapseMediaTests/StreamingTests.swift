import Foundation
import LapseGraph
import LapseMedia
import LapseTensor
import LapseTestSupport
import Synchronization
import Testing

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

        let baseline = TensorStorage.liveCount
        let peak = Mutex(0)
        let seen = Mutex(0)
        let loaded = try MediaIO.loadVideo(path: input)
        let filtered = try MediaIO.filter(loaded, graph: "hflip,eq=contrast=1.2")
        let watched = filtered.map { frame in
            let live = TensorStorage.liveCount
            peak.withLock { $0 = max($0, live) }
            seen.withLock { $0 += 1 }
            return frame
        }
        try MediaIO.saveVideo(watched, path: output, options: VideoEncodingOptions(preset: "ultrafast"))
        #expect(seen.withLock { $0 } == count)
        // Other suites may allocate tensors concurrently, hence the generous margin; a pipeline that buffered the
        // stream would hold thousands.
        let growth = peak.withLock { $0 } - baseline
        #expect(growth <= 64, "live tensor storages grew by \(growth) while streaming \(count) frames")
        let back = try MediaIO.loadVideo(path: output)
        #expect(back.info.frameCount == count)
    }
}
