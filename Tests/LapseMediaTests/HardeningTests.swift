import CMediaHelpers
import Foundation
import LapseGraph
import LapseMedia
import LapseTensor
import LapseTestSupport
import MediaPlugin
import Synchronization
import Testing

/// Regression tests for the hostile-input campaign (issue 13): code execution through filters, outputs that replace
/// special files, inputs that block, absurd sizes and numbers, partial outputs, wrong timings and vague messages.
@Suite("Hardening: hostile graphs, paths and files")
struct HardeningTests {
    let registry: NodeRegistry = {
        let registry = NodeRegistry()
        try! MediaPlugin.register(into: registry)
        return registry
    }()

    func message(_ body: () throws -> Void) -> String {
        MediaTestSupport.errorMessage(body) ?? "(no error)"
    }

    /// A graph of one LoadImage (a small PNG made here) into `node`, as JSON.
    func graph(source: String, _ nodes: String) -> String {
        #"{"version": 1, "nodes": {"src": {"type": "LoadImage", "params": {"path": \#(MediaTestSupport.json(source))}}, \#(nodes)}}"#
    }

    func smallPNG(in dir: URL, size: Int = 16) throws -> String {
        let path = dir.appendingPathComponent("small.png").path
        try MediaIO.saveImages(try MediaIO.synthesize("testsrc2=size=\(size)x\(size)", frameCount: 1), path: path)
        return path
    }

    // MARK: - 1. Filters cannot load code or touch files

