import Foundation
import LapseGraph
import LapseMedia
import LapseTestSupport
import MediaPlugin
import Testing

/// SaveImage and SaveVideo name outputs after their input (`{stem}`), number them (`{n}`) and refuse to replace a
/// file when `overwrite` is false.
@Suite("Savers: {stem}, {n} and overwrite")
struct SaverTemplateTests {
    let registry: NodeRegistry = {
        let registry = SyntheticNodes.registry()
        try! MediaPlugin.register(into: registry)
        return registry
    }()

    func run(_ nodes: String) throws {
        try MediaTestSupport.runGraph(#"{"version": 1, "nodes": {\#(nodes)}}"#, registry: registry, checkInputFiles: true)
    }

    func message(_ nodes: String) -> String {
        MediaTestSupport.errorMessage { try run(nodes) } ?? "(no error)"
    }

    func json(_ s: String) -> String { MediaTestSupport.json(s) }

    /// A small PNG named `name` in `dir`.
    func png(_ name: String, in dir: URL) throws -> String {
        let path = dir.appendingPathComponent(name).path
        try MediaIO.saveImages(try MediaIO.synthesize("testsrc2=size=24x16", frameCount: 1), path: path)
        return path
    }

    func names(_ dir: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
    }

    @Test("{stem} is the loaded file's name, through transforms; {n} numbers runs and never replaces")
    func imageStemAndCounter() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = try png("coffee.png", in: dir)
        let out = dir.appendingPathComponent("out")
        let graph = #""src": {"type": "LoadImage", "params": {"path": \#(json(source))}}, "small": {"type": "Resize", "inputs": {"frames": "src"}, "params": {"width": 12}}, "#
        try run(graph + #""save": {"type": "SaveImage", "inputs": {"frames": "small"}, "params": {"path": \#(json(out.path + "/{stem}_x4.png"))}}"#)
        #expect(try names(out) == ["coffee_x4.png"])
        #expect(try PNGCodec.read(path: out.path + "/coffee_x4.png").width == 12)

        let numbered = graph + #""save": {"type": "SaveImage", "inputs": {"frames": "small"}, "params": {"path": \#(json(out.path + "/{stem}_{n}.png"))}}"#
        try run(numbered)
        try run(numbered)
        #expect(try names(out) == ["coffee_1.png", "coffee_2.png", "coffee_x4.png"])
        // A freed number is used again; `overwrite` does not make {n} replace anything.
        try FileManager.default.removeItem(atPath: out.path + "/coffee_1.png")
        try run(numbered.replacingOccurrences(of: #"{n}.png"}"#, with: #"{n}.png", "overwrite": true}"#))
        #expect(try names(out) == ["coffee_1.png", "coffee_2.png", "coffee_x4.png"])
    }

    @Test("overwrite: true (the default) replaces, false refuses naming the file and leaves it as it was")
    func overwrite() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = try png("in.png", in: dir)
        let target = dir.appendingPathComponent("out.png")
        try Data("precious".utf8).write(to: target)
        func save(_ type: String, _ path: String, _ extra: String) -> String {
            message(#""src": {"type": "LoadImage", "params": {"path": \#(json(source))}}, "save": {"type": "\#(type)", "inputs": {"frames": "src"}, "params": {"path": \#(json(path))\#(extra)}}"#)
        }
        let refused = save("SaveImage", target.path, #", "overwrite": false"#)
        #expect(refused.contains(target.path) && refused.contains("already exists") && refused.contains("overwrite"), "\(refused)")
        #expect(try Data(contentsOf: target) == Data("precious".utf8))
        #expect(save("SaveImage", target.path, "") == "(no error)")
        #expect(try PNGCodec.read(path: target.path).width == 24)

        let video = dir.appendingPathComponent("in.mkv")
        try Data("precious".utf8).write(to: video)
        let refusedVideo = save("SaveVideo", video.path, #", "overwrite": false"#)
        #expect(refusedVideo.contains(video.path) && refusedVideo.contains("already exists"), "\(refusedVideo)")
        #expect(try Data(contentsOf: video) == Data("precious".utf8))
        // {stem}.mkv of in.png is in.mkv: refused, not replaced; a new name is written with overwrite false.
        #expect(save("SaveVideo", dir.path + "/{stem}.mkv", #", "overwrite": false"#).contains("already exists"))
        #expect(try Data(contentsOf: video) == Data("precious".utf8))
        #expect(save("SaveVideo", dir.path + "/{stem}_new.mkv", #", "overwrite": false"#) == "(no error)")
        #expect(FileKind(path: dir.path + "/in_new.mkv") == .regular)
    }

    @Test("video: {stem} of the decoded clip, {n} over runs; a sequence's {n} is judged by its first file")
    func videoAndSequence() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let clip = dir.appendingPathComponent("tiny clip.mkv").path
        try MediaIO.saveVideo(try MediaIO.synthesize("testsrc2=size=32x24:rate=10", frameCount: 3), path: clip)
        let out = dir.appendingPathComponent("out")
        let load = #""src": {"type": "LoadVideo", "params": {"path": \#(json(clip))}}, "#
        for _ in 0..<2 {
            try run(load + #""save": {"type": "SaveVideo", "inputs": {"frames": "src"}, "params": {"path": \#(json(out.path + "/{stem}_x2_{n}.mkv")), "crf": 0, "preset": "ultrafast"}}"#)
        }
        #expect(try names(out) == ["tiny clip_x2_1.mkv", "tiny clip_x2_2.mkv"])
        for _ in 0..<2 {
            try run(load + #""save": {"type": "SaveImage", "inputs": {"frames": "src"}, "params": {"path": \#(json(out.path + "/f{n}_%03d.png"))}}"#)
        }
        #expect(try names(out).filter { $0.hasPrefix("f") } == ["f1_001.png", "f1_002.png", "f1_003.png", "f2_001.png", "f2_002.png", "f2_003.png"])
    }

    @Test("{stem} of generated frames, a misspelt placeholder or a placeholder in a folder are refused with what to do")
    func refusals() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let generated = message(#""gen": {"type": "TestFrameGenerator", "params": {"count": 1}}, "save": {"type": "SaveImage", "inputs": {"frames": "gen"}, "params": {"path": \#(json(dir.path + "/{stem}.png"))}}"#)
        #expect(generated.contains("{stem}") && generated.contains("read from no file") && generated.contains("{n}"), "\(generated)")
        let source = try png("a.png", in: dir)
        let typo = message(#""src": {"type": "LoadImage", "params": {"path": \#(json(source))}}, "save": {"type": "SaveVideo", "inputs": {"frames": "src"}, "params": {"path": \#(json(dir.path + "/{stme}.mkv"))}}"#)
        #expect(typo.contains("nodes.save.params.path") && typo.contains("unknown placeholder {stme} (did you mean {stem}?)"), "\(typo)")
        let folder = message(#""src": {"type": "LoadImage", "params": {"path": \#(json(source))}}, "save": {"type": "SaveImage", "inputs": {"frames": "src"}, "params": {"path": \#(json(dir.path + "/{stem}/x.png"))}}"#)
        #expect(folder.contains("nodes.save.params.path") && folder.contains("only appear in the file name"), "\(folder)")
        #expect(try names(dir) == ["a.png"], "nothing was written")
    }
}
