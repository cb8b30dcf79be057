import Foundation
import LapseGraph
import LapseTestSupport
import Testing

/// Saver path templates (`{stem}`, `{n}`) and writes that must not replace anything (`overwrite = false`).
@Suite("Output path templates")
struct OutputPathTests {
    func problem(_ text: String) -> OutputPathError? {
        do {
            _ = try OutputPathTemplate(text)
            return nil
        } catch {
            return error
        }
    }

    @Test("placeholders are {stem} and {n}, in the file name only; other braces are text; a misspelling is refused")
    func parsing() throws {
        #expect(problem("out/{stme}_x4.png") == .unknownPlaceholder(template: "out/{stme}_x4.png", name: "stme"))
        #expect(problem("out/{stme}.png")?.localizedDescription.contains("(did you mean {stem}?)") == true)
        #expect(problem("out/{stem}/x.png") == .placeholderInFolder(template: "out/{stem}/x.png"))
        #expect(problem("{n}/x.png") == .placeholderInFolder(template: "{n}/x.png"))
        for plain in ["out/x.png", "out/{}.png", "out/{1}.png", "out/{a b}.png", "out/{stem.png", "out/}{.png"] {
            let template = try OutputPathTemplate(plain)
            #expect(!template.isTemplate, "\(plain)")
            #expect(try template.expanded(stem: nil, n: 1) == plain)
        }
        let both = try OutputPathTemplate("out/{stem}_{n}_%05d.png")
        #expect(both.usesStem && both.usesCounter)
        #expect(try both.expanded(stem: "coffee", n: 12) == "out/coffee_12_%05d.png")
        // One pass: a stem holding "{n}" is not substituted again.
        #expect(try OutputPathTemplate("{stem}.png").expanded(stem: "a{n}", n: 3) == "a{n}.png")
        #expect(throws: OutputPathError.noStem(template: "{stem}.png")) { try OutputPathTemplate("{stem}.png").expanded(stem: nil, n: 1) }
        #expect(throws: OutputPathError.notAFileName(template: "x/{stem}", name: "..")) { try OutputPathTemplate("x/{stem}").expanded(stem: "..", n: 1) }
        #expect(throws: OutputPathError.notAFileName(template: "x/.{stem}", name: "..")) { try OutputPathTemplate("x/.{stem}").expanded(stem: ".", n: 1) }
    }

    @Test("{stem} is the source's file name without folder and extension; a frame pattern gives its fixed part")
    func stems() {
        #expect(OutputPathTemplate.stem(ofSource: "/data/samples/coffee.png") == "coffee")
        #expect(OutputPathTemplate.stem(ofSource: "samples/no_time_for_that_tiny.gif") == "no_time_for_that_tiny")
        #expect(OutputPathTemplate.stem(ofSource: "clip.tar.gz") == "clip.tar")
        #expect(OutputPathTemplate.stem(ofSource: "frames/f_%05d.png") == "f")
        #expect(OutputPathTemplate.stem(ofSource: "/videos/clip/%04d.png") == "clip")
        #expect(OutputPathTemplate.stem(ofSource: "/x/100%d.png") == "100")
        #expect(OutputPathTemplate.stem(ofSource: "/x/50%.png") == "50_", "a % never becomes a frame-number pattern")
        #expect(OutputPathTemplate.stem(ofSource: "/x/..png") == nil)
        #expect(FrameStreamInfo(sourcePath: "/a/astronaut.png").sourceStem == "astronaut")
        #expect(FrameStreamInfo().sourceStem == nil)
    }

