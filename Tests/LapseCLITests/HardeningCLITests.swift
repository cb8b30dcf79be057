import Foundation
import LapseCLI
import LapseGraph
import LapseTestSupport
import Testing

/// What a hostile-input campaign found in the command line: vague messages, terminal escapes, signals.
@Suite("CLI hardening")
struct HardeningCLITests {
    @Test func graphPathsThatAreNotFilesSayWhatTheyAre() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let zero = lapse(["validate", "/dev/zero"])
        #expect(zero.code == 2)
        #expect(zero.err == "error: cannot read the graph file: /dev/zero is a character device, not a regular file; Lapse reads and replaces regular files only\n")
        let folder = lapse(["validate", dir.path])
        #expect(folder.code == 2)
        #expect(folder.err.contains("\(dir.path) is a folder, not a regular file"), "\(folder.err)")
        let missing = lapse(["run", dir.appendingPathComponent("nope.json").path])
        #expect(missing.err.contains("nope.json: no such file"), "\(missing.err)")
        #expect(!(zero.err + folder.err + missing.err).contains("NSCocoaErrorDomain"))
    }

    @Test func aFileAsPluginPathIsNamed() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("plugins.txt")
        try Data("x".utf8).write(to: file)
        let result = lapse(["nodes", "--plugin-path", file.path])
        #expect(result.code == 0)
        #expect(result.err == "warning: plugin directory \(file.path): is a regular file, not a folder of plugin libraries\n")
    }

    @Test func controlCharactersFromGraphsAreEscapedBeforePrinting() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // A node id and a node type carrying terminal escape sequences (clear screen, set title).
        let graph = try writeGraph(#"{"version": 1, "nodes": {"a\u001b[2J": {"type": "Evil\u001b]0;owned\u0007"}}}"#, in: dir)
        let result = lapse(["validate", graph])
        #expect(result.code == 2)
        #expect(!result.err.contains("\u{1B}") && !result.err.contains("\u{07}"), "\(result.err.debugDescription)")
        #expect(result.err.contains(#"a\u{1B}[2J"#), "\(result.err)")
    }

    @Test func usageErrorsExit64() {
        let result = lapse(["run", "--no-such-option", "g.json"])
        #expect(result.code == ExitStatus.usage)
    }
}
