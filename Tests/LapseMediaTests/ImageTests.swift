import Foundation
import LapseGraph
import LapseMedia
import LapseTensor
import LapseTestSupport
import Testing

@Suite("Images: PNG via libpng, JPEG/GIF via libavcodec")
struct ImageTests {
    /// ffmpeg's decode of a PNG as raw interleaved samples in the given layout (no conversion for same-layout files).
    func reference(_ path: String, pixFmt: String) throws -> [Int] {
        let data = try MediaTestSupport.ffmpeg(["-i", path, "-f", "rawvideo", "-pix_fmt", pixFmt, "-"])
        if pixFmt.hasSuffix("le") { return data.withUnsafeBytes { $0.bindMemory(to: UInt16.self).map { Int($0) } } }
        return data.map { Int($0) }
    }

    /// Our frame as interleaved integers with `channels` channels (an opaque alpha added when we have none).
    func interleaved(_ frame: Frame, channels: Int, sixteen: Bool) -> [Int] {
        let c = frame.channels, plane = frame.width * frame.height, v = frame.image.scalars
        let scale: Float = sixteen ? 65535 : 255
        var out: [Int] = []
        out.reserveCapacity(plane * channels)
        for i in 0..<plane {
            for k in 0..<channels { out.append(k < c ? Int((v[k * plane + i] * scale).rounded()) : Int(scale)) }
        }
        return out
    }

    @Test("real photographs decode exactly like ffmpeg")
    func realPhotos() throws {
        for (name, w, h) in [("astronaut.png", 512, 512), ("chelsea.png", 451, 300), ("coffee.png", 600, 400)] {
            let path = try MediaTestSupport.sample(name)
            let frames = try MediaIO.loadImage(path: path)
            let frame = try #require(try frames.collect().first)
            #expect(frame.width == w && frame.height == h && frame.channels == 3, "\(name)")
            #expect(frames.info.frameCount == 1)
            if name == "astronaut.png" { #expect(interleaved(frame, channels: 3, sixteen: false) == (try reference(path, pixFmt: "rgb24"))) }
        }
    }

    @Test("every PNG layout (gray, GA, 16-bit, RGBA, palette, 1-bit, interlaced) matches ffmpeg's decode",
          arguments: ["gray", "ya8", "gray16be", "ya16be", "rgb24", "rgba", "rgb48be", "rgba64be", "pal8", "monob", "interlaced"])
    func pngLayouts(_ layout: String) throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("\(layout).png").path
        let pixFmt = layout == "interlaced" ? "rgb24" : layout
        var args = ["-f", "lavfi", "-i", "testsrc2=size=37x23:rate=1,format=rgba,geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':a='128+X*3'",
                    "-frames:v", "1", "-pix_fmt", pixFmt]
        if layout == "interlaced" { args += ["-flags", "+ildct"] }
        try MediaTestSupport.ffmpeg(args + [path])
        let frame = try PNGCodec.read(path: path)
        #expect(frame.width == 37 && frame.height == 23)
        let expectedChannels = ["gray": 1, "monob": 1, "gray16be": 1, "ya8": 2, "ya16be": 2, "rgba": 4, "rgba64be": 4][layout] ?? 3
        #expect(frame.channels == expectedChannels || (layout == "pal8" && frame.channels == 4))
        #expect(frame.color.bitDepth == (layout.contains("16") || layout.contains("48") || layout.contains("64") ? 16 : 8))
        let native = ["gray": "gray", "monob": "gray", "ya8": "ya8", "gray16be": "gray16le", "ya16be": "ya16le", "rgba": "rgba",
                      "rgb48be": "rgb48le", "rgba64be": "rgba64le", "pal8": "rgba"][layout] ?? "rgb24"
        let refChannels = ["gray": 1, "gray16le": 1, "ya8": 2, "ya16le": 2, "rgba": 4, "rgba64le": 4][native] ?? 3
        let expected = try reference(path, pixFmt: native)
        let ours = interleaved(frame, channels: refChannels, sixteen: native.hasSuffix("le"))
        #expect(ours.count == expected.count && ours == expected, "\(layout): \(zip(ours, expected).filter { $0 != $1 }.count) samples differ")
    }

