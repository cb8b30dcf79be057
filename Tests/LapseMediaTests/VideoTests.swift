import Foundation
import LapseGraph
import LapseMedia
import LapseTensor
import LapseTestSupport
import Testing

@Suite("Video: libav decode, encode and round trips", .serialized)
struct VideoTests {
    let dir: URL
    init() throws { dir = try TestSupport.makeTemporaryDirectory() }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func clip(_ size: String = "64x48", frames: Int = 12) throws -> Frames {
        try MediaIO.synthesize("testsrc2=size=\(size):rate=25", frameCount: frames)
    }

    @Test("lossless FFV1 and x264 RGB round trips are exact; counts and timestamps kept")
    func losslessRoundTrips() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = try clip(frames: 10)
        let original = try source.collect()
        for (name, codec) in [("a.mkv", "ffv1"), ("b.mp4", "h264rgb")] {
            try MediaIO.saveVideo(source, path: path(name), options: VideoEncodingOptions(codec: codec))
            let loaded = try MediaIO.loadVideo(path: path(name))
            #expect(loaded.info.width == 64 && loaded.info.height == 48)
            #expect(loaded.info.fps == 25)
            let back = try loaded.collect()
            #expect(back.count == original.count, "\(codec)")
            for (a, b) in zip(original, back) {
                #expect(MediaTestSupport.bytes8(a) == MediaTestSupport.bytes8(b), "\(codec) frame \(a.index)")
                #expect(abs((b.time ?? -1) - Double(a.index) / 25) < 1e-6, "\(codec) time of frame \(a.index)")
            }
        }
    }

    @Test("16-bit frames survive FFV1 exactly")
    func sixteenBitFFV1() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        var values: [Float] = []
        for i in 0..<(3 * 6 * 8) {
            let code = (i * 40_503) % 65_536
            values.append(Float(code) / 65_535)
        }
        let frame = Frame(image: Tensor(shape: [3, 6, 8], data: values), color: ColorInfo(matrix: "rgb", range: "full", bitDepth: 16))
        try MediaIO.saveVideo(Frames(frames: [frame, frame]), path: path("deep.mkv"))
        let back = try #require(try MediaIO.loadVideo(path: path("deep.mkv")).collect().first)
        #expect(back.color.bitDepth == 16)
        #expect(back.image.scalars.map { ($0 * 65535).rounded() } == values.map { ($0 * 65535).rounded() })
    }

    @Test("H.264 yuv444p at crf 0 reaches at least 45 dB PSNR")
    func h264Yuv444() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = try clip(frames: 6)
        try MediaIO.saveVideo(source, path: path("c.mp4"), options: VideoEncodingOptions(crf: 0, preset: "ultrafast", pixelFormat: "yuv444p"))
        let back = try MediaIO.loadVideo(path: path("c.mp4")).collect()
        let original = try source.collect()
        #expect(back.count == 6)
        for (a, b) in zip(original, back) {
            let psnr = MediaTestSupport.psnr(a.image, b.image)
            #expect(psnr >= 45, "frame \(a.index): \(psnr) dB")
        }
    }

    @Test("a test card through yuv420p BT.709 limited and back is within 1 code value of ffmpeg")
    func colourMatchesFFmpeg() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let card = path("card.png")
        try MediaTestSupport.ffmpeg(["-f", "lavfi", "-i", "smptehdbars=size=64x48", "-frames:v", "1", card])
        let frames = try MediaIO.loadImage(path: card)
        try MediaIO.saveVideo(frames, path: path("card.mp4"), options: VideoEncodingOptions(crf: 0, preset: "ultrafast"))
        let flags = "bicubic+accurate_rnd+full_chroma_int"
        // Forward: our YUV (x264 at crf 0 is lossless, so decoding gives exactly what we encoded) vs ffmpeg's conversion.
        let ours = try MediaTestSupport.ffmpeg(["-i", path("card.mp4"), "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        let reference = try MediaTestSupport.ffmpeg(["-i", card, "-vf",
            "scale=out_color_matrix=bt709:out_range=tv:flags=\(flags),format=yuv420p", "-f", "rawvideo", "-"])
        #expect(ours.count == reference.count && ours.count == 64 * 48 * 3 / 2)
        let forward = zip(ours, reference).map { abs(Int($0) - Int($1)) }.max() ?? 99
        #expect(forward <= 1, "RGB → YUV max difference \(forward)")
        // Backward: our decode of that YUV to RGB vs ffmpeg's, both told BT.709 limited.
        let decoded = try #require(try MediaIO.loadVideo(path: path("card.mp4")).collect().first)
        #expect(decoded.color.matrix == "bt709" && decoded.color.range == "limited")
        let back = try MediaTestSupport.ffmpeg(["-i", path("card.mp4"), "-vf",
            "scale=in_color_matrix=bt709:in_range=tv:flags=bicubic+full_chroma_int+full_chroma_inp,format=rgb24", "-f", "rawvideo", "-"])
        let backward = zip(MediaTestSupport.bytes8(decoded), back).map { abs(Int($0) - Int($1)) }.max() ?? 99
        #expect(backward <= 1, "YUV → RGB max difference \(backward)")
    }

    @Test("GIF → mp4 keeps every frame; odd sizes are padded to even")
    func gifToMP4() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let gif = try MediaTestSupport.sample("no_time_for_that_tiny.gif")
        let expected = try MediaTestSupport.run("ffprobe", ["-v", "error", "-count_frames", "-select_streams", "v:0",
            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", gif])
        let count = Int(String(decoding: expected, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        let frames = try MediaIO.loadVideo(path: gif)
        #expect(try frames.collect().count == count)
        let notes = try MediaIO.saveVideo(frames, path: path("gif.mp4"))
        #expect(notes.contains { $0.contains("14x25") })
        let back = try MediaIO.loadVideo(path: path("gif.mp4"))
        #expect(back.info.width == 14 + 0 || back.info.width == 14)
        #expect(try back.collect().count == count)
        // And back to GIF through palettegen/paletteuse.
        try MediaIO.saveVideo(frames, path: path("again.gif"))
        #expect(try MediaIO.loadVideo(path: path("again.gif")).collect().count == count)
    }

    @Test("VP9 webm encodes and decodes; LoadVideo start/every_nth/max_frames/fps select the right frames")
    func webmAndSelection() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        try MediaIO.saveVideo(try clip(frames: 20), path: path("d.webm"), options: VideoEncodingOptions(preset: "ultrafast"))
        #expect(try MediaIO.loadVideo(path: path("d.webm")).collect().count == 20)
        // x264 RGB at crf 0 is lossless and mp4 records the frame count.
        try MediaIO.saveVideo(try clip(frames: 20), path: path("e.mp4"), options: VideoEncodingOptions(codec: "h264rgb", preset: "ultrafast"))
        let picked = try MediaIO.loadVideo(path: path("e.mp4"), start: 2, maxFrames: 4, everyNth: 3)
        #expect(picked.info.frameCount == 4)
        #expect(try picked.collect().map { $0.index } == [0, 1, 2, 3])
        let all = try MediaIO.loadVideo(path: path("e.mp4")).collect()
        let chosen = try picked.collect()
        for (k, frame) in chosen.enumerated() {
            #expect(MediaTestSupport.bytes8(frame) == MediaTestSupport.bytes8(all[2 + 3 * k]))
        }
        // 25 → 10 fps: 20 frames (0.8 s) become 8, each the latest source frame at k / 10 s.
        let slow = try MediaIO.loadVideo(path: path("e.mp4"), fps: 10).collect()
        #expect(slow.count == 8)
        for (k, frame) in slow.enumerated() {
            #expect(MediaTestSupport.bytes8(frame) == MediaTestSupport.bytes8(all[Int((Double(k) * 2.5).rounded(.down))]))
        }
    }

    @Test("audio_from copies the source's audio stream")
    func audioCopy() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = path("av.mp4")
        try MediaTestSupport.ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
                                     "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", source])
        try MediaIO.saveVideo(try MediaIO.loadVideo(path: source), path: path("out.mp4"),
                              options: VideoEncodingOptions(preset: "ultrafast", audioFrom: source))
        let streams = try MediaTestSupport.run("ffprobe", ["-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", path("out.mp4")])
        #expect(String(decoding: streams, as: UTF8.self).split(separator: "\n").sorted() == ["audio", "video"])
        // A webm cannot hold AAC: a clear error and no output file.
        #expect { try MediaIO.saveVideo(try MediaIO.loadVideo(path: source), path: self.path("out.webm"),
                                        options: VideoEncodingOptions(audioFrom: source)) } throws: { error in
            error.localizedDescription.contains("aac") && error.localizedDescription.contains("out.webm")
        }
        #expect(!FileManager.default.fileExists(atPath: path("out.webm")))
    }
}
