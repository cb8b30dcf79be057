import LapseTensor
import Testing

/// The fused transformer and small-map convolution paths against the plain ops they replace (themselves checked
/// against PyTorch in OpParityTests).
@Suite("Fused transformer paths and batched small-map convolution")
struct FusedTransformerTests {
    static func seeded(_ shape: [Int], seed: UInt64) -> Tensor {
        TorchGenerator(seed: seed).rand(shape) - 0.5
    }

    @Test("gatedFeedForward equals linear → chunk → value·act(gate) → linear",
          arguments: [(1, 7, 12, 5, true), (3, 301, 16, 16, true), (2, 1100, 24, 8, false)])
    func gatedFeedForwardMatches(batch: Int, rows: Int, dim: Int, inner: Int, biased: Bool) {
        let x = Self.seeded([batch, rows, dim], seed: 1)
        let wi = Self.seeded([2 * inner, dim], seed: 2), bi = biased ? Self.seeded([2 * inner], seed: 3) : nil
        let wo = Self.seeded([dim + 3, inner], seed: 4), bo = biased ? Self.seeded([dim + 3], seed: 5) : nil
        let halves = chunk(linear(x, weight: wi, bias: bi), 2, axis: -1)
        for (gate, activated) in [(GateActivation.gelu, gelu(halves[1])), (.silu, silu(halves[1]))] {
            let plain = linear(halves[0] * activated, weight: wo, bias: bo)
            let fused = gatedFeedForward(x, inWeight: wi, inBias: bi, outWeight: wo, outBias: bo, gate: gate)
            #expect(fused.shape == [batch, rows, dim + 3])
            #expect(relativeError(fused, plain) < 1e-6, "\(gate)")
        }
    }

    @Test("multiHeadAttention on [B, L, H·D] equals split heads → attention → merge",
          arguments: [(2, 16, 16, 4, 10), (1, 77, 13, 8, 8), (3, 5, 300, 2, 12)])
    func tokenMajorAttentionMatches(batch: Int, queries: Int, keys: Int, heads: Int, width: Int) {
        let c = heads * width
        let q = Self.seeded([batch, queries, c], seed: 6), k = Self.seeded([batch, keys, c], seed: 7)
        let v = Self.seeded([batch, keys, c], seed: 8)
        func split(_ t: Tensor, _ l: Int) -> Tensor { permute(t.reshaped([batch, l, heads, width]), [0, 2, 1, 3]) }
        let plain = permute(attention(query: split(q, queries), key: split(k, keys), value: split(v, keys)), [0, 2, 1, 3])
            .reshaped([batch, queries, c])
        let fused = multiHeadAttention(query: q, key: k, value: v, heads: heads)
        #expect(fused.shape == [batch, queries, c])
        #expect(relativeError(fused, plain) < 1e-6)
    }

    /// Batches of small maps take one GEMM over all images' columns; each image alone takes the per-image path.
    @Test("batched small-map convolution equals the images convolved one by one",
          arguments: [(1, 1, 0), (3, 1, 1), (3, 2, 1), (5, 1, 2)])
    func batchedSmallMaps(kernel: Int, stride: Int, padding: Int) {
        let n = 5, c = 20, oc = 24
        let x = Self.seeded([n, c, 6, 7], seed: 9)
        let w = Self.seeded([oc, c, kernel, kernel], seed: 10) * 0.2, b = Self.seeded([oc], seed: 11)
        let batched = conv2d(x, weight: w, bias: b, stride: stride, padding: padding, activation: .silu)
        let each = concat((0..<n).map { i in
            conv2d(slice(x, axis: 0, start: i, end: i + 1), weight: w, bias: b, stride: stride, padding: padding,
                   activation: .silu)
        }, axis: 0)
        #expect(batched.shape == each.shape)
        #expect(relativeError(batched, each) < 1e-6)
    }

    @Test("groupNorm with a fused activation equals the activation of groupNorm")
    func groupNormActivation() {
        let x = Self.seeded([2, 8, 5, 7], seed: 12), w = Self.seeded([8], seed: 13), b = Self.seeded([8], seed: 14)
        let fused = groupNorm(x, groups: 4, weight: w, bias: b, activation: .silu)
        #expect(relativeError(fused, silu(groupNorm(x, groups: 4, weight: w, bias: b))) < 1e-7)
    }

    /// Large freed blocks are reused for the next tensor of the same size: a zeroed tensor must still read zero and
    /// ops writing into reused memory must give the same values.
    @Test("tensors on reused large blocks start zeroed when asked and compute the same results")
    func reusedLargeBlocks() {
        let shape = [4, 512, 1024]  // 8 MiB: above the reuse threshold
        for _ in 0..<3 {
            var dirty = Tensor(zeros: shape)
            dirty.withUnsafeMutableBufferPointer { $0.update(repeating: 7) }
        }
        let zeros = Tensor(zeros: shape)
        #expect(zeros.scalars.allSatisfy { $0 == 0 })
        let x = Self.seeded(shape, seed: 15)
        let first = silu(x), second = silu(x)
        #expect(first.scalars == second.scalars)
    }
}
