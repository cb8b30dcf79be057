import LapseTensor
import Testing

/// The upscalers' fused convolution entry points against the plain ops they replace.
@Suite("Fused convolution paths")
struct FusedConvolutionTests {
    static func seeded(_ shape: [Int], seed: UInt64) -> Tensor {
        TorchGenerator(seed: seed).rand(shape) - 0.5
    }

    static func maxRelativeError(_ a: Tensor, _ b: Tensor) -> Float {
        let scale = b.scalars.map(abs).max() ?? 1
        return zip(a.scalars, b.scalars).map { abs($0 - $1) }.max()! / max(scale, 1e-12)
    }

    @Test("conv2dPReLU equals conv2d followed by prelu (Winograd and direct sizes)", arguments: [(24, 24), (16, 3)])
    func preluFusion(channels: Int, outputs: Int) {
        let x = Self.seeded([1, channels, 35, 39], seed: 1)  // 9×10 tiles: above Winograd's 64-tile minimum
        let w = Self.seeded([outputs, channels, 3, 3], seed: 2) * 0.2
        let b = Self.seeded([outputs], seed: 3)
        let slopes = Self.seeded([outputs], seed: 4)
        let fused = conv2dPReLU(x, weight: w, bias: b, padding: 1, slopes: slopes)
        let plain = prelu(conv2d(x, weight: w, bias: b, padding: 1), weight: slopes)
        #expect(fused.shape == plain.shape)
        #expect(Self.maxRelativeError(fused, plain) < 1e-5)
    }

    @Test("conv2d(into:offset:) writes the same values into a channel slice and leaves the rest alone")
    func intoChannelSlice() {
        let x = Self.seeded([1, 16, 12, 14], seed: 5)
        let w = Self.seeded([8, 16, 3, 3], seed: 6) * 0.2
        let plane = 12 * 14
        let buffer = TensorStorage(count: 40 * plane)
        buffer.pointer.update(repeating: 7, count: 40 * plane)
        let view = conv2d(x, weight: w, bias: nil, padding: 1, activation: .leakyReLU(0.2), into: buffer, offset: 16 * plane)
        let plain = conv2d(x, weight: w, bias: nil, padding: 1, activation: .leakyReLU(0.2))
        #expect(view.shape == [1, 8, 12, 14])
        #expect(Self.maxRelativeError(view, plain) < 1e-5)
        let all = Tensor(shape: [40 * plane], storage: buffer).scalars
        #expect(all[..<(16 * plane)].allSatisfy { $0 == 7 } && all[(24 * plane)...].allSatisfy { $0 == 7 })
    }

    @Test("weights changed in place are not served from the transform cache")
    func cacheSeesChangedWeights() {
        let x = Self.seeded([1, 16, 32, 32], seed: 7)  // 64 tiles: Winograd, whose transforms are cached
        var w = Self.seeded([16, 16, 3, 3], seed: 8) * 0.2
        let first = conv2d(x, weight: w, bias: nil, padding: 1)
        w.withUnsafeMutableBufferPointer { $0[0] += 1 }
        let second = conv2d(x, weight: w, bias: nil, padding: 1)
        let reference = conv2d(x, weight: w, bias: nil, padding: 1, groups: 1)
        #expect(Self.maxRelativeError(first, second) > 1e-4, "the changed filter must change the output")
        #expect(Self.maxRelativeError(second, reference) < 1e-6)
    }
}
