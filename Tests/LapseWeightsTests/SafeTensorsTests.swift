import Foundation
import LapseTensor
import LapseWeights
import Testing

@Suite("safetensors")
struct SafeTensorsTests {
    @Test func readsEveryDTypeLikePyTorch() throws {
        let file = try CheckpointFile.open(Paths.fixture("dtypes.safetensors"))
        let expected = try CheckpointFile.open(Paths.fixture("dtypes-expected.safetensors"))
        #expect(file.format == .safetensors)
        #expect(Set(file.keys) == Set(expected.keys))
        #expect(file.dtype(of: "f16") == .f16 && file.dtype(of: "bf16") == .bf16 && file.dtype(of: "bool") == .bool)
        #expect(file.metadata == ["format": "pt", "note": "lapse fixture"])
        for key in expected.keys {
            let a = try file.tensor(key), b = try expected.tensor(key)
            #expect(a.shape == b.shape, "\(key)")
            #expect(maxDifference(a, b) == 0, "\(key)")
        }
        #expect(try file.tensor("special16").scalars.map { $0.isInfinite } == [true, true, false, false, false])
        #expect(try file.tensor("i64").scalars == [-1_099_511_627_776, 0, 7])
        #expect(try file.tensor("scalar").shape == [])
    }

    @Test func f32IsZeroCopy() throws {
        let file = try CheckpointFile.open(Paths.fixture("dtypes-expected.safetensors"))
        let before = TensorStorage.liveCount
        let t = try file.tensor("f32")
        #expect(TensorStorage.liveCount == before, "an F32 read must borrow the mapping, not allocate")
        // Writing through the tensor must neither crash (read-only pages) nor change what the file serves.
        var copy = t
        copy.withUnsafeMutableBufferPointer { $0[0] = 42 }
        #expect(try file.tensor("f32").scalars[0] != 42)
    }

    @Test(arguments: [DType.f32, .f16, .bf16])
    func writerRoundTrips(dtype: DType) throws {
        let source = try CheckpointFile.open(Paths.fixture("dtypes-expected.safetensors"))
        let weights = Weights(checkpoint: source)
        let out = tempPath("round.safetensors")
        defer { try? FileManager.default.removeItem(atPath: out) }
        try SafeTensors.write(weights, metadata: ["who": "lapse \"test\"\n"], dtype: dtype, to: out)
        let back = try CheckpointFile.open(out)
        #expect(back.keys == weights.keys)
        #expect(back.metadata == ["who": "lapse \"test\"\n"])
        let tolerance: Float = dtype == .f32 ? 0 : dtype == .f16 ? 1e-3 : 8e-3
        for key in back.keys {
            let a = try back.tensor(key), b = try source.tensor(key)
            #expect(back.dtype(of: key) == dtype)
            // Relative tolerance: half precision keeps ~11 bits, bfloat16 ~8.
            let scale = max(1, b.scalars.filter(\.isFinite).map(abs).max() ?? 1)
            if dtype == .f16, key == "i64" { continue }  // −2^40 is outside float16's range by design
            #expect(maxDifference(a, b) <= tolerance * scale, "\(key) as \(dtype)")
        }
        // The temporary file of the atomic write is gone.
        let dir = (out as NSString).deletingLastPathComponent
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".\((out as NSString).lastPathComponent)") }
        #expect(leftovers.isEmpty)
    }

    @Test func pythonWrittenF16MatchesOurF16Writer() throws {
        // Bit-exact float16 conversion: writing PyTorch's f16 values back as F16 reproduces the same bytes.
        let file = try CheckpointFile.open(Paths.fixture("dtypes.safetensors"))
        let out = tempPath("f16.safetensors")
        defer { try? FileManager.default.removeItem(atPath: out) }
        try SafeTensors.write([("f16", try file.tensor("f16")), ("special16", try file.tensor("special16"))], dtype: .f16, to: out)
        let back = try CheckpointFile.open(out)
        #expect(try back.tensor("f16").scalars == (try file.tensor("f16").scalars))
        #expect(try back.tensor("special16").scalars == (try file.tensor("special16").scalars))
    }

    static func file(header: String, data: Int = 16, declaredLength: UInt64? = nil) -> [UInt8] {
        var bytes = withUnsafeBytes(of: (declaredLength ?? UInt64(header.utf8.count)).littleEndian, Array.init)
        bytes += Array(header.utf8)
        bytes += [UInt8](repeating: 0, count: data)
        return bytes
    }

    @Test(arguments: [
        ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 99, "claims"),
        ("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", nil, "needs 12 bytes"),
        ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", nil, "overlap"),
        ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", nil, "outside"),
        ("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", nil, "unknown dtype \"Q4\""),
        ("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,8]}}", nil, "absurd shape"),
        ("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", nil, "invalid dimension"),
        ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", nil, "invalid dimension"),
        ("{\"a\": nope}", nil, "not valid JSON"),
        ("{\"__metadata__\":{\"k\":1}}", nil, "not a string"),
        ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", nil, "data_offsets"),
    ] as [(String, UInt64?, String)])
    func rejectsLyingHeaders(header: String, declared: UInt64?, message: String) throws {
        let path = try writeBytes(Self.file(header: header, declaredLength: declared.map { UInt64(header.utf8.count) + $0 }), "bad.safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path) }
        #expect(error?.errorDescription?.contains(message) == true, "\(error?.errorDescription ?? "")")
    }

    @Test func rejectsEmptyAndTinyFiles() throws {
        for bytes in [[], [1, 0, 0], [0x7B, 0, 0, 0, 0, 0, 0, 0, 0x7B]] as [[UInt8]] {
            let path = try writeBytes(bytes, "tiny.safetensors")
            defer { try? FileManager.default.removeItem(atPath: path) }
            _ = expectWeightsError(path) { _ = try CheckpointFile.open(path) }
        }
        _ = expectWeightsError("/nonexistent/x.safetensors") { _ = try CheckpointFile.open("/nonexistent/x.safetensors") }
    }
}

@Suite("streaming")
struct StreamingTests {
    /// A 4 GiB checkpoint (sparse on disk) opens and serves its last tensor without reading what comes before.
    @Test func hugeCheckpointIsNotReadWhole() throws {
        let big = 1 << 31  // F16 elements: 4 GiB of data
        let header = "{\"big\":{\"dtype\":\"F16\",\"shape\":[\(big)],\"data_offsets\":[0,\(big * 2)]},\"small\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\(big * 2),\(big * 2 + 8)]}}"
        var prefix = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian, Array.init)
        prefix += Array(header.utf8)
        let path = tempPath("huge.safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(prefix).write(to: URL(fileURLWithPath: path))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seek(toOffset: UInt64(prefix.count + big * 2))
        try handle.write(contentsOf: Data([0, 0, 0x80, 0x3F, 0, 0, 0, 0x40]))  // 1.0, 2.0
        try handle.close()

        let clock = ContinuousClock()
        let start = clock.now
        let file = try CheckpointFile.open(path)
        #expect(file.shape(of: "big") == [big])
        #expect(try file.tensor("small").scalars == [1, 2])
        #expect(clock.now - start < .seconds(2), "opening must not read the 4 GiB tensor")
    }
}
