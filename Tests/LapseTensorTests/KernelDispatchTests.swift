import Foundation
import LapseTensor
import Testing

/// The run-time kernel levels: detection agrees with the CPU's flags, `LAPSE_CPU_LEVEL` and `withLevel` pick a
/// level, and every level the CPU has matches PyTorch on the op fixtures and agrees with the generic level on
/// shapes that exercise vector bodies, tails and each Winograd/direct-conv path.
@Suite("Kernel dispatch")
struct KernelDispatchTests {
    @Test func detectionMatchesTheCPUFlags() {
        let flags = MachineInfo.current.flags
        #expect(KernelDispatch.supported.first == .generic)
        #if arch(x86_64)
        let avx2 = flags.contains("avx2") && flags.contains("fma")
        let avx512 = ["avx512f", "avx512dq", "avx512bw", "avx512vl"].allSatisfy(flags.contains)
        #expect(KernelDispatch.supported.contains(.avx2) == avx2)
        #expect(KernelDispatch.supported.contains(.avx512) == (avx2 && avx512))
        #endif
        // The environment decides the active level: the override when given and runnable, else the best.
        switch ProcessInfo.processInfo.environment["LAPSE_CPU_LEVEL"] {
        case let name? where KernelDispatch.supported.contains(where: { $0.description == name }):
            #expect(KernelDispatch.active.description == name)
            #expect(KernelDispatch.overridden)
            #expect(KernelDispatch.summary == "\(name) (LAPSE_CPU_LEVEL)")
        case let name? where !name.isEmpty && name != "auto":
            #expect(KernelDispatch.active == KernelDispatch.best)
            #expect(KernelDispatch.note != nil)
        default:
            #expect(KernelDispatch.active == KernelDispatch.best)
            #expect(!KernelDispatch.overridden)
            #expect(KernelDispatch.summary == "\(KernelDispatch.best) (auto)")
        }
    }

    @Test func withLevelForcesEachSupportedLevel() {
        for level in KernelDispatch.supported {
            KernelDispatch.withLevel(level) { #expect(KernelDispatch.current == level) }
        }
        #expect(KernelDispatch.current == KernelDispatch.active)
    }

    @Test(arguments: KernelLevel.allCases)
    func opFixturesMatchTorchAtEachLevel(_ level: KernelLevel) throws {
        guard KernelDispatch.supported.contains(level) else { return }
        try KernelDispatch.withLevel(level) {
            for c in OpFixtures.cases {
                let results = try OpParityTests.run(c)
                let tolerance: Float = OpParityTests.elementwiseOps.contains(c.op) ? 1e-5 : 1e-4
                for (got, want) in zip(results, c.outputs) where got.shape == want.shape {
                    let err = relativeError(got, want)
                    #expect(err <= tolerance, "\(level) \(c.name): relative error \(err) > \(tolerance)")
                }
            }
        }
    }

    /// Every op that calls the level kernels, at sizes that run full vectors and tails for 8 and 16 lanes.
    static func kernelOps() -> [(String, () -> Tensor)] {
        let g = TorchGenerator(seed: 11)
        let x = (g.rand([2, 6, 19, 37]) - 0.5) * 12
        let w = g.rand([20, 6, 3, 3]) - 0.5, b = g.rand([20]) - 0.5, w3 = g.rand([3, 6, 3, 3]) - 0.5, b3 = g.rand([3])
        let dw = g.rand([6, 1, 3, 3]) - 0.5, slopes = g.rand([20]) * 0.3
        let rows = (g.rand([3, 5, 77]) - 0.5) * 20
        let q = g.rand([2, 3, 45, 24]) - 0.5, k = g.rand([2, 3, 29, 24]) - 0.5, v = g.rand([2, 3, 29, 13]) - 0.5
        let mask = (g.rand([1, 3, 45, 29]) - 0.5) * 4, logit = g.rand([3])
        let tokens = g.rand([2, 21, 24]) - 0.5
        let wi = g.rand([2 * 36, 24]) - 0.5, wo = g.rand([11, 36]) - 0.5
        let lw = g.rand([77]), lb = g.rand([77])
        let gw = g.rand([6]), gb = g.rand([6]), mean = g.rand([6]), variance = g.rand([6]) + 0.5
        var ops: [(String, () -> Tensor)] = [
            ("relu", { relu(x) }), ("leakyReLU", { leakyReLU(x, slope: 0.2) }), ("silu", { silu(x) }),
            ("gelu", { gelu(x) }), ("geluTanh", { gelu(x, approximateTanh: true) }), ("quickGELU", { quickGELU(x) }),
            ("sigmoid", { sigmoid(x) }), ("prelu", { prelu(x, weight: gw) }),
            ("softmax", { softmax(rows) }), ("softmax axis 1", { softmax(rows, axis: 1) }),
            ("layerNorm affine", { layerNorm(rows, weight: lw, bias: lb) }),
            ("layerNorm weight", { layerNorm(rows, weight: lw, bias: nil) }),
            ("layerNorm bias", { layerNorm(rows, weight: nil, bias: lb) }),
            ("layerNorm plain", { layerNorm(rows, weight: nil, bias: nil) }),
            ("groupNorm silu", { groupNorm(x, groups: 3, weight: gw, bias: gb, activation: .silu) }),
            ("batchNorm", { batchNorm(x, mean: mean, variance: variance, weight: gw, bias: gb) }),
            ("attention mask", { attention(query: q, key: k, value: v, mask: mask) }),
            ("cosineAttention", { cosineAttention(query: q, key: k, value: v, logitScale: logit, mask: mask) }),
            ("multiHeadAttention", { multiHeadAttention(query: tokens, key: tokens, value: tokens, heads: 3) }),
            ("conv direct", { conv2d(x, weight: w3, bias: b3, padding: 1) }),
            ("conv depthwise", { conv2d(x, weight: dw, bias: nil, padding: 1, groups: 6) }),
            ("conv prelu", { conv2dPReLU(x, weight: w, bias: b, padding: 1, slopes: slopes) }),
            ("conv gelu", { conv2d(x, weight: w, bias: b, padding: 1, activation: .gelu) }),
        ]
        for gate in [GateActivation.gelu, .silu] {
            ops.append(("gatedFeedForward \(gate)", {
                gatedFeedForward(tokens, inWeight: wi, inBias: nil, outWeight: wo, outBias: nil, gate: gate)
            }))
        }
        return ops
    }

    @Test func levelsAgreeWithGeneric() {
        // Winograd on these small maps (and its ragged edges): the process-wide switch only chooses between two
        // correct algorithms, so concurrent tests are unaffected.
        let previousTiles = ConvolutionTuning.winogradMinimumTiles
        ConvolutionTuning.winogradMinimumTiles = 1
        defer { ConvolutionTuning.winogradMinimumTiles = previousTiles }
        let ops = Self.kernelOps()
        let reference = KernelDispatch.withLevel(.generic) { ops.map { $0.1() } }
        for level in KernelDispatch.supported where level != .generic {
            KernelDispatch.withLevel(level) {
                for ((name, op), want) in zip(ops, reference) {
                    let got = op()
                    #expect(got.shape == want.shape, "\(level) \(name)")
                    let err = relativeError(got, want)
                    #expect(err <= 5e-6, "\(level) \(name): relative error \(err) against generic")
                }
            }
        }
    }
}
