import Foundation
import Testing
import LapseTensor
import LapseWeights

/// `HalfTensor`: 16-bit tensors kept zero-copy in a mapped checkpoint and widened at use.
@Suite struct HalfTensorTests {
    /// A safetensors file holding `values` raw (bit patterns) as one tensor `x` of `dtype`, written byte by byte so
    /// every pattern, NaN payloads included, is stored exactly.
    static func rawFile(_ values: [UInt16], dtype: String, shape: [Int]) throws -> (String, URL) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lapse-halftensor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var header = Array(#"{"x":{"dtype":"\#(dtype)","shape":[\#(shape.map(String.init).joined(separator: ","))],"data_offsets":[0,\#(values.count * 2)]}}"#.utf8)
        while (8 + header.count) % 8 != 0 { header.append(UInt8(ascii: " ")) }
        var data = Data()
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: header)
        for v in values { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        let path = dir.appendingPathComponent("x.safetensors").path
        try data.write(to: URL(fileURLWithPath: path))
        return (path, dir)
    }

    @Test(arguments: ["F16", "BF16"])
    func wideningEveryBitPatternMatchesTheConvertingReader(dtype: String) throws {
        let all = (0...0xFFFF).map { UInt16($0) }
        let (path, dir) = try Self.rawFile(all, dtype: dtype, shape: [256, 256])
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = try CheckpointFile.open(path)
        let half = try #require(try file.halfTensor("x"))
        #expect(half.dtype == DType(rawValue: dtype) && half.shape == [256, 256] && half.byteCount == 2 * 65_536)
        let converted = try file.tensor("x").scalars.map(\.bitPattern)
        let widened = half.widened().scalars.map(\.bitPattern)
        #expect(widened == converted)
        #expect(file.readCounts["x"] == 2)
        // Rows of the first dimension are a view of the same bytes.
        let rows = try #require(try file.halfTensor("x", rows: 3..<5))
        #expect(rows.shape == [2, 256])
        #expect(rows.widened().scalars.map(\.bitPattern) == Array(converted[768..<1280]))
        #expect(throws: WeightsError.self) { try file.halfTensor("x", rows: 255..<257) }
    }

    @Test func float32EntriesAreNotHalf() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lapse-halftensor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("w.safetensors").path
        let t = Tensor(shape: [2, 3], data: [1, -2, 0.1, 3e-8, 65504, -0.5])
        try SafeTensors.write([("w", t)], to: path)
        var weights = try Weights.load(path)
        #expect(try weights.halfTensor("w") == nil)
        weights["m"] = t
        #expect(try weights.halfTensor("m") == nil)
        #expect(throws: WeightsError.self) { try weights.halfTensor("nope") }
        // Rounding in memory: bf16 keeps 8 significant bits, f16 11.
        let bf = HalfTensor(rounding: t, to: .bf16).widened().scalars
        let f16 = HalfTensor(rounding: t, to: .f16).widened().scalars
        #expect(bf[0] == 1 && bf[1] == -2 && bf[4] == 65536 && abs(bf[2] - 0.1) < 0.1 / 128)
        #expect(f16[4] == 65504 && abs(f16[2] - 0.1) < 0.1 / 1024 && f16[3] == Float(0x1p-24) * 1)
    }

    @Test func precisionTravelsWithTheCollectionAndRowSplits() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lapse-halftensor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("w.safetensors").path
        let fused = Tensor(shape: [6, 2], data: (0..<12).map { Float($0) * 0.25 })
        try SafeTensors.write([("model.in_proj_weight", fused)], dtype: .f16, to: path)
        var weights = try Weights.load(path)
        weights.precision = .bf16
        let scoped = weights.scoped("model.").renamed([.prefix("", "enc.")]).stripping(prefix: "enc.")
        #expect(scoped.precision == .bf16)
        let split = try scoped.splittingRows(of: "in_proj_weight", into: ["q", "k", "v"])
        let k = try #require(try split.halfTensor("k"))
        #expect(k.dtype == .f16 && k.shape == [2, 2])
        #expect(k.widened().scalars == (try split.tensor("k").scalars))
        #expect(k.widened().scalars == [1, 1.25, 1.5, 1.75])
        #expect(WeightPrecision.parameterValues == ["auto", "fp32", "bf16"])
    }
}
