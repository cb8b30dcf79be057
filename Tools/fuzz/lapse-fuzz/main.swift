import Foundation
import LapseFuzzing
#if canImport(Glibc)
import Glibc
#endif

// lapse-fuzz: a mutation fuzzer for Lapse's parsers. Each family runs in this process; a crash (signal or Swift
// trap) or a hang is caught here, the input that caused it is written to the crash folder, and the process exits
// non-zero so the calling script (Tools/fuzz/run.sh) reports it. See Tools/fuzz/README.md.

let usage = """
    usage: lapse-fuzz FAMILY [--runs N] [--seconds S] [--seed K] [--corpus DIR] [--crash-dir DIR]
                             [--hang-seconds S] [--max-memory-mb M]
           lapse-fuzz --list
           lapse-fuzz FAMILY --replay FILE   (run one input, e.g. a saved crash)
    """

nonisolated(unsafe) var arguments = Array(CommandLine.arguments.dropFirst())
@MainActor func option(_ name: String) -> String? {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count else { return nil }
    defer { arguments.removeSubrange(i...(i + 1)) }
    return arguments[i + 1]
}
if arguments.contains("--list") {
    for family in FuzzFamilies.all { print("\(family.name.padding(toLength: 16, withPad: " ", startingAt: 0)) \(family.summary)") }
    exit(0)
}
let runs = Int(option("--runs") ?? "") ?? 100_000
let seconds = Double(option("--seconds") ?? "") ?? .infinity
let seed = UInt64(option("--seed") ?? "") ?? 1
let corpusDir = option("--corpus")
let crashDir = option("--crash-dir") ?? "fuzz-crashes"
nonisolated(unsafe) let hangSeconds = Double(option("--hang-seconds") ?? "") ?? 10
let maxMemoryMB = Int(option("--max-memory-mb") ?? "") ?? 4096
let replay = option("--replay")
guard arguments.count == 1, let family = FuzzFamilies.named(arguments[0]) else {
    FileHandle.standardError.write(Data((usage + "\nfamilies: \(FuzzFamilies.all.map(\.name).joined(separator: ", "))\n").utf8))
    exit(64)
}

// Memory: a parser that allocates without bound fails here instead of taking the machine down.
var limit = rlimit(rlim_cur: rlim_t(maxMemoryMB) << 20, rlim_max: rlim_t(maxMemoryMB) << 20)
setrlimit(Int32(RLIMIT_AS.rawValue), &limit)

try? FileManager.default.createDirectory(atPath: crashDir, withIntermediateDirectories: true)
nonisolated(unsafe) let crashPath = strdup("\(crashDir)/crash-\(family.name)-\(getpid()).bin")!
nonisolated(unsafe) let hangPath = strdup("\(crashDir)/hang-\(family.name)-\(getpid()).bin")!

// The input being run, for the signal handler (which may only call async-signal-safe functions).
nonisolated(unsafe) let currentBytes = UnsafeMutablePointer<UInt8>.allocate(capacity: 1 << 21)
nonisolated(unsafe) var currentCount = 0
let started = SharedTime(Date.timeIntervalSinceReferenceDate)

@Sendable func saveCurrent(_ path: UnsafePointer<CChar>) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    if fd >= 0 {
        _ = write(fd, currentBytes, currentCount)
        close(fd)
    }
}

// Crash handler on its own stack, so a stack overflow is caught too.
let altStackSize = 1 << 16
var altStack = stack_t(ss_sp: UnsafeMutableRawPointer.allocate(byteCount: altStackSize, alignment: 16), ss_flags: 0,
                       ss_size: altStackSize)
sigaltstack(&altStack, nil)
for signalNumber in [SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGABRT, SIGFPE] {
    var action = sigaction()
    action.__sigaction_handler.sa_handler = { signalNumber in
        saveCurrent(crashPath)
        let message = "lapse-fuzz: CRASH (signal \(signalNumber)); input saved\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        _exit(70)
    }
    action.sa_flags = Int32(SA_ONSTACK)
    sigaction(signalNumber, &action, nil)
}

if let replay {
    let data = try Data(contentsOf: URL(fileURLWithPath: replay))
    let scratch = NSTemporaryDirectory() + "lapse-fuzz-replay-\(getpid())"
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: scratch) }
    do {
        try family.run(data, scratch)
        print("accepted")
    } catch {
        print("error: \(error.localizedDescription)")
    }
    exit(0)
}

// Hang watchdog: an input running longer than --hang-seconds is saved and the run stops.
Thread.detachNewThread {
    while true {
        sleep(1)
        if Date.timeIntervalSinceReferenceDate - started.value > hangSeconds {
            saveCurrent(hangPath)
            FileHandle.standardError.write(Data("lapse-fuzz: HANG (> \(hangSeconds) s); input saved to \(String(cString: hangPath))\n".utf8))
            _exit(71)
        }
    }
}

var extra: [Data] = []
if let corpusDir, let names = try? FileManager.default.contentsOfDirectory(atPath: corpusDir) {
    for name in names.sorted() where !name.hasPrefix(".") {
        if let data = FileManager.default.contents(atPath: corpusDir + "/" + name) { extra.append(data) }
    }
}
var runner = FuzzRunner(family: family, seed: seed, extraSeeds: extra)
runner.willRun = { input in
    let n = min(input.count, 1 << 21)
    input.withUnsafeBufferPointer { currentBytes.update(from: $0.baseAddress!, count: n) }
    currentCount = n
    started.value = Date.timeIntervalSinceReferenceDate
}
let clock = Date()
let report = try runner.run(inputs: runs, seconds: seconds)
started.value = .infinity
var usage_ = rusage()
getrusage(RUSAGE_SELF.rawValue, &usage_)
let peakMB = Double(usage_.ru_maxrss) / 1024
print(String(format: "%@: %d inputs in %.1f s, %d clean errors (%d distinct messages), %d accepted, %d vague errors, 0 crashes, 0 hangs, slowest input %.2f s, peak RSS %.0f MiB",
             family.name, report.inputs, Date().timeIntervalSince(clock), report.cleanErrors, report.distinctMessages.count,
             report.accepted, report.vagueErrors.count, report.slowest, peakMB))
for vague in report.vagueErrors { print("  vague error: \(vague)") }
exit(report.vagueErrors.isEmpty ? 0 : 1)

/// A Double shared with the watchdog thread.
final class SharedTime: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Double
    init(_ value: Double) { stored = value }
    var value: Double {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}