    @Test("{n} takes the lowest number whose file does not exist, counting links and unfinished picks as taken")
    func counter() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let template = try OutputPathTemplate(dir.path + "/{stem}_{n}.png")
        for taken in [1, 3] { try Data("x".utf8).write(to: dir.appendingPathComponent("a_\(taken).png")) }
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/a_2.png", withDestinationPath: dir.path + "/nowhere")
        let first = try template.target(stem: "a", overwrite: true)
        #expect(first == OutputTarget(path: dir.path + "/a_4.png", replacing: false), "a {n} name is never replaced, whatever overwrite says")
        // Not written yet: a second saver of the same run gets the next number, not the same one.
        #expect(try template.target(stem: "a", overwrite: true).path == dir.path + "/a_5.png")
        // Once written, the file itself keeps the number taken; freed numbers are reused.
        try Data("y".utf8).write(to: URL(fileURLWithPath: first.path))
        try FileManager.default.removeItem(atPath: dir.path + "/a_1.png")
        #expect(try template.target(stem: "a", overwrite: true).path == dir.path + "/a_1.png")
        // The probe decides for a frame sequence by its first file.
        let sequence = try OutputPathTemplate(dir.path + "/s_{n}_%03d.png")
        try Data("z".utf8).write(to: dir.appendingPathComponent("s_1_001.png"))
        let probed = try sequence.target(stem: nil, overwrite: true) { $0.replacingOccurrences(of: "%03d", with: "001") }
        #expect(probed.path == dir.path + "/s_2_%03d.png")
    }

    @Test("a {stem} name never writes through a symbolic link; plain names keep today's rule")
    func linkedNames() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/coffee_x4.png", withDestinationPath: "/tmp/elsewhere.png")
        let template = try OutputPathTemplate(dir.path + "/{stem}_x4.png")
        #expect(throws: OutputPathError.linkedName(path: dir.path + "/coffee_x4.png")) {
            try template.target(stem: "coffee", overwrite: true)
        }
        let plain = try OutputPathTemplate(dir.path + "/coffee_x4.png").target(stem: nil, overwrite: false)
        #expect(plain == OutputTarget(path: dir.path + "/coffee_x4.png", replacing: false))
    }

    @Test("a template's file name matches the names it can produce")
    func matching() throws {
        let template = try OutputPathTemplate("/w/out/{stem}_{n}.png")
        #expect(template.matchesFileName("coffee_12.png"))
        #expect(!template.matchesFileName("coffee_x.png"))
        #expect(!template.matchesFileName("coffee_12.png.tmp"))
        #expect(try OutputPathTemplate("out/{stem}_%05d.png").matchesFileName("a.b_00001.png"))
        #expect(try !OutputPathTemplate("out/{stem}_%05d.png").matchesFileName("a_.png"))
    }

    @Test("replacing: false refuses anything at the path, before the work and again when the file is moved in")
    func noReplace() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out.txt")
        try AtomicFile.write(Data("first".utf8), to: target, replacing: false)
        #expect(try String(contentsOf: target, encoding: .utf8) == "first")
        #expect(throws: OutputPathError.exists(path: target.path)) {
            try AtomicFile.write(Data("second".utf8), to: target, replacing: false)
        }
        #expect(OutputPathError.exists(path: target.path).localizedDescription.contains(target.path))
        // Taken while the body ran: the commit refuses, the other file stays, no temporary is left.
        let late = dir.appendingPathComponent("late.txt")
        #expect(throws: OutputPathError.exists(path: late.path)) {
            try AtomicFile.write(to: late, replacing: false) { temp in
                try Data("ours".utf8).write(to: temp)
                try Data("theirs".utf8).write(to: late)
            }
        }
        #expect(try String(contentsOf: late, encoding: .utf8) == "theirs")
        // A dangling link is something at the path too.
        let link = dir.appendingPathComponent("link.txt")
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: dir.path + "/nowhere.txt")
        #expect(throws: OutputPathError.exists(path: link.path)) { try AtomicFile.write(Data("x".utf8), to: link, replacing: false) }
        #expect(FileKind(path: dir.path + "/nowhere.txt") == .missing)
        // A group (an image sequence) whose second name is taken meanwhile leaves no temporary behind.
        let group = AtomicFileGroup()
        for name in ["s1.txt", "s2.txt"] {
            try group.write(to: dir.appendingPathComponent(name), replacing: false) { try Data(name.utf8).write(to: $0) }
        }
        try Data("theirs".utf8).write(to: dir.appendingPathComponent("s2.txt"))
        #expect(throws: OutputPathError.exists(path: dir.path + "/s2.txt")) { try group.commit() }
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(names == ["late.txt", "link.txt", "out.txt", "s1.txt", "s2.txt"], "\(names)")
        #expect(AtomicFile.pendingTemporaryFiles.allSatisfy { !$0.hasPrefix(dir.path) })
    }
}