    @Test("filters that load code, open files or listen are refused before libavfilter sees them, however written",
          arguments: [
            ("frei0r=filter_name=../../tmp/evil", "frei0r"), ("null,frei0r=x", "frei0r"), ("[in]null[a];[a]frei0r", "frei0r"),
            ("'fre'i0r=x", "frei0r"), (#"fre\i0r=x"#, "frei0r"), ("  frei0r  ", "frei0r"), ("frei0r@a=x", "frei0r"),
            ("ladspa=f=evil", "ladspa"), ("lv2=p=x", "lv2"), ("movie=/etc/passwd", "movie"), ("amovie=x.wav", "amovie"),
            ("sendcmd=f=cmds.txt", "sendcmd"), ("zmq", "zmq"), ("subtitles=x.srt", "subtitles"), ("ass=x.ass", "ass"),
            ("drawtext=textfile=/etc/passwd", "drawtext"), ("lut3d=file=x.cube", "lut3d"), ("lut3d=x.cube", "lut3d"),
            ("haldclut", "haldclut"), ("nosuchfilter=3", "nosuchfilter"), ("reverse", "reverse"), ("loop=loop=-1", "loop"),
            ("boxblur=2", "boxblur"),
          ])
    func refusedFilters(_ text: String, _ filter: String) throws {
        let clip = try MediaIO.synthesize("testsrc2=size=32x32:rate=10", frameCount: 2)
        let text1 = message { _ = try MediaIO.filter(clip, graph: text).collect() }
        #expect(text1.contains("refused") && text1.contains("filter \(filter) is not allowed"), "\(text1)")
        // The same through a frame stream of unknown size (the graph is only built at the first frame).
        let unknown = Frames(frames: [Frame(image: Tensor(zeros: [3, 8, 8]))], info: FrameStreamInfo())
        let text2 = message { _ = try MediaIO.filter(unknown, graph: text).collect() }
        #expect(text2.contains("filter \(filter) is not allowed"), "\(text2)")
    }

    @Test("options that name files are refused, by name, by alias or by position; the pure options still work")
    func fileOptions() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let plot = dir.appendingPathComponent("plot.gp").path
        let clip = try MediaIO.synthesize("testsrc2=size=32x32:rate=10", frameCount: 2)
        for (text, option) in [("curves=psfile=x.acv", "psfile"), ("curves=plot=\(plot)", "plot"),
                               ("curves=preset=vintage:plot=\(plot)", "plot"),
                               // preset, master, red, green, blue, all, psfile: the 7th positional value is psfile
                               ("curves=none:0/0 1/1:0/0 1/1:0/0 1/1:0/0 1/1:0/0 1/1:x.acv", "psfile"),
                               (#"curves=pl\ot=x"#, "plot"), ("curves='plot'=x", "plot"),
                               ("split[a][b];[a]palettegen[p];[b][p]paletteuse=debug_kdtree=k.dot", "debug_kdtree")] {
            let text1 = message { _ = try MediaIO.filter(clip, graph: text).collect() }
            #expect(text1.contains("option \(option) of filter") && text1.contains("names a file"), "\(text): \(text1)")
        }
        #expect(!FileManager.default.fileExists(atPath: plot))
        for text in ["curves=vintage", "curves=preset=lighter", "curves=r=0/0 1/0.5", "hflip,eq=contrast=1.2",
                     "scale=16:-2:flags=lanczos,pad=20:20:2:2", "fps=5,setpts=PTS*2,trim=end=10,format=gbrp",
                     "split[a][b];[a][b]hstack", "transpose=1,rotate=0.3,gblur=sigma=2,unsharp,hue=h=30"] {
            #expect(throws: Never.self, "\(text)") { _ = try MediaIO.filter(clip, graph: text).collect() }
        }
    }

    @Test("the Filter node refuses frei0r through a graph run, naming the node, and never loads the library")
    func filterNodeRefusesFrei0r() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = try smallPNG(in: dir)
        let json = graph(source: source, #""f": {"type": "Filter", "inputs": {"frames": "src"}, "params": {"graph": "frei0r=filter_name=../../evil"}}, "# +
                         #""out": {"type": "SaveImage", "inputs": {"frames": "f"}, "params": {"path": \#(MediaTestSupport.json(dir.path + "/o.png"))}}"#)
        let text = message { try MediaTestSupport.runGraph(json, registry: registry) }
        #expect(text.contains("\"f\"") && text.contains("Filter") && text.contains("frei0r is not allowed"), "\(text)")
        #expect(text.contains("shared library"), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/o.png"))
    }

    @Test("filter outputs and intermediate links beyond the size limits fail when the graph is built")
    func filterSizes() throws {
        let clip = try MediaIO.synthesize("testsrc2=size=32x32:rate=10", frameCount: 2)
        for (text, size) in [("scale=100000:100000", "100000x100000"), ("scale=20000:20000,scale=32:32", "20000x20000"),
                             ("pad=32768:32768", "32768x32768"), ("scale=16384:16384", "16384x16384")] {
            let text1 = message { _ = try MediaIO.filter(clip, graph: text) }
            #expect(text1.contains(size) && text1.contains("supported frame sizes"), "\(text): \(text1)")
        }
        // A timing graph that would multiply frames without end stops with a message.
        let text2 = message { _ = try MediaIO.filter(clip, graph: "setpts=PTS*100000,fps=1000").collect() }
        #expect(text2.contains("output frames for one input frame"), "\(text2)")
    }

    @Test("NaN in filter options is refused (curves with a NaN point corrupted libavfilter's heap)")
    func nanOptions() throws {
        let clip = try MediaIO.synthesize("testsrc2=size=16x16:rate=10", frameCount: 2)
        for text in ["curves=r='NaN/0 0.5/0.7 1/1'", #"curves=r='n\an/0 1/1'"#, "eq=contrast=nan", "hue=h=-NAN",
                     "curves=r='naNgg=0/0 1/1'", "curves=r='nan(1)/0 1/1'"] {
            let refused = message { _ = try MediaIO.filter(clip, graph: text).collect() }
            #expect(refused.contains("NaN is not accepted"), "\(text): \(refused)")
        }
        // Words that merely contain the letters, and infinity where an option allows it, are fine.
        #expect(throws: Never.self) { _ = try MediaIO.filter(clip, graph: "fps=5:round=inf,drawbox=color=tan:w=4:h=4,fade=in:0:1").collect() }
    }

    @Test("a corrupt WebP that aborted libavcodec's frame-threaded decoder is a clean error")
    func corruptWebP() throws {
        let path = MediaTestSupport.repoRoot(from: #filePath)
            .appendingPathComponent("Tools/fuzz/corpus/image/regression-webp-frame-threads.webp").path
        let text = message { _ = try MediaIO.loadImage(path: path).collect() }
        #expect(text.contains("regression-webp-frame-threads.webp"), "\(text)")
    }

    // MARK: - 2. Savers never replace special files

    @Test("SaveImage and SaveVideo refuse a FIFO and a character device, keep a symlink, refuse NUL in a path")
    func specialOutputs() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = try smallPNG(in: dir)
        func save(_ type: String, _ path: String) -> String {
            let json = graph(source: source, #""out": {"type": "\#(type)", "inputs": {"frames": "src"}, "params": {"path": \#(MediaTestSupport.json(path))}}"#)
            return message { try MediaTestSupport.runGraph(json, registry: registry) }
        }
        for (type, name) in [("SaveImage", "pipe.png"), ("SaveVideo", "pipe.mkv")] {
            let fifo = dir.appendingPathComponent(name).path
            try MediaTestSupport.makeFIFO(fifo)
            let text = save(type, fifo)
            #expect(text.contains(name) && text.contains("named pipe (FIFO)"), "\(text)")
            #expect(FileKind(path: fifo) == .fifo)
        }
        // /dev/null is refused before anything is written: it stays a character device.
        for type in ["SaveImage", "SaveVideo"] {
            let text = save(type, "/dev/null")
            #expect(text.contains("/dev/null") && text.contains("character device"), "\(type): \(text)")
            #expect(FileKind(path: "/dev/null") == .characterDevice)
        }
        // A symlink keeps pointing where it pointed; its target gets the file.
        try FileManager.default.createDirectory(atPath: dir.path + "/real", withIntermediateDirectories: true)
        for (type, name) in [("SaveImage", "link.png"), ("SaveVideo", "link.mkv")] {
            let link = dir.appendingPathComponent(name).path
            let target = dir.path + "/real/" + name
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
            #expect(save(type, link) == "(no error)")
            #expect(FileKind(path: link, followLinks: false) == .symlink)
            #expect(FileKind(path: target) == .regular)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: target))
            #expect(bytes.count > 8)
        }
        // NUL in a path: refused, never rewritten to %00.
        for (type, name) in [("SaveImage", "a\u{0}b.png"), ("SaveVideo", "a\u{0}b.mkv")] {
            let text = save(type, dir.path + "/" + name)
            #expect(text.contains("NUL"), "\(text)")
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("%00") || $0.hasPrefix("a") }
        #expect(left.isEmpty, "\(left)")
    }

    // MARK: - 3. Inputs are checked before they are opened

    @Test("FIFOs, folders and devices as inputs fail at once with what they are")
    func specialInputs() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for name in ["in.png", "in.jpg", "in.mp4"] {
            let fifo = dir.appendingPathComponent(name).path
            try MediaTestSupport.makeFIFO(fifo)
            for load in [{ _ = try MediaIO.loadImage(path: fifo) }, { _ = try MediaIO.loadVideo(path: fifo) }] {
                let text = message(load)
                #expect(text.contains(name) && text.contains("named pipe (FIFO)"), "\(text)")
            }
            #expect(!MediaIO.hasAudio(path: fifo))
        }
        // A folder named like an image.
        let folder = dir.appendingPathComponent("x.png").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        #expect(message { _ = try MediaIO.loadImage(path: folder) }.contains("is a folder"))
        #expect(message { _ = try MediaIO.loadVideo(path: folder) }.contains("is a folder"))
        // Devices: /dev/zero would never end.
        for load in [{ _ = try MediaIO.loadImage(path: "/dev/zero") }, { _ = try MediaIO.loadVideo(path: "/dev/zero") }] {
            #expect(message(load).contains("character device"))
        }
        // An image sequence with a FIFO in the middle is refused before libav opens any of it.
        let sequence = dir.appendingPathComponent("seq").path
        try MediaIO.saveImages(try MediaIO.synthesize("testsrc2=size=8x8", frameCount: 3), path: sequence + "/f_%03d.png")
        try FileManager.default.removeItem(atPath: sequence + "/f_002.png")
        try MediaTestSupport.makeFIFO(sequence + "/f_002.png")
        let text = message { _ = try MediaIO.loadVideo(path: sequence + "/f_%03d.png").collect() }
        #expect(text.contains("f_002.png") && text.contains("named pipe"), "\(text)")
        // audio_from naming a FIFO fails in SaveVideo before anything is encoded.
        let audioFIFO = dir.appendingPathComponent("sound.wav").path
        try MediaTestSupport.makeFIFO(audioFIFO)
        let source = try smallPNG(in: dir)
        let json = graph(source: source, #""out": {"type": "SaveVideo", "inputs": {"frames": "src"}, "params": {"path": \#(MediaTestSupport.json(dir.path + "/v.mkv")), "audio_from": \#(MediaTestSupport.json(audioFIFO))}}"#)
        let audioText = message { try MediaTestSupport.runGraph(json, registry: registry) }
        #expect(audioText.contains("sound.wav") && audioText.contains("named pipe"), "\(audioText)")
        // URLs and protocol tricks are not files.
        for url in ["http://127.0.0.1:9/x.mp4", "concat:\(source)|\(source)", "file:/dev/zero", "subfile,,start,0,end,10,,:\(source)"] {
            let urlText = message { _ = try MediaIO.loadVideo(path: url) }
            #expect(urlText.contains("not found") || urlText.contains("no such file"), "\(url): \(urlText)")
        }
    }

    // MARK: - 4. Absurd sizes fail before memory is allocated

    @Test("an absurd frame-number width is refused at once with a short message")
    func patternWidth() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let clip = try MediaIO.synthesize("testsrc2=size=8x8", frameCount: 2)
        let started = Date()
        let text = message { try MediaIO.saveImages(clip, path: dir.path + "/p_%999999999d.png") }
        #expect(Date().timeIntervalSince(started) < 2)
        #expect(text.contains("too wide") && text.count < 400, "\(text.prefix(400))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
        // Ten digits are fine.
        let written = try MediaIO.saveImages(clip, path: dir.path + "/q_%010d.png")
        #expect(written.map { URL(fileURLWithPath: $0).lastPathComponent } == ["q_0000000001.png", "q_0000000002.png"])
    }

    @Test("Resize, Pad and Crop check the output size before allocating")
    func nodeSizes() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = try smallPNG(in: dir, size: 32)
        let out = MediaTestSupport.json(dir.path + "/o.png")
        let resize = graph(source: source, #""r": {"type": "Resize", "inputs": {"frames": "src"}, "params": {"width": 32768, "height": 0}}, "# +
                           #""out": {"type": "SaveImage", "inputs": {"frames": "r"}, "params": {"path": \#(out)}}"#)
        let started = Date()
        let text = message { try MediaTestSupport.runGraph(resize, registry: registry) }
        #expect(text.contains("\"r\"") && text.contains("32768x32768") && text.contains("width"), "\(text)")
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(FrameOps.paddedSize(Int.max - 3, multipleOf: 8) == nil)
        #expect(FrameOps.paddedSize(30, multipleOf: 8) == 32)
    }

    /// A BMP header claiming `width` x `height` pixels followed by a few bytes.
    func bmp(width: Int32, height: Int32) -> Data {
        func le32(_ v: Int32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
        func le16(_ v: Int16) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
        var bytes: [UInt8] = Array("BM".utf8) + le32(54 + 64) + le32(0) + le32(54)
        bytes += le32(40) + le32(width) + le32(height) + le16(1) + le16(24) + le32(0) + le32(0) + le32(2835) + le32(2835)
            + le32(0) + le32(0)
        return Data(bytes + [UInt8](repeating: 0x7F, count: 64))
    }

    /// A baseline JPEG header (SOI, SOF0) claiming `width` x `height`.
    func jpeg(width: UInt16, height: UInt16) -> Data {
        var bytes: [UInt8] = [0xFF, 0xD8, 0xFF, 0xC0, 0x00, 17, 8, UInt8(height >> 8), UInt8(height & 255),
                              UInt8(width >> 8), UInt8(width & 255), 3]
        for id in 1...3 { bytes += [UInt8(id), 0x11, 0] }
        return Data(bytes + [0xFF, 0xD9])
    }

    @Test("a decoder header claiming an absurd size says that size and the limit")
    func absurdHeaders() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bmpPath = dir.appendingPathComponent("huge.bmp").path
        try bmp(width: 100_000, height: 100_000).write(to: URL(fileURLWithPath: bmpPath))
        let jpgPath = dir.appendingPathComponent("huge.jpg").path
        try jpeg(width: 60_000, height: 60_000).write(to: URL(fileURLWithPath: jpgPath))
        for (path, size) in [(bmpPath, "100000 100000"), (jpgPath, "60000x60000")] {
            let text = message { _ = try MediaIO.loadImage(path: path) }
            #expect(text.contains(size) && text.contains("134217728"), "\(text)")
            #expect(!text.contains("0x0"), "\(text)")
        }
    }

    // MARK: - 5. Numbers that overflow are refused by validation; the library math never traps

    @Test("validation refuses absurd node numbers, and the library's size and rate math does not overflow")
    func overflowingNumbers() throws {
        func diagnostics(_ node: String) -> String {
            let json = #"{"version": 1, "nodes": {"src": {"type": "LoadVideo", "params": {"path": "in.mp4"}}, "n": \#(node), "# +
                #""out": {"type": "SaveVideo", "inputs": {"frames": "n"}, "params": {"path": "o.mkv"}}}}"#
            switch GraphValidator(registry: registry, checkInputFiles: false).validate(data: Data(json.utf8)) {
            case .success: return ""
            case .failure(let failure): return failure.localizedDescription
            }
        }
        let huge = "9223372036854775801"
        #expect(diagnostics(#"{"type": "Crop", "inputs": {"frames": "src"}, "params": {"x": \#(huge), "width": 8, "height": 8}}"#).contains("x"))
        #expect(diagnostics(#"{"type": "Crop", "inputs": {"frames": "src"}, "params": {"width": \#(huge), "height": 8}}"#).contains("width"))
        #expect(diagnostics(#"{"type": "FrameRange", "inputs": {"frames": "src"}, "params": {"step": 9223372036854775807}}"#).contains("step"))
        #expect(diagnostics(#"{"type": "FrameRange", "inputs": {"frames": "src"}, "params": {"start": \#(huge)}}"#).contains("start"))
        #expect(diagnostics(#"{"type": "Pad", "inputs": {"frames": "src"}, "params": {"multiple_of": \#(huge)}}"#).contains("multiple_of"))
        let load = #"{"version": 1, "nodes": {"src": {"type": "LoadVideo", "params": {"path": "in.mp4", "every_nth": 9223372036854775807}}, "# +
            #""out": {"type": "SaveVideo", "inputs": {"frames": "src"}, "params": {"path": "o.mkv", "crf": 99999}}}}"#
        guard case .failure(let failure) = GraphValidator(registry: registry, checkInputFiles: false).validate(data: Data(load.utf8)) else {
            Issue.record("absurd every_nth and crf validated")
            return
        }
        #expect(failure.localizedDescription.contains("every_nth") && failure.localizedDescription.contains("crf"))

        #expect(!FrameOps.cropFits(x: Int.max - 5, y: 0, width: 8, height: 8, frameWidth: 32, frameHeight: 32))
        #expect(!FrameOps.cropFits(x: 1, y: 1, width: Int.max, height: Int.max, frameWidth: 32, frameHeight: 32))
        #expect(throws: MediaError.self) { _ = try FrameOps.crop(Tensor(zeros: [1, 4, 4]), x: Int.max - 1, y: 0, width: 2, height: 2) }
        let (w, _) = try FrameOps.targetSize(width: 0, height: Int.max, sourceWidth: 1000, sourceHeight: 1)
        #expect(w == Int.max)

        // The library API takes any Int: every_nth and step of Int.max keep one frame and a sane rate.
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let video = dir.appendingPathComponent("in.mp4").path  // mp4 records its frame count
        try MediaIO.saveVideo(try MediaIO.synthesize("testsrc2=size=16x16:rate=25", frameCount: 5), path: video,
                              options: VideoEncodingOptions(preset: "ultrafast"))
        let everyNth = try MediaIO.loadVideo(path: video, start: Int.max - 1, everyNth: Int.max)
        #expect(everyNth.info.frameCount == 0)
        let one = try MediaIO.loadVideo(path: video, everyNth: Int.max)
        #expect(one.info.frameCount == 1)
        try MediaIO.saveVideo(one, path: dir.appendingPathComponent("one.mkv").path)
        let ranged = try FrameOps.range(try MediaIO.loadVideo(path: video), start: 1, count: 0, step: Int.max)
        #expect(ranged.info.frameCount == 1)
        try MediaIO.saveVideo(ranged, path: dir.appendingPathComponent("ranged.mkv").path)
    }

    // MARK: - 6. Image sequences appear whole or not at all

    @Test("a sequence failing or cancelled part way leaves no frame; while writing, only tracked temporaries exist")
    func atomicSequences() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        struct Boom: Error {}
        let clip = try MediaIO.synthesize("testsrc2=size=8x8:rate=25", frameCount: 20)
        let failing = clip.map(info: clip.info) { frame in
            if frame.index == 6 { throw MediaError.invalidArgument("frame 6 is broken") }
            return frame
        }
        #expect(message { try MediaIO.saveImages(failing, path: dir.path + "/f_%03d.png") }.contains("frame 6 is broken"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
        let seen = Mutex<(pending: Int, visible: [String])>((0, ["not called"]))
        let path = dir.path
        #expect(throws: CancellationError.self) {
            try MediaIO.saveImages(clip, path: path + "/c_%03d.png", progress: { done, _ in
                if done == 10 {
                    let pending = AtomicFile.pendingTemporaryFiles.filter { $0.hasPrefix(path) }.count
                    let visible = try FileManager.default.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix(".") }
                    seen.withLock { $0 = (pending, visible) }
                    throw CancellationError()
                }
            })
        }
        let observed = seen.withLock { $0 }
        #expect(observed.pending == 10 && observed.visible.isEmpty, "\(observed)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
        #expect(AtomicFile.pendingTemporaryFiles.filter { $0.hasPrefix(dir.path) }.isEmpty)
        let written = try MediaIO.saveImages(clip, path: dir.path + "/ok_%03d.png")
        #expect(written.count == 20 && written.allSatisfy { FileKind(path: $0) == .regular })
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).count == 20)
    }

    // MARK: - 7. Timing and formats are what the user asked for

    /// Frame times of a file's video stream as ffprobe reports them.
    func frameTimes(_ path: String) throws -> [Double] {
        let out = try MediaTestSupport.run("ffprobe", ["-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
                                                      "-of", "csv=p=0", path])
        return String(decoding: out, as: UTF8.self).split(whereSeparator: \.isNewline).compactMap { Double($0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: ","))) }
    }

    @Test("SaveVideo keeps variable frame times unless fps forces a rate")
    func variableFrameRate() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let gif = dir.appendingPathComponent("vfr.gif").path
        try MediaTestSupport.ffmpeg(["-f", "lavfi", "-t", "2", "-i", "testsrc2=size=32x32:rate=100",
                                     "-vf", "select='eq(n\\,0)+eq(n\\,10)+eq(n\\,60)+eq(n\\,65)+eq(n\\,165)'",
                                     "-fps_mode", "vfr", gif])
        let expected = [0, 0.10, 0.60, 0.65, 1.65]
        let source = try frameTimes(gif)
        #expect(source.count == 5 && zip(source, expected).allSatisfy { abs($0 - $1) < 0.011 }, "source \(source)")
        for name in ["out.gif", "out.mkv", "out.mp4", "out.webm"] {
            let out = dir.appendingPathComponent(name).path
            try MediaIO.saveVideo(try MediaIO.loadVideo(path: gif), path: out, options: VideoEncodingOptions(preset: "ultrafast"))
            let times = try frameTimes(out)
            let start = times.first ?? 0
            #expect(times.count == 5 && zip(times.map { $0 - start }, expected).allSatisfy { abs($0 - $1) < 0.011 }, "\(name): \(times)")
        }
        let forced = dir.appendingPathComponent("forced.mkv").path
        try MediaIO.saveVideo(try MediaIO.loadVideo(path: gif), path: forced, options: VideoEncodingOptions(fps: 10))
        let times = try frameTimes(forced)
        #expect(times.count == 5 && zip(times, [0, 0.1, 0.2, 0.3, 0.4]).allSatisfy { abs($0 - $1) < 0.002 }, "\(times)")
    }

    @Test("SaveImage writes .png only and says so for other extensions")
    func imageExtensions() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let clip = try MediaIO.synthesize("testsrc2=size=8x8", frameCount: 1)
        for name in ["x.jpg", "x.webp", "x.PNG.bmp", "x"] {
            let text = message { try MediaIO.saveImages(clip, path: dir.path + "/" + name) }
            #expect(text.contains(name) && text.contains("PNG files only"), "\(text)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
        try MediaIO.saveImages(clip, path: dir.path + "/Upper.PNG")
        #expect(FileKind(path: dir.path + "/Upper.PNG") == .regular)
    }

    // MARK: - 8. Messages

    @Test("a full disk says \"No space left on device\", and the partial file is removed")
    func diskFull() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // Noise does not compress: 512x512 RGB at 16 bits is ~1.5 MB of PNG, far over a 64 KiB file system.
        var noise = Tensor(zeros: [3, 512, 512])
        var state: UInt64 = 0x1234_5678
        noise.withUnsafeMutableBufferPointer { values in
            for i in values.indices {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                values[i] = Float(state >> 40) / Float(1 << 24)
            }
        }
        let frames = Frames(frames: [Frame(image: noise)])
        let mount = dir.appendingPathComponent("small").path
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        // A 64 KiB tmpfs needs root; the errno mapping itself is checked on /dev/full everywhere, which fails every
        // write with ENOSPC (savers refuse devices, so the C writer is called directly).
        let mounted = (try? MediaTestSupport.run("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mount])) != nil
        defer { if mounted { _ = try? MediaTestSupport.run("umount", [mount]) } }
        if mounted {
            let text = message { try MediaIO.saveImages(frames, path: mount + "/full.png", bitDepth: 16) }
            #expect(text.contains("full.png") && text.contains("No space left on device"), "\(text)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: mount).isEmpty)
        }
        var message = [CChar](repeating: 0, count: 512)
        let pixels = [UInt8](repeating: 0x55, count: 256 * 256 * 3)
        let status = lapse_png_write("/dev/full", 256, 256, 3, 8, pixels, &message, message.count)
        let text = String(cString: message)
        #expect(status != 0 && text.contains("No space left on device"), "\(text)")
    }
}
