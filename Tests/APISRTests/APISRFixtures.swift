import Foundation
import Testing
import APISRPlugin
import LapseGraph
import LapseTensor
import LapseWeights

/// Fixtures of the RRDB / SRVGG / ncnn tests (made by Tools/fixtures/apisr.py) and the fetched real assets.
enum APISRFixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// A real weight file from models/realesrgan (fetched by scripts/fetch-assets.sh, not committed).
    static func realModel(_ name: String) throws -> String {
        let path = repoRoot.appendingPathComponent("models/realesrgan/\(name)").path
        try #require(FileManager.default.fileExists(atPath: path),
                     "\(path) is missing: run scripts/fetch-assets.sh to fetch the real Real-ESRGAN ncnn weights")
        return path
    }

    private static func bytes(_ name: String, count: Int) throws -> Data {
        let data = try Data(contentsOf: directory.appendingPathComponent(name))
        try #require(data.count == count, "\(name): \(data.count) bytes, expected \(count)")
        return data
    }

    /// Raw little-endian float32 as a tensor of `shape`.
    static func float32(_ name: String, shape: [Int]) throws -> Tensor {
        let count = Tensor.elementCount(shape)
        let data = try bytes(name, count: count * 4)
        var values = [Float](repeating: 0, count: count)
        _ = values.withUnsafeMutableBytes { data.copyBytes(to: $0) }
        return Tensor(shape: shape, data: values)
    }

    /// Raw uint8 `[C, H, W]` scaled to [0, 1].
    static func uint8(_ name: String, shape: [Int]) throws -> Tensor {
        let data = try bytes(name, count: Tensor.elementCount(shape))
        return Tensor(shape: shape, data: data.map { Float($0) / 255 })
    }

    /// Raw little-endian uint16 scaled to [0, 1].
    static func uint16(_ name: String, shape: [Int]) throws -> Tensor {
        let count = Tensor.elementCount(shape)
        let data = try bytes(name, count: count * 2)
        var values = [UInt16](repeating: 0, count: count)
        _ = values.withUnsafeMutableBytes { data.copyBytes(to: $0) }
        return Tensor(shape: shape, data: values.map { Float(UInt16(littleEndian: $0)) / 65535 })
    }

    /// The shared seeded input `[1, 3, 11, 13]`.
    static func smallInput() throws -> Tensor { try float32("small_input.bin", shape: [1, 3, 11, 13]) }

    /// max |a − b| / max |b|.
    static func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
        let x = a.scalars, y = b.scalars
        var diff: Float = 0, scale: Float = 0
        for i in 0..<min(x.count, y.count) {
            diff = max(diff, abs(x[i] - y[i]))
            scale = max(scale, abs(y[i]))
        }
        return diff / max(scale, 1e-12)
    }

    /// max |a − b|.
    static func maxAbsDifference(_ a: Tensor, _ b: Tensor) -> Float {
        let x = a.scalars, y = b.scalars
        var diff: Float = 0
        for i in 0..<min(x.count, y.count) { diff = max(diff, abs(x[i] - y[i])) }
        return diff
    }

    /// PSNR in dB of two images in [0, 1] after clamping both to [0, 1].
    static func psnr(_ a: Tensor, _ b: Tensor) -> Double {
        let x = a.scalars, y = b.scalars
        var sum = 0.0
        for i in 0..<x.count {
            let d = Double(min(max(x[i], 0), 1)) - Double(min(max(y[i], 0), 1))
            sum += d * d
        }
        let mse = sum / Double(max(x.count, 1))
        return mse == 0 ? .infinity : 10 * log10(1 / mse)
    }

    /// Deterministic pseudo-random values in [0, 1).
    static func noise(_ shape: [Int], seed: UInt64) -> Tensor {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        let values = (0..<Tensor.elementCount(shape)).map { _ -> Float in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Float(state % 65536) / 65536
        }
        return Tensor(shape: shape, data: values)
    }

    /// A smooth image with some texture (a plausible photo stand-in) of `[C, H, W]`.
    static func smoothImage(channels: Int, height: Int, width: Int, seed: UInt64 = 7) -> Tensor {
        let n = noise([channels, height, width], seed: seed).scalars
        var values = [Float](repeating: 0, count: n.count)
        for c in 0..<channels {
            for y in 0..<height {
                for x in 0..<width {
                    let i = (c * height + y) * width + x
                    let wave = 0.5 + 0.3 * sin(Float(x) * 0.21 + Float(c)) * cos(Float(y) * 0.17)
                    values[i] = min(1, max(0, wave + 0.15 * (n[i] - 0.5)))
                }
            }
        }
        return Tensor(shape: [channels, height, width], data: values)
    }

    /// Runs a network through the tiler as one untiled pass (padding and cropping included).
    static func runUntiled(_ network: any UpscaleNetwork, _ input: Tensor) throws -> Tensor {
        try TiledUpscaler(network: network, tile: 0, overlap: 0, maxMemoryMB: 65536).upscale(input)
    }
}
