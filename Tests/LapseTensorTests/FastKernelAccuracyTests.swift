import Foundation
import LapseTensor
import Testing

/// The vectorised activations, norms and attention against double-precision references computed here, over ranges
/// that include the tails where a naive 1 − x or 1 + erf(x) would cancel.
@Suite("Fast kernels accuracy")
struct FastKernelAccuracyTests {
    /// -30…30 in uneven steps plus an odd count, so both the eight-lane body and the scalar tail run.
    static let inputs: [Float] = (0..<6_007).map { i in -30 + 60 * Float(i) / 6_006 } + [0, -0, 1e-20, -1e-20, 88, -88, -100, 100]

    /// Largest error relative to max(|reference|, floor) over all inputs.
    static func worst(_ op: (Tensor) -> Tensor, _ reference: (Double) -> Double, floor: Double = 1e-30) -> Double {
        let out = op(Tensor(shape: [inputs.count], data: inputs)).scalars
        var worst = 0.0
        for (x, y) in zip(inputs, out) {
            let r = reference(Double(x))
            worst = max(worst, abs(Double(y) - r) / max(abs(r), floor))
        }
        return worst
    }

    static func sigmoidRef(_ x: Double) -> Double { 1 / (1 + Foundation.exp(-x)) }

    @Test func sigmoidFamilyIsAccurateToOneMillionth() {
        #expect(Self.worst({ sigmoid($0) }, Self.sigmoidRef) < 1e-6)
        #expect(Self.worst({ silu($0) }, { $0 * Self.sigmoidRef($0) }) < 1e-6)
        // The argument 1.702·x is rounded to float first, as in torch (x * torch.sigmoid(1.702 * x)).
        #expect(Self.worst({ quickGELU($0) }, { $0 * Self.sigmoidRef(Double(Float(1.702) * Float($0))) }) < 1e-6)
    }

    @Test func geluIsAccurateToOneMillionthIncludingTheNegativeTail() {
        let exact = Self.worst({ gelu($0) }, { 0.5 * $0 * Foundation.erfc(-$0 / 2.0.squareRoot()) })
        #expect(exact < 1e-6)
        // ½(1 + tanh(y)) written as sigmoid(2y): the double reference would cancel to 0 in the negative tail too.
        // The cubic inner argument is rounded to float first, as torch computes it.
        let tanhForm = Self.worst({ gelu($0, approximateTanh: true) }) { x in
            let f = Float(x), inner: Float = 0.79788456080286536 * (f + 0.044715 * f * f * f)
            return x * Self.sigmoidRef(2 * Double(inner))
        }
        #expect(tanhForm < 1e-6)
    }

    @Test func activationsPropagateNaN() {
        let x = Tensor(shape: [3], data: [.nan, 1, .nan])
        for op in [silu, sigmoid, quickGELU, { gelu($0) }, { gelu($0, approximateTanh: true) }] as [(Tensor) -> Tensor] {
            let y = op(x).scalars
            #expect(y[0].isNaN && y[2].isNaN && !y[1].isNaN)
        }
    }

    @Test func normsKeepAccuracyWithALargeMeanOffset() {
        // Mean 1000, spread 0.01: the single-pass moments must not cancel.
        let g = TorchGenerator(seed: 3)
        let x = g.rand([2, 8, 37]) * 0.01 + 1000
        let ln = layerNorm(x, weight: nil, bias: nil).scalars
        let gn = groupNorm(x.reshaped([2, 8, 37]), groups: 4, weight: nil, bias: nil).scalars
        let v = x.scalars
        func check(_ got: [Float], rows: Int) -> Double {
            let n = v.count / rows
            var worst = 0.0
            for r in 0..<rows {
                let row = v[(r * n)..<((r + 1) * n)].map(Double.init)
                let m = row.reduce(0, +) / Double(n)
                let s = (row.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(n) + 1e-5).squareRoot()
                for i in 0..<n { worst = max(worst, abs(Double(got[r * n + i]) - (row[i] - m) / s)) }
            }
            return worst
        }
        #expect(check(ln, rows: 16) < 1e-3)
        #expect(check(gn, rows: 8) < 1e-3)
    }

    @Test func batchedSmallWindowAttentionMatchesNaive() {
        // Many 64-token windows of 16 dims, as in GRL/DAT, with a broadcast mask.
        let g = TorchGenerator(seed: 5)
        let b = 5, h = 3, l = 64, d = 16
        let q = g.rand([b, h, l, d]) - 0.5, k = g.rand([b, h, l, d]) - 0.5, v = g.rand([b, h, l, d]) - 0.5
        let mask = (g.rand([1, 1, l, l]) - 0.5) * 4
        let out = attention(query: q, key: k, value: v, mask: mask).scalars
        let cos = cosineAttention(query: q, key: k, value: v, logitScale: Tensor(shape: [h], data: [0.5, 2, 9]),
                                  mask: mask).scalars
        let pq = q.scalars, pk = k.scalars, pv = v.scalars, pm = mask.scalars
        let scales: [Double] = [0.5, 2, 4.605170185988092].map { Foundation.exp($0) }
        var worst = 0.0, worstCos = 0.0
        for bh in 0..<(b * h) {
            let base = bh * l * d
            func norm(_ p: [Float], _ i: Int) -> Double {
                (0..<d).map { Double(p[base + i * d + $0]) * Double(p[base + i * d + $0]) }.reduce(0, +).squareRoot()
            }
            for i in 0..<l {
                for cosine in [false, true] {
                    var s = [Double](repeating: 0, count: l)
                    for j in 0..<l {
                        var dot = 0.0
                        for c in 0..<d { dot += Double(pq[base + i * d + c]) * Double(pk[base + j * d + c]) }
                        s[j] = cosine ? dot / (norm(pq, i) * norm(pk, j)) * scales[bh % h] : dot / Double(d).squareRoot()
                        s[j] += Double(pm[i * l + j])
                    }
                    let m = s.max()!
                    let e = s.map { Foundation.exp($0 - m) }, z = e.reduce(0, +)
                    for c in 0..<d {
                        var o = 0.0
                        for j in 0..<l { o += e[j] / z * Double(pv[base + j * d + c]) }
                        let got = Double((cosine ? cos : out)[base + i * d + c])
                        if cosine { worstCos = max(worstCos, abs(got - o)) } else { worst = max(worst, abs(got - o)) }
                    }
                }
            }
        }
        #expect(worst < 1e-5)
        #expect(worstCos < 1e-5)
    }
}
