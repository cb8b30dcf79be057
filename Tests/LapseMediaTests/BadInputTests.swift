import Foundation
import LapseGraph
import LapseMedia
import LapseTensor
import LapseTestSupport
import Testing

@Suite("Bad input ends in an error naming the file and the reason, with no partial output")
struct BadInputTests {
    func expectError(_ body: () throws -> Any, mentions words: [String], sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        do {
            _ = try body()
            Issue.record("expected an error mentioning \(words)", sourceLocation: sourceLocation)
        } catch {
            let text = error.localizedDescription
            for word in words { #expect(text.contains(word), "\"\(text)\" should mention \(word)", sourceLocation: sourceLocation) }
        }
    }

    /// A PNG whose header claims 100000 x 100000 pixels (valid CRC), to prove sizes are checked before allocating.
    func hugePNG() -> Data {
        func crc32(_ bytes: [UInt8]) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for b in bytes {
                c ^= UInt32(b)
                for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            }
            return ~c
        }
        func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
        let body: [UInt8] = Array("IHDR".utf8) + be(100_000) + be(100_000) + [8, 2, 0, 0, 0]
        return Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + be(13) + body + be(crc32(body)))
    }

    @Test("missing, text-as-mp4, truncated, corrupt, audio-only, zero-frame and absurd inputs")
    func badInputs() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        func p(_ name: String) -> String { dir.appendingPathComponent(name).path }

        expectError({ try MediaIO.loadVideo(path: p("nope.mp4")) }, mentions: ["nope.mp4", "not found"])
        expectError({ try MediaIO.loadImage(path: p("nope.png")) }, mentions: ["nope.png", "not found"])

        try Data("this is not a video\n".utf8).write(to: URL(fileURLWithPath: p("text.mp4")))
        expectError({ try MediaIO.loadVideo(path: p("text.mp4")) }, mentions: ["text.mp4", "Invalid data"])

        try MediaIO.saveVideo(try MediaIO.synthesize("testsrc2=size=64x48:rate=25", frameCount: 10), path: p("ok.mp4"),
                              options: VideoEncodingOptions(preset: "ultrafast"))
        let whole = try Data(contentsOf: URL(fileURLWithPath: p("ok.mp4")))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: p("half.mp4")))
        expectError({ try MediaIO.loadVideo(path: p("half.mp4")).collect() }, mentions: ["half.mp4"])

        let astronaut = try Data(contentsOf: URL(fileURLWithPath: try MediaTestSupport.sample("astronaut.png")))
        try astronaut.prefix(astronaut.count / 3).write(to: URL(fileURLWithPath: p("cut.png")))
        expectError({ try MediaIO.loadImage(path: p("cut.png")) }, mentions: ["cut.png", "PNG"])
        var corrupt = astronaut
        for i in stride(from: 200, to: 4000, by: 7) { corrupt[i] ^= 0x5A }
        try corrupt.write(to: URL(fileURLWithPath: p("corrupt.png")))
        expectError({ try MediaIO.loadImage(path: p("corrupt.png")) }, mentions: ["corrupt.png"])

        try hugePNG().write(to: URL(fileURLWithPath: p("huge.png")))
        expectError({ try MediaIO.loadImage(path: p("huge.png")) }, mentions: ["huge.png", "exceeds user limit"])

        try MediaTestSupport.ffmpeg(["-f", "lavfi", "-i", "sine", "-t", "0.2", p("sound.wav")])
        expectError({ try MediaIO.loadVideo(path: p("sound.wav")) }, mentions: ["sound.wav", "no video"])

        try MediaTestSupport.ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "0", "-c:v", "ffv1", p("empty.mkv")])
        // ffmpeg writes such a file with an unterminated header, so it is refused while opening.
        expectError({ try MediaIO.loadVideo(path: p("empty.mkv")).collect() }, mentions: ["empty.mkv", "before any frame"])
        // Selecting past the end is an empty stream, which a saver refuses.
        try MediaIO.saveImages(try MediaIO.synthesize("testsrc2=size=8x8", frameCount: 2), path: p("s_%03d.png"))
        let none = try MediaIO.loadVideo(path: p("s_%03d.png"), start: 5)
        expectError({ try MediaIO.saveVideo(none, path: p("none.mkv")) }, mentions: ["none.mkv", "no frames"])
        #expect(!FileManager.default.fileExists(atPath: p("none.mkv")))
    }

    @Test("a missing output folder is created")
    func createsOutputFolder() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let frames = try MediaIO.synthesize("testsrc2=size=32x32:rate=25", frameCount: 2)
        let video = dir.appendingPathComponent("new/folder/out.mkv").path
        try MediaIO.saveVideo(frames, path: video)
        #expect(FileManager.default.fileExists(atPath: video))
        let images = try MediaIO.saveImages(frames, path: dir.appendingPathComponent("seq/x_%03d.png").path)
        #expect(images.count == 2 && images.allSatisfy { FileManager.default.fileExists(atPath: $0) })
    }

    @Test("unwritable outputs, empty streams and bad settings leave no file behind")
    func badOutputs() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let frames = try MediaIO.synthesize("testsrc2=size=32x32:rate=25", frameCount: 3)
        // A file standing where the output folder should be: an error naming both, and nothing written.
        let blocker = dir.appendingPathComponent("blocker")
        try Data("not a folder".utf8).write(to: blocker)
        expectError({ try MediaIO.saveVideo(frames, path: blocker.appendingPathComponent("out.mp4").path) },
                    mentions: ["out.mp4", "not a folder"])
        expectError({ try MediaIO.saveImages(frames, path: blocker.appendingPathComponent("sub/x_%03d.png").path) },
                    mentions: ["x_001.png", "cannot create folder"])
        try FileManager.default.removeItem(at: blocker)
        let out = dir.appendingPathComponent("empty.mp4").path
        expectError({ try MediaIO.saveVideo(Frames(frames: []), path: out) }, mentions: ["empty.mp4", "no frames"])
        expectError({ try MediaIO.saveVideo(frames, path: dir.appendingPathComponent("x.avi").path) }, mentions: ["x.avi", "codec"])
        // A frame of another size part way: error, and the partial file is removed.
        let mixed = Frames(frames: [Frame(image: Tensor(zeros: [3, 8, 8])), Frame(image: Tensor(zeros: [3, 6, 8]), index: 1)])
        expectError({ try MediaIO.saveVideo(mixed, path: out) }, mentions: ["empty.mp4", "6"])
        // Cancellation part way through an encode (Ctrl-C reaches savers through the progress callback).
        let cancelled = dir.appendingPathComponent("cancelled.mkv").path
        #expect(throws: CancellationError.self) {
            try MediaIO.saveVideo(try MediaIO.synthesize("testsrc2=size=32x32:rate=25", frameCount: 50), path: cancelled,
                                  progress: { done, _ in if done == 5 { throw CancellationError() } })
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(leftovers.isEmpty, "left behind: \(leftovers)")
    }
}
