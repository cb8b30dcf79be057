import Foundation
import LapseSupport

/// One parser family under fuzz: seed inputs and a target that parses one input and uses everything it yields.
///
/// `run` must end in a clean typed error or a success; a crash, a trap or a hang is what fuzzing looks for. The
/// target gets a scratch folder of its own (inputs that need a file are written there).
public struct FuzzFamily: Sendable {
    public var name: String
    /// What the family covers, for `lapse-fuzz --list`.
    public var summary: String
    /// Built-in seeds (small valid inputs made in code); corpus files under `Tools/fuzz/corpus/<name>/` are added.
    public var seeds: @Sendable () throws -> [Data]
    /// Extra mutation tokens for text formats (JSON keys, ncnn layer names), spliced in at random.
    public var dictionary: [String]
    public var run: @Sendable (_ input: Data, _ scratch: String) throws -> Void

    public init(name: String, summary: String, dictionary: [String] = [], seeds: @escaping @Sendable () throws -> [Data],
                run: @escaping @Sendable (_ input: Data, _ scratch: String) throws -> Void) {
        self.name = name
        self.summary = summary
        self.dictionary = dictionary
        self.seeds = seeds
        self.run = run
    }
}

/// Every family, by name. Families live one file per parser family beside this one.
public enum FuzzFamilies {
    public static var all: [FuzzFamily] {
        weightsFamilies + mediaFamilies + graphFamilies
    }

    public static func named(_ name: String) -> FuzzFamily? { all.first { $0.name == name } }
}

/// SplitMix64: small, fast and deterministic, so a run with the same seed mutates the same way.
public struct FuzzRandom: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }
}

/// Byte-level mutations in the style of libFuzzer's: flips, interesting integers at any width, inserted and erased
/// runs, copied runs, splices with another seed, dictionary tokens and ASCII number edits for text formats.
public struct Mutator: Sendable {
    public var dictionary: [[UInt8]]
    public var maxSize: Int

    public init(dictionary: [String] = [], maxSize: Int = 1 << 20) {
        self.dictionary = dictionary.map { Array($0.utf8) }
        self.maxSize = maxSize
    }

    static let interesting: [UInt64] = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFF_FFFF,
                                        0x8000_0000, 0xFFFF_FFFF, 0x1_0000_0000, 0x7FFF_FFFF_FFFF_FFFF,
                                        0x8000_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFFF, 1 << 40, 1 << 62]
    static let numbers = ["0", "-1", "1", "-0", "2147483648", "4294967296", "9223372036854775807",
                          "-9223372036854775808", "9223372036854775808", "1e308", "1e999", "NaN", "0.5", "65536",
                          "99999999999999999999", "32768", "100000"]

    public func mutate(_ input: [UInt8], other: [UInt8], rng: inout FuzzRandom) -> [UInt8] {
        var b = input
        for _ in 0..<(1 + rng.below(rng.below(8) + 1)) {
            apply(&b, other: other, rng: &rng)
        }
        if b.count > maxSize { b.removeLast(b.count - maxSize) }
        return b
    }

    private func apply(_ b: inout [UInt8], other: [UInt8], rng: inout FuzzRandom) {
        let at = rng.below(b.count + 1)
        switch rng.below(12) {
        case 0 where !b.isEmpty: b[rng.below(b.count)] ^= UInt8(1 << rng.below(8))
        case 1 where !b.isEmpty: b[rng.below(b.count)] = UInt8(truncatingIfNeeded: rng.next())
        case 2 where !b.isEmpty: // interesting integer, little or big endian, 1/2/4/8 bytes
            let width = [1, 2, 4, 8][rng.below(4)]
            var v = Self.interesting[rng.below(Self.interesting.count)]
            if rng.below(2) == 0 { v = v.byteSwapped >> UInt64(64 - 8 * width) }
            let start = rng.below(b.count)
            for k in 0..<width where start + k < b.count { b[start + k] = UInt8(truncatingIfNeeded: v >> UInt64(8 * k)) }
        case 3 where !b.isEmpty: b.removeSubrange(at == b.count ? (b.count - 1)..<b.count : at..<min(b.count, at + 1 + rng.below(16)))
        case 4: b.insert(contentsOf: (0..<(1 + rng.below(8))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: at)
        case 5 where !b.isEmpty: // copy a run elsewhere
            let from = rng.below(b.count), length = 1 + rng.below(min(64, b.count - from))
            b.insert(contentsOf: b[from..<(from + length)], at: rng.below(b.count + 1))
        case 6 where !other.isEmpty: // splice with another seed
            let cut = rng.below(other.count)
            b = Array(b.prefix(at)) + other[cut...]
        case 7 where !b.isEmpty: b.removeLast(rng.below(b.count) + 1 > b.count ? b.count : rng.below(b.count) + 1) // truncate
        case 8 where !dictionary.isEmpty: b.insert(contentsOf: dictionary[rng.below(dictionary.count)], at: at)
        case 9: // replace an ASCII number with an interesting one
            if let range = numberRange(in: b, near: rng.below(max(1, b.count))) {
                b.replaceSubrange(range, with: Array(Self.numbers[rng.below(Self.numbers.count)].utf8))
            } else {
                b.insert(contentsOf: Array(Self.numbers[rng.below(Self.numbers.count)].utf8), at: at)
            }
        case 10 where b.count > 1: // repeat a run many times (deep nesting, long tables)
            let from = rng.below(b.count), length = 1 + rng.below(min(8, b.count - from))
            let run = Array(b[from..<(from + length)])
            let times = 1 + rng.below(rng.below(2) == 0 ? 64 : 4096)
            var repeated: [UInt8] = []
            repeated.reserveCapacity(run.count * times)
            for _ in 0..<times { repeated += run }
            b.insert(contentsOf: repeated, at: from)
        default:
            if !b.isEmpty { b.swapAt(rng.below(b.count), rng.below(b.count)) }
        }
    }

    private func numberRange(in b: [UInt8], near start: Int) -> Range<Int>? {
        guard !b.isEmpty else { return nil }
        var i = min(start, b.count - 1)
        let isDigit = { (c: UInt8) in c >= 0x30 && c <= 0x39 }
        while i < b.count, !isDigit(b[i]) { i += 1 }
        guard i < b.count else { return nil }
        var j = i
        while j < b.count, isDigit(b[j]) || b[j] == UInt8(ascii: ".") { j += 1 }
        if i > 0, b[i - 1] == UInt8(ascii: "-") { i -= 1 }
        return i..<j
    }
}

