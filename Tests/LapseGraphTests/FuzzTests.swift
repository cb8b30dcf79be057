import Foundation
import LapseGraph
import LapseTestSupport
import Testing

/// A small deterministic generator (SplitMix64) so failures reproduce.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}

@Suite("Malformed graphs")
struct FuzzTests {
    static let seed = graph(#"""
        "src": {"type": "TestValue", "params": {"value": 3}},
        "sum": {"type": "TestAdd", "inputs": {"a": "src.value"}, "params": {"b": 4, "mode": "add", "scale": 1.5, "flag": true}},
        "gen": {"type": "TestFrameGenerator", "params": {"count": 2}},
        "sink": {"type": "TestFrameSink", "inputs": {"frames": "gen"}},
        "out": {"type": "TestOutput", "inputs": {"value": "sum"}}
        """#)

    static let fragments: [[UInt8]] = ["{", "}", "[", "]", ",", ":", "\"", "\\", "null", "1e999", "-", "0.5", "\"nodes\"",
                                        "\"type\"", "\"inputs\"", "\"src.value\"", "\u{0}", "\u{FFFF}", "é", "\n", "tru",
                                        "{\"a\":", "\"out\"", "[[[[", "\\u12"].map { Array($0.utf8) }

    @Test func thousandsOfMutationsNeverCrash() {
        let registry = SyntheticNodes.registry()
        let validator = GraphValidator(registry: registry)
        var rng = SplitMix(state: 0x1A95E)
        let base = Array(Self.seed.utf8)
        #expect((try? validator.validate(data: Data(base)).get()) != nil, "the seed graph is valid")
        var invalid = 0
        for _ in 0..<3000 {
            var bytes = base
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let position = Int.random(in: 0...bytes.count, using: &rng)
                switch Int.random(in: 0..<5, using: &rng) {
                case 0 where position < bytes.count: bytes.remove(at: position)
                case 1: bytes.insert(contentsOf: Self.fragments.randomElement(using: &rng)!, at: position)
                case 2 where position < bytes.count: bytes[position] = UInt8.random(in: 0...255, using: &rng)
                case 3: bytes = Array(bytes.prefix(position))
                default:
                    let start = Int.random(in: 0..<max(bytes.count, 1), using: &rng)
                    let chunk = bytes[start..<min(bytes.count, start + Int.random(in: 1...20, using: &rng))]
                    bytes.insert(contentsOf: chunk, at: min(position, bytes.count))
                }
            }
            switch validator.validate(data: Data(bytes)) {
            case .success: break
            case .failure(let failure):
                invalid += 1
                #expect(!failure.diagnostics.isEmpty)
                #expect(failure.diagnostics.allSatisfy { !$0.message.isEmpty && $0.description.hasPrefix("error: ") })
            }
        }
        #expect(invalid > 2500)
    }

    @Test func deepNestingIsRefusedNotOverflowed() {
        let deep = String(repeating: "[", count: 100_000)
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(deep) }
    }

    @Test func parserAcceptsValidJSONEdgeCases() throws {
        let value = try JSONParser.parse(#" {"a": [1, -0.5e2, "\u00e9\ud83d\ude00\n", true, false, null, {}], "b": 9223372036854775807} "#)
        guard case .array(let items) = value["a"]?.kind, case .string(let s) = items[2].kind else {
            Issue.record("bad parse"); return
        }
        #expect(s == "é😀\n")
        guard case .number(let d, nil) = items[1].kind else { Issue.record("float"); return }
        #expect(d == -50)
        guard case .number(_, let i?) = value["b"]?.kind else { Issue.record("int"); return }
        #expect(i == Int.max)
        for bad in ["01", "[1,]", "{\"a\" 1}", "\"\\x\"", "1.", "--1", "[1] 2", "\"\u{1}\""] {
            #expect(throws: JSONSyntaxError.self, "\(bad)") { try JSONParser.parse(bad) }
        }
    }
}
