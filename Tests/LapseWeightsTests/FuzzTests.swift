import Foundation
import LapseTensor
import LapseWeights
import Testing

/// Mutated files of every kind must end in a typed error or a valid checkpoint: never a crash or a hang.
@Suite("fuzzing")
struct FuzzTests {
    /// Deterministic xorshift generator so a failure reproduces.
    struct Rng {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return state
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    }

    static func mutate(_ original: [UInt8], _ rng: inout Rng) -> [UInt8] {
        var b = original
        for _ in 0..<(1 + rng.below(4)) {
            guard !b.isEmpty else { break }
            switch rng.below(6) {
            case 0: b[rng.below(b.count)] ^= UInt8(1 << rng.below(8))                      // bit flip
            case 1: b[rng.below(b.count)] = UInt8(truncatingIfNeeded: rng.next())           // random byte
            case 2: b.removeLast(rng.below(b.count))                                        // truncation
            case 3: b.insert(UInt8(truncatingIfNeeded: rng.next()), at: rng.below(b.count)) // insertion
            case 4:                                                                         // lying length: 0xFF run
                let at = rng.below(b.count)
                for i in at..<min(b.count, at + 1 + rng.below(4)) { b[i] = rng.below(2) == 0 ? 0xFF : 0x7F }
            default: b.remove(at: rng.below(b.count))                                       // deletion
            }
        }
        return b
    }

    /// Opens each mutant and reads every tensor it claims to have.
    static func fuzz(_ fixture: String, iterations: Int, seed: UInt64, extension ext: String, companion: String? = nil) throws -> (ok: Int, failed: Int) {
        let original = Array(try Data(contentsOf: URL(fileURLWithPath: Paths.fixture(fixture))))
        let dir = try TestSupportDir.make()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        if let companion { try FileManager.default.copyItem(atPath: Paths.fixture(companion), toPath: dir + "/m." + (companion as NSString).pathExtension) }
        let path = dir + "/m." + ext
        var rng = Rng(state: seed)
        var ok = 0, failed = 0
        for _ in 0..<iterations {
            try Data(mutate(original, &rng)).write(to: URL(fileURLWithPath: path))
            do {
                let file = try CheckpointFile.open(path)
                for key in file.keys { _ = try file.tensor(key) }
                _ = try Weights.stateDict(from: file)
                ok += 1
            } catch let error as WeightsError {
                #expect(error.errorDescription?.contains(dir) == true, "\(error)")
                failed += 1
            } catch {
                Issue.record("untyped error \(error)")
            }
        }
        return (ok, failed)
    }

    @Test(arguments: [
        ("plain.pth", "pth", nil as String?, UInt64(1)), ("nested.pth", "pth", nil, 2), ("zip64.pth", "pth", nil, 3), ("legacy.pth", "pth", nil, 7),
        ("dtypes.safetensors", "safetensors", nil, 4), ("tiny.param", "param", "tiny.bin", 5), ("tiny.bin", "bin", "tiny.param", 6),
    ])
    func mutants(fixture: String, ext: String, companion: String?, seed: UInt64) throws {
        let result = try Self.fuzz(fixture, iterations: 800, seed: seed, extension: ext, companion: companion)
        #expect(result.ok + result.failed == 800)
        #expect(result.failed > 0, "mutations of \(fixture) should be caught at least sometimes")
    }
}
