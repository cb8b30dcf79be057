import Foundation
import LapseTensor
import Testing

/// `TorchGenerator` against `torch.manual_seed(s); torch.randn/rand` (Tools/fixtures/tensor_rng.py), bit for bit.
@Suite("TorchGenerator bit identity")
struct TorchGeneratorTests {
    struct RNGCase: Sendable, CustomTestStringConvertible {
        let seed: UInt64, kind: String, shape: [Int]
        let values: [UInt32]?  // full tensor (small)
        let slices: [(start: Int, values: [UInt32])]
        let sum: Double?
        var testDescription: String { "\(kind)\(shape) seed \(seed)" }
    }

    nonisolated(unsafe) static let fixture: [String: Any] = {
        let url = OpFixtures.directory.appendingPathComponent("rng.json")
        guard let data = try? Data(contentsOf: url), let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return [:] }
        return json
    }()

    static let cases: [RNGCase] = ((fixture["cases"] as? [[String: Any]]) ?? []).map { c in
        RNGCase(seed: (c["seed"] as! NSNumber).uint64Value, kind: c["kind"] as! String,
                shape: (c["shape"] as! [NSNumber]).map(\.intValue),
                values: (c["values"] as? [NSNumber])?.map(\.uint32Value),
                slices: ((c["slices"] as? [[String: Any]]) ?? []).map {
                    (($0["start"] as! NSNumber).intValue, ($0["values"] as! [NSNumber]).map(\.uint32Value))
                },
                sum: (c["sum"] as? NSNumber)?.doubleValue)
    }

    @Test func fixturePresent() {
        #expect(Self.cases.count >= 60, "rng fixture missing: run Tools/fixtures/tensor_rng.py")
    }

    @Test(arguments: cases)
    func matchesTorch(_ c: RNGCase) {
        let g = TorchGenerator(seed: c.seed)
        let t = c.kind == "randn" ? g.randn(c.shape) : g.rand(c.shape)
        #expect(t.shape == c.shape)
        let bits = t.scalars.map(\.bitPattern)
        if let values = c.values {
            #expect(bits == values, "\(c.testDescription): first mismatch at \(bits.indices.first { $0 < values.count && bits[$0] != values[$0] } ?? -1)")
        }
        for slice in c.slices {
            #expect(Array(bits[slice.start..<(slice.start + 16)]) == slice.values,
                    "\(c.testDescription): slice at \(slice.start) differs")
        }
        if let sum = c.sum {
            let mine = t.scalars.reduce(0.0) { $0 + Double($1) }
            #expect(abs(mine - sum) <= 1e-6 * max(1, abs(sum)), "\(c.testDescription): sum \(mine) vs \(sum)")
        }
    }

    /// Successive calls on one generator, including the cached second Box–Muller sample of small randn draws.
    @Test func sequenceSharesState() throws {
        let seq = try #require(Self.fixture["sequence"] as? [String: Any], "rng fixture missing sequence")
        let g = TorchGenerator(seed: (seq["seed"] as! NSNumber).uint64Value)
        for step in seq["steps"] as! [[String: Any]] {
            let shape = (step["shape"] as! [NSNumber]).map(\.intValue)
            let kind = step["kind"] as! String
            let t = kind == "randn" ? g.randn(shape) : g.rand(shape)
            #expect(t.scalars.map(\.bitPattern) == (step["values"] as! [NSNumber]).map(\.uint32Value), "\(kind)\(shape)")
        }
    }

    @Test func manualSeedResets() {
        let g = TorchGenerator(seed: 3)
        let a = g.randn([5])
        _ = g.rand([100])
        g.manualSeed(3)
        #expect(g.randn([5]).scalars == a.scalars)
    }
}

@Suite("TorchGenerator snapshots")
struct TorchGeneratorSnapshotTests {
    /// A generator rebuilt from a snapshot continues bit for bit, also mid-way through a Box–Muller pair (odd-sized
    /// small randn draws leave one cached normal).
    @Test func snapshotResumesExactly() throws {
        let g = TorchGenerator(seed: 33)
        _ = g.randn([1, 4, 3, 5])
        _ = g.randn([3])
        let resumed = try #require(TorchGenerator(snapshot: g.snapshot))
        #expect(resumed.randn([7]).scalars.map(\.bitPattern) == g.randn([7]).scalars.map(\.bitPattern))
        #expect(resumed.randn([40]).scalars.map(\.bitPattern) == g.randn([40]).scalars.map(\.bitPattern))
        #expect(resumed.rand([9]).scalars.map(\.bitPattern) == g.rand([9]).scalars.map(\.bitPattern))
    }

    @Test func impossibleSnapshotsAreRefused() {
        var words = TorchGenerator(seed: 1).snapshot
        #expect(TorchGenerator(snapshot: Array(words.dropLast())) == nil)
        words[3] = 1 << 40
        #expect(TorchGenerator(snapshot: words) == nil)
        words = TorchGenerator(seed: 1).snapshot
        words[624] = 625
        #expect(TorchGenerator(snapshot: words) == nil)
    }
}
