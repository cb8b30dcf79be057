import COpenBLAS
import Foundation
import Synchronization

/// Process-wide choice of the 3×3 convolution algorithm.
///
/// Winograd F(2×2, 3×3) is implemented and parity-tested but measured ~15% slower in CPU time than im2col + OpenBLAS
/// on the 2-core development machine (its transforms cost more than the GEMM work they save), so it is off unless
/// enabled here or with `LAPSE_CONV_WINOGRAD=1`.
public enum ConvolutionTuning {
    static let winogradFlag = Atomic<Bool>(ProcessInfo.processInfo.environment["LAPSE_CONV_WINOGRAD"] == "1")

    /// Whether stride-1 3×3 convolutions with ≥ 16 input and output channels use Winograd F(2×2, 3×3).
    public static var winograd: Bool {
        get { winogradFlag.load(ordering: .relaxed) }
        set { winogradFlag.store(newValue, ordering: .relaxed) }
    }
}

/// 3×3 stride-1 convolution by Winograd F(2×2, 3×3): each 2×2 output tile costs 16 multiplies per channel pair
/// instead of 36, turning the convolution into 16 independent GEMMs `U[ξ] (O×C) · V[ξ] (C×tiles)` between
/// transformed weights and transformed 4×4 input tiles. Tiles are processed in blocks to bound scratch memory.
extension Kernels {
    /// Tiles per block: keeps V and M (16·C·block and 16·O·block floats) to a few MiB each.
    static func winogradBlock(channels: Int, outputs: Int) -> Int {
        max(64, min(4096, (1 << 20) / max(channels, outputs, 1)))
    }

    static var winogradEnabled: Bool { ConvolutionTuning.winogradFlag.load(ordering: .relaxed) }

    /// Whether `conv2d` should take the Winograd path: enough channels for the GEMMs to dominate the transforms.
    static func winogradApplies(kh: Int, kw: Int, vy: ConvAxis, vx: ConvAxis, groups: Int, channels: Int, outputs: Int) -> Bool {
        winogradEnabled && kh == 3 && kw == 3 && vy.stride == 1 && vx.stride == 1 && vy.dilation == 1 && vx.dilation == 1 && groups == 1
            && channels >= 16 && outputs >= 16 && vy.output >= 2 && vx.output >= 2
    }