    @Test("PNG round trips are exact at 8 and 16 bits for 1-4 channels")
    func pngRoundTrip() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SystemRandomNumberGenerator()
        for bits in [8, 16] {
            for channels in 1...4 {
                let levels = Float(bits == 8 ? 255 : 65535)
                let values = (0..<(channels * 19 * 13)).map { _ in Float(Int.random(in: 0...Int(levels), using: &rng)) / levels }
                let frame = Frame(image: Tensor(shape: [channels, 13, 19], data: values))
                let path = dir.appendingPathComponent("rt\(bits)_\(channels).png").path
                try MediaIO.saveImages(Frames(frames: [frame]), path: path, bitDepth: bits)
                let back = try PNGCodec.read(path: path)
                #expect(back.image.shape == [channels, 13, 19])
                let a = back.image.scalars.map { ($0 * levels).rounded() }, b = values.map { ($0 * levels).rounded() }
                #expect(a == b, "\(bits)-bit \(channels) channels")
            }
        }
    }

    @Test("several frames need a %05d pattern; with one they become a numbered sequence")
    func sequences() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let frames = Frames(frames: (0..<3).map { Frame(image: Tensor(repeating: Float($0) / 4, shape: [3, 4, 5]), index: $0) })
        let single = dir.appendingPathComponent("out.png").path
        #expect { try MediaIO.saveImages(frames, path: single) } throws: { error in
            "\(error.localizedDescription)".contains("out.png") && "\(error.localizedDescription)".contains("%05d")
        }
        #expect(!FileManager.default.fileExists(atPath: single))
        let written = try MediaIO.saveImages(frames, path: dir.appendingPathComponent("out_%05d.png").path)
        #expect(written.map { URL(fileURLWithPath: $0).lastPathComponent } == ["out_00001.png", "out_00002.png", "out_00003.png"])
        let second = try PNGCodec.read(path: written[1])
        #expect(abs(second.image.scalars[0] - 0.25) < 1 / 255)
        // The sequence reads back as a video stream through libav's image2 demuxer.
        let back = try MediaIO.loadVideo(path: dir.appendingPathComponent("out_%05d.png").path).collect()
        #expect(back.count == 3)
    }

    @Test("JPEG decodes like ffmpeg with the same scaler flags; lossless WebP exactly; GIF loads its first frame")
    func jpegAndGIF() throws {
        let path = try MediaTestSupport.sample("rocket.jpg")
        let frame = try #require(try MediaIO.loadImage(path: path).collect().first)
        #expect(frame.width == 640 && frame.height == 427 && frame.channels == 3)
        let ref = try MediaTestSupport.ffmpeg(["-i", path, "-vf", "scale=flags=bicubic+full_chroma_int+full_chroma_inp",
                                               "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        let ours = MediaTestSupport.bytes8(frame)
        #expect(ours.count == ref.count)
        let worst = zip(ours, ref).map { abs(Int($0) - Int($1)) }.max() ?? 99
        #expect(worst <= 1, "max difference \(worst)")
        // WebP (lossless, so ffmpeg's decode of the same file is the exact reference) through libavcodec.
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let webp = dir.appendingPathComponent("card.webp").path
        try MediaTestSupport.ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=40x30", "-frames:v", "1", "-c:v", "libwebp",
                                     "-lossless", "1", webp])
        let decoded = try #require(try MediaIO.loadImage(path: webp).collect().first)
        #expect(decoded.width == 40 && decoded.height == 30)
        let webpRef = try MediaTestSupport.ffmpeg(["-i", webp, "-f", "rawvideo", "-pix_fmt", decoded.channels == 4 ? "rgba" : "rgb24", "-"])
        #expect(MediaTestSupport.bytes8(decoded) == Array(webpRef))
        let gif = try #require(try MediaIO.loadImage(path: try MediaTestSupport.sample("no_time_for_that_tiny.gif")).collect().first)
        #expect(gif.width == 14 && gif.height == 25)
    }
}
