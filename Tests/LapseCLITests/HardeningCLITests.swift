import Foundation
import LapseCLI
import LapseGraph
import LapseTensor
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

@Suite("OpenBLAS kernels")
struct OpenBLASKernelTests {
    /// Runs the built `lapse doctor` with `OPENBLAS_CORETYPE` set to `core` (nil: unset) and returns its output.
    func doctor(core: String?) throws -> String {
        let process = Process()
        process.executableURL = Paths.products.appendingPathComponent("lapse")
        process.arguments = ["doctor"]
        var environment = ProcessInfo.processInfo.environment
        environment["OPENBLAS_CORETYPE"] = core
        environment["LAPSE_OPENBLAS_REEXEC"] = nil
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        return text
    }

    @Test func lapseUsesTheBestKernelsTheCPUSupports() throws {
        // What OpenBLAS picks by itself on this machine, without the variable (the test process never re-executes).
        let machine = MachineInfo.current
        let text = try doctor(core: nil)
        #expect(text.contains("CPU:        \(machine.cpuModel)"))
        if ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil, machine.openBLASFellBack,
           let best = machine.bestOpenBLASCore {
            // OpenBLAS does not know this CPU: lapse restarted itself with the right core.
            #expect(text.contains("kernels:    \(best)\n"), "\(text)")
            #expect(text.contains("OpenBLAS did not recognise this CPU and chose \(machine.openBLASCore)"), "\(text)")
        }
        #expect(!text.contains("kernels:    Prescott") || machine.bestOpenBLASCore == nil, "\(text)")
    }

    @Test func aCoreTheUserSetIsRespected() throws {
        let text = try doctor(core: "Prescott")
        #expect(text.contains("kernels:    Prescott\n"), "\(text)")
        #expect(text.contains("OPENBLAS_CORETYPE=Prescott is set"), "\(text)")
    }

    @Test func fallbackDetectionFollowsTheFlags() {
        var machine = MachineInfo.current
        machine.flags = ["avx", "avx2", "fma"]
        machine.openBLASCore = "Prescott"
        #expect(machine.bestOpenBLASCore == "Haswell" && machine.openBLASFellBack)
        machine.flags.formUnion(["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"])
        #expect(machine.bestOpenBLASCore == "SkylakeX")
        machine.flags.insert("avx512_bf16")
        #expect(machine.bestOpenBLASCore == "Cooperlake")
        machine.openBLASCore = "Cooperlake"
        #expect(!machine.openBLASFellBack)
        machine.openBLASCore = "Zen"
        machine.flags = ["avx", "avx2", "fma"]
        #expect(!machine.openBLASFellBack, "a core OpenBLAS chose for this CPU family is trusted")
    }
}