    static func winogradConv3x3(_ px: UnsafePointer<Float>, _ pw: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>,
                                n: Int, c: Int, oc: Int, vy: ConvAxis, vx: ConvAxis) {
        let h = vy.input, w = vx.input, ho = vy.output, wo = vx.output
        let padT = vy.padding, padL = vx.padding
        // U[ξ][o][c] = (G g Gᵀ)[ξ]
        let u = UnsafeMutablePointer<Float>.allocate(capacity: 16 * oc * c)
        defer { u.deallocate() }
        parallelRanges(oc * c, minPerTask: 256) { r in
            for oci in r {
                let g = pw + oci * 9
                // G g (4×3) as three SIMD4 columns, then (G g) Gᵀ row by row.
                let c0 = SIMD4(g[0], g[3], g[6], 0), c1 = SIMD4(g[1], g[4], g[7], 0), c2 = SIMD4(g[2], g[5], g[8], 0)
                @inline(__always) func gt(_ col: SIMD4<Float>) -> SIMD4<Float> {
                    SIMD4(col[0], 0.5 * (col[0] + col[1] + col[2]), 0.5 * (col[0] - col[1] + col[2]), col[2])
                }
                let t0 = gt(c0), t1 = gt(c1), t2 = gt(c2)  // column j of G g
                for i in 0..<4 {
                    let a = t0[i], b = t1[i], cc = t2[i]
                    let base = u + i * 4 * oc * c + oci
                    base[0] = a
                    base[oc * c] = 0.5 * (a + b + cc)
                    base[2 * oc * c] = 0.5 * (a - b + cc)
                    base[3 * oc * c] = cc
                }
            }
        }
        let tilesH = (ho + 1) / 2, tilesW = (wo + 1) / 2, tiles = tilesH * tilesW
        let block = winogradBlock(channels: c, outputs: oc)
        let v = UnsafeMutablePointer<Float>.allocate(capacity: 16 * c * block)
        let m = UnsafeMutablePointer<Float>.allocate(capacity: 16 * oc * block)
        defer { v.deallocate(); m.deallocate() }
        for b in 0..<n {
            let image = px + b * c * h * w
            var t0 = 0
            while t0 < tiles {
                let count = min(block, tiles - t0)
                // Input transform V = Bᵀ d B for every (channel, tile) of the block.
                parallelRanges(c, minPerTask: 1) { r in
                    for ch in r {
                        let plane = image + ch * h * w
                        for ti in 0..<count {
                            let tile = t0 + ti
                            let y0 = (tile / tilesW) * 2 - padT, x0 = (tile % tilesW) * 2 - padL
                            func row(_ dy: Int) -> SIMD4<Float> {
                                let y = y0 + dy
                                if y < 0 || y >= h { return SIMD4<Float>() }
                                let line = plane + y * w
                                if x0 >= 0 && x0 + 3 < w { return SIMD4(line[x0], line[x0 + 1], line[x0 + 2], line[x0 + 3]) }
                                var s = SIMD4<Float>()
                                for k in 0..<4 where x0 + k >= 0 && x0 + k < w { s[k] = line[x0 + k] }
                                return s
                            }
                            let d = (row(0), row(1), row(2), row(3))
                            // Bᵀ on rows, then on columns (lanes).
                            let base = v + ch * count + ti, stride16 = c * count
                            @inline(__always) func emit(_ i: Int, _ rr: SIMD4<Float>) {
                                let p = base + i * 4 * stride16
                                p[0] = rr[0] - rr[2]
                                p[stride16] = rr[1] + rr[2]
                                p[2 * stride16] = rr[2] - rr[1]
                                p[3 * stride16] = rr[1] - rr[3]
                            }
                            emit(0, d.0 - d.2); emit(1, d.1 + d.2); emit(2, d.2 - d.1); emit(3, d.1 - d.3)
                        }
                    }
                }
                // 16 GEMMs, one per transformed position, spread over the cores.
                parallelTasks(16) { _, xi in
                    sgemm(transA: false, transB: false, m: oc, n: count, k: c, a: u + xi * oc * c, lda: c,
                          b: v + xi * c * count, ldb: count, c: m + xi * oc * count, ldc: count)
                }
                // Output transform Y = Aᵀ M A, clipped at the bottom/right edge.
                parallelRanges(oc, minPerTask: 1) { r in
                    for oo in r {
                        let dst = o + (b * oc + oo) * ho * wo
                        for ti in 0..<count {
                            let tile = t0 + ti
                            let oy = (tile / tilesW) * 2, ox = (tile % tilesW) * 2
                            @inline(__always) func at(_ xi: Int) -> Float { m[(xi * oc + oo) * count + ti] }
                            // Aᵀ M (2×4) as two SIMD4 rows, then A on the lanes.
                            let m0 = SIMD4(at(0), at(1), at(2), at(3)), m1 = SIMD4(at(4), at(5), at(6), at(7))
                            let m2 = SIMD4(at(8), at(9), at(10), at(11)), m3 = SIMD4(at(12), at(13), at(14), at(15))
                            let s0 = m0 + m1 + m2, s1 = m1 - m2 - m3
                            let y00 = s0[0] + s0[1] + s0[2], y01 = s0[1] - s0[2] - s0[3]
                            let y10 = s1[0] + s1[1] + s1[2], y11 = s1[1] - s1[2] - s1[3]
                            dst[oy * wo + ox] = y00
                            if ox + 1 < wo { dst[oy * wo + ox + 1] = y01 }
                            if oy + 1 < ho {
                                dst[(oy + 1) * wo + ox] = y10
                                if ox + 1 < wo { dst[(oy + 1) * wo + ox + 1] = y11 }
                            }
                        }
                    }
                }
                t0 += count
            }
        }
    }
}
