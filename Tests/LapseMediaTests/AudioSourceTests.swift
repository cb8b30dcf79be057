import Foundation
import LapseGraph
import LapseMedia
import LapseTestSupport
import MediaPlugin
import Testing

/// `SaveVideo.audio_from = "source"`: keep the sound of the file the frames came from, whatever nodes sit between.
@Suite("SaveVideo audio_from source")
struct AudioSourceTests {
    let dir = try! TestSupport.makeTemporaryDirectory()
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func saveVideo(_ frames: Frames, to output: String, context: TestNodeContext) throws {
        let registry = NodeRegistry()
        try MediaPlugin.register(into: registry)
        let node = try #require(registry.entry(for: "SaveVideo")).nodeType.init()
        _ = try node.run(NodeInputs(["frames": .object(frames), "path": .string(output), "fps": .float(0),
                                     "codec": .string("auto"), "crf": .int(18), "preset": .string("ultrafast"),
                                     "audio_from": .string("source"), "pix_fmt": .string("auto")]),
                         context: context)
    }

    func streamTypes(_ file: String) throws -> [String] {
        let out = try MediaTestSupport.run("ffprobe", ["-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", file])
        return String(decoding: out, as: UTF8.self).split(separator: "\n").map(String.init).sorted()
    }

    @Test("a source with sound keeps it through a frame transform")
    func keepsAudio() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = path("av.mp4")
        try MediaTestSupport.ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
                                     "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", source])
        // A transform between decoder and encoder (as Upscale is) keeps the stream's source path.
        let flipped = try MediaIO.loadVideo(path: source).map { $0 }
        try saveVideo(flipped, to: path("out.mp4"), context: TestNodeContext())
        #expect(try streamTypes(path("out.mp4")) == ["audio", "video"])
    }

    @Test("a silent source writes video only, with a note")
    func silentSource() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = path("silent.mp4")
        try MediaTestSupport.ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-t", "0.4",
                                     "-c:v", "libx264", "-preset", "ultrafast", source])
        let context = TestNodeContext()
        try saveVideo(try MediaIO.loadVideo(path: source), to: path("out.mp4"), context: context)
        #expect(try streamTypes(path("out.mp4")) == ["video"])
        #expect(context.logs.contains { $0.contains("no audio stream") })
    }
}
