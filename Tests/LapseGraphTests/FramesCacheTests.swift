import Foundation
import LapseGraph
import LapseTestSupport
import Testing

/// How `ResultCache` keeps streams on disk: recorded while a consumer drains them, read back exactly, bounded in size.
@Suite("Result cache: frames on disk")
struct FramesCacheTests {
    static func streamGraph(_ g: String, count: Int = 5) -> String {
        graph(#"""
            "gen": {"type": "TestFrameGenerator", "params": {"count": \#(count), "group": "frames-cache"}},
            "sink": {"type": "TestFrameSink", "inputs": {"frames": "gen"}, "params": {"group": "\#(g)"}}
            """#)
    }

    static func entries(_ dir: URL) -> [String] {
        let walker = FileManager.default.enumerator(atPath: dir.path)
        var found: [String] = []
        while let relative = walker?.nextObject() as? String {
            if relative.hasSuffix(".lapse") { found.append(relative) }
        }
        return found
    }

    @Test func drainedStreamIsWrittenAndReadBackExactly() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let g1 = uniqueGroup()
        let first = try runGraph(Self.streamGraph(g1), options: ExecutionOptions(cache: ResultCache(directory: dir)))
        #expect(Set(first.executed) == ["gen", "sink"])
        #expect(SyntheticState.output(g1) == 5)
        #expect(Self.entries(dir).count == 1, "written as the sink drained the stream")

        // A fresh cache, as in a new process: the generator does not run, the sink gets the same frames.
        let g2 = uniqueGroup()
        let second = try runGraph(Self.streamGraph(g2), options: ExecutionOptions(cache: ResultCache(directory: dir)))
        #expect(second.executed == ["sink"] && second.cached == ["gen"])
        #expect(SyntheticState.output(g2) == 5)
        let key = try #require(first.keys["gen"])
        guard case .hit(let outputs) = ResultCache(directory: dir).lookup(key, registry: SyntheticNodes.registry()),
              case .object(let object)? = outputs.values["frames"], let frames = object as? Frames else {
            Issue.record("no entry for gen")
            return
        }
        #expect(frames.info.width == 4 && frames.info.height == 4 && frames.info.frameCount == 5)
        let read = try frames.collect()
        #expect(read.map(\.index) == [0, 1, 2, 3, 4])
        for frame in read {
            #expect(frame.image.shape == [3, 4, 4])
            #expect(frame.image.scalars == [Float](repeating: Float(frame.index % 7) / 7, count: 48), "bit-exact")
            #expect(frame.time == nil && frame.color == .rgb8)
        }
    }

    @Test func streamOverTheEntryLimitIsNotWritten() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let logs = LogBox()
        let sink = ClosureEventSink { event in if case .log(_, let message) = event { logs.append(message) } }
        let g = uniqueGroup()
        // Two frames of 40 + 192 bytes fit in 500; the third does not.
        let cache = ResultCache(directory: dir, maxEntryBytes: 500)
        _ = try runGraph(Self.streamGraph(g, count: 6), options: ExecutionOptions(cache: cache, events: sink))
        #expect(SyntheticState.output(g) == 6, "the consumer still gets every frame")
        #expect(Self.entries(dir).isEmpty)
        #expect(FileManager.default.enumerator(atPath: dir.path)?.allObjects.contains { ($0 as? String)?.contains(".tmp-") == true } == false,
                "no temporary file is left")
        #expect(logs.lines.contains("not cached on disk: the frames passed the 500 bytes limit per entry at frame 3"), "\(logs.lines)")
    }

    @Test func truncatedOrForeignEntriesAreRefused() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let g = uniqueGroup()
        let first = try runGraph(Self.streamGraph(g, count: 3), options: ExecutionOptions(cache: ResultCache(directory: dir)))
        let key = try #require(first.keys["gen"])
        let cache = ResultCache(directory: dir)
        let file = try #require(cache.fileURL(for: key))
        let bytes = try Data(contentsOf: file)
        #expect(bytes.starts(with: Data("lapse-cache-v3 ".utf8)))
        try bytes.prefix(bytes.count - 100).write(to: file)
        guard case .corrupt(let path, let reason) = cache.lookup(key, registry: SyntheticNodes.registry()) else {
            Issue.record("a truncated entry was used")
            return
        }
        #expect(path == file.path && reason.contains("checksum mismatch"))
        #expect(!FileManager.default.fileExists(atPath: file.path), "removed")
        // An intact entry stored under another key's name is not used for that key.
        _ = try runGraph(Self.streamGraph(uniqueGroup(), count: 3), options: ExecutionOptions(cache: ResultCache(directory: dir)))
        let other = String(repeating: "0", count: 64)
        let otherFile = try #require(cache.fileURL(for: other))
        try FileManager.default.createDirectory(at: otherFile.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: file, to: otherFile)
        guard case .corrupt(_, let foreign) = ResultCache(directory: dir).lookup(other, registry: SyntheticNodes.registry()) else {
            Issue.record("an entry of another key was used")
            return
        }
        #expect(foreign.contains("belongs to another key"), "\(foreign)")
    }
}