/// What one family's run saw.
public struct FuzzReport: Sendable {
    public var family: String
    public var inputs = 0
    /// Inputs refused with an error (each had a non-empty message).
    public var cleanErrors = 0
    public var accepted = 0
    /// Errors whose message was empty or Foundation's generic text: a bug even without a crash.
    public var vagueErrors: [String] = []
    public var slowest: Double = 0
    public var distinctMessages = Set<String>()

    public init(family: String) { self.family = family }
}

/// Runs a family in this process: mutation, execution and bookkeeping. Crashes and hangs are caught by the
/// `lapse-fuzz` driver around it (a signal handler and a watchdog); tests call it for a short smoke pass.
public struct FuzzRunner {
    public var family: FuzzFamily
    public var seed: UInt64
    public var extraSeeds: [Data]
    /// Called with each input before it runs (the driver keeps it for its crash handler).
    public var willRun: (([UInt8]) -> Void)?

    public init(family: FuzzFamily, seed: UInt64 = 1, extraSeeds: [Data] = []) {
        self.family = family
        self.seed = seed
        self.extraSeeds = extraSeeds
    }

    /// Runs the seeds unchanged, then mutants until `inputs` have run or `seconds` have passed.
    public func run(inputs limit: Int, seconds: Double = .infinity) throws -> FuzzReport {
        let seeds = try family.seeds() + extraSeeds
        precondition(!seeds.isEmpty, "family \(family.name) has no seeds")
        let corpus = seeds.map { Array($0) }
        let scratch = NSTemporaryDirectory() + "lapse-fuzz-\(family.name)-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let mutator = Mutator(dictionary: family.dictionary)
        var rng = FuzzRandom(seed: seed)
        var report = FuzzReport(family: family.name)
        let start = Date()
        while report.inputs < limit, Date().timeIntervalSince(start) < seconds {
            let input: [UInt8]
            if report.inputs < corpus.count {
                input = corpus[report.inputs]
            } else {
                input = mutator.mutate(corpus[rng.below(corpus.count)], other: corpus[rng.below(corpus.count)], rng: &rng)
            }
            willRun?(input)
            let began = Date()
            do {
                try family.run(Data(input), scratch)
                report.accepted += 1
            } catch {
                let message = error.localizedDescription
                if message.isEmpty || message.contains("The operation could not be completed")
                    || message.contains("NSCocoaErrorDomain") {
                    if report.vagueErrors.count < 20 { report.vagueErrors.append("\(type(of: error)): \(message)") }
                } else {
                    report.cleanErrors += 1
                    if report.distinctMessages.count < 10_000 { report.distinctMessages.insert(String(message.prefix(200))) }
                }
            }
            report.slowest = max(report.slowest, Date().timeIntervalSince(began))
            report.inputs += 1
        }
        return report
    }
}
