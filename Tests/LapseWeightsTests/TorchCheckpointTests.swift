import Foundation
import LapseTensor
import LapseWeights
import Testing

@Suite("PyTorch checkpoints")
struct TorchCheckpointTests {
    func expectMatches(_ name: String, expected: String) throws {
        let file = try CheckpointFile.open(Paths.fixture(name))
        let reference = try CheckpointFile.open(Paths.fixture(expected))
        #expect(file.format == .torch)
        #expect(Set(file.keys) == Set(reference.keys), "\(name)")
        for key in reference.keys {
            let a = try file.tensor(key), b = try reference.tensor(key)
            #expect(a.shape == b.shape, "\(name): \(key)")
            #expect(maxDifference(a, b) == 0, "\(name): \(key)")
        }
    }

    @Test func plainStateDictWithViewsAndSharedStorage() throws {
        try expectMatches("plain.pth", expected: "plain-expected.safetensors")
        let file = try CheckpointFile.open(Paths.fixture("plain.pth"))
        #expect(file.keys.first == "conv.weight")
        #expect(file.shape(of: "base_t") == [6, 4])
        #expect(file.dtype(of: "half") == .f16 && file.dtype(of: "bf") == .bf16 && file.dtype(of: "long") == .i64)
        #expect(try file.tensor("long").scalars == [-3, -2, -1, 0, 1, 2, 3, 4])
        #expect(try file.tensor("mask").scalars == [1, 0, 1])
        #expect(try file.tensor("bytes").scalars == [250, 251, 252, 253, 254, 255])
        #expect(try file.tensor("scalar").scalars == [2.5])
        #expect(try file.tensor("empty").shape == [0, 3])
        // base_t is base transposed: element [j][i] == base[i][j].
        let base = try file.tensor("base").scalars, t = try file.tensor("base_t").scalars
        #expect(t[1 * 4 + 3] == base[3 * 6 + 1])
    }

    @Test func cudaLocationsAndUnalignedEntries() throws {
        // Saved "from cuda:0" and re-zipped by Python's zipfile without torch's 64-byte alignment.
        try expectMatches("cuda.pth", expected: "plain-expected.safetensors")
    }

    @Test func zip64Directory() throws {
        let file = try CheckpointFile.open(Paths.fixture("zip64.pth"))
        let weights = try Weights.stateDict(from: file)
        let reference = try CheckpointFile.open(Paths.fixture("nested-expected.safetensors"))
        #expect(Set(weights.keys) == Set(reference.keys))
        for key in reference.keys { #expect(maxDifference(try weights.tensor(key), try reference.tensor(key)) == 0) }
    }

    @Test func nestedTrainingCheckpointPrefersEMA() throws {
        let file = try CheckpointFile.open(Paths.fixture("nested.pth"))
        #expect(file.keys.contains("params_ema.module.body.0.weight"))
        let weights = try Weights.stateDict(from: file)
        #expect(weights.origin.hasSuffix("[params_ema]"))
        let reference = try CheckpointFile.open(Paths.fixture("nested-expected.safetensors"))
        #expect(Set(weights.keys) == Set(reference.keys))
        for key in reference.keys { #expect(maxDifference(try weights.tensor(key), try reference.tensor(key)) == 0, "\(key)") }

        let root = try #require(file.root)
        #expect(root["epoch"] == .int(7))
        #expect(root["lr"]?.doubleValue == 1e-4)
        #expect(root["name"] == .string("net"))
        #expect(root["flags"] == .list([.bool(true), .none, .tuple([.int(1), .float(2.5)])]))
        #expect(root["blob"] == .bytes([0, 1, 97, 98, 99]))
        #expect(root["neg"] == .int(-5))
        if case .bigInt(let bytes)? = root["big"] { #expect(bytes.count == 9 && bytes[8] == 0x40) } else { Issue.record("2**70 should be a bigInt") }
        #expect(root["params_ema"]?["module.body.0.weight"] == .tensor("params_ema.module.body.0.weight"))
    }

    @Test func forbiddenGlobalIsNamedAndNothingRuns() throws {
        let path = Paths.fixture("evil.pth")
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path) }
        #expect(error == .forbiddenGlobal(file: path, name: "posix.system"))
        #expect(error?.errorDescription?.contains("forbidden global \"posix.system\"") == true)
    }

    @Test func legacyPickleFormat() throws {
        try expectMatches("legacy.pth", expected: "legacy-expected.safetensors")
    }

    @Test(arguments: [("deflated.pth", "compressed"), ("no-data-pkl.pth", "no data.pkl")])
    func refusedFormats(name: String, message: String) throws {
        let path = Paths.fixture(name)
        let error = expectWeightsError(path) {
            let file = try CheckpointFile.open(path)
            for key in file.keys { _ = try file.tensor(key) }
        }
        #expect(error?.errorDescription?.contains(message) == true, "\(error?.errorDescription ?? "")")
    }

    /// Builds a minimal torch zip around a hand-written pickle.
    static func zipWith(pickle: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF)] }
        func le32(_ v: Int) -> [UInt8] { le16(v & 0xFFFF) + le16(v >> 16 & 0xFFFF) }
        let name = Array("a/data.pkl".utf8)
        out += le32(0x0403_4B50) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0) + le32(0)
        out += le32(pickle.count) + le32(pickle.count) + le16(name.count) + le16(0) + name + pickle
        let cd = out.count
        out += le32(0x0201_4B50) + le16(20) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0) + le32(0)
        out += le32(pickle.count) + le32(pickle.count) + le16(name.count) + le16(0) + le16(0) + le16(0) + le16(0) + le32(0) + le32(0) + name
        let cdSize = out.count - cd
        out += le32(0x0605_4B50) + le16(0) + le16(0) + le16(1) + le16(1) + le32(cdSize) + le32(cd) + le16(0)
        return out
    }

    @Test(arguments: [
        ([0x80, 0x02, 0x63] + Array("builtins\neval\n".utf8) + [0x2E], "forbidden global \"builtins.eval\""),
        ([0x80, 0x02, 0x8C, 0x02] + Array("os".utf8) + [0x8C, 0x06] + Array("system".utf8) + [0x93, 0x2E], "forbidden global \"os.system\""),
        ([0x80, 0x02, 0x69, 0x2E], "opcode 0x69"),                 // INST is not supported
        ([0x80, 0x02, 0x68, 0x05, 0x2E], "memo key 5"),
        ([0x80, 0x02, 0x2E], "stack underflow"),
        ([0x80, 0x02, 0x58, 0xFF, 0xFF, 0xFF, 0x7F], "truncated"),
        ([0x80, 0x02, 0x4E, 0x4E, 0x75, 0x2E], "no mark"),
        ([0x80, 0x02, 0x5D, 0x71, 0x00, 0x68, 0x00, 0x61, 0x2E], "after putting it inside another container"),  // a list containing itself
        ([0x80, 0x09, 0x2E], "protocol 9"),
    ] as [([UInt8], String)])
    func hostilePickles(pickle: [UInt8], message: String) throws {
        let path = try writeBytes(Self.zipWith(pickle: pickle), "hostile.pth")
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let file = try CheckpointFile.open(path)
            Issue.record("loaded \(file.keys)")
        } catch let error as WeightsError {
            #expect(error.file == path)
            if !message.isEmpty { #expect(error.errorDescription?.contains(message) == true, "\(error.errorDescription ?? "")") }
        }
    }
}
