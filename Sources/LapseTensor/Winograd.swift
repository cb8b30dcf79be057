import COpenBLAS
import Foundation
import Synchronization

/// Process-wide choice of the 3×3 convolution algorithm.
///
/// Winograd F(4×4, 3×3) is the default for stride-1 3×3 convolutions with enough channels: it needs 36 multiplies
/// per 4×4 output tile and channel pair instead of 144, and measured 2–3× faster than im2col + OpenBLAS on the
/// upscalers' 64-channel layers. `LAPSE_CONV_WINOGRAD=0` (or setting this to `false`) falls back to im2col, e.g. to
/// compare the two.
public enum ConvolutionTuning {
    static let winogradFlag = Atomic<Bool>(ProcessInfo.processInfo.environment["LAPSE_CONV_WINOGRAD"] != "0")
    static let minimumTiles = Atomic<Int>(64)

    /// Whether stride-1 3×3 convolutions with ≥ 16 input and output channels use Winograd F(4×4, 3×3).
    public static var winograd: Bool {
        get { winogradFlag.load(ordering: .relaxed) }
        set { winogradFlag.store(newValue, ordering: .relaxed) }
    }

    /// The fewest 4×4 output tiles, over the whole batch, for which Winograd is used (64 by default): below it the
    /// per-call weight transform costs more than it saves. Tests lower it to exercise Winograd on small shapes.
    public static var winogradMinimumTiles: Int {
        get { minimumTiles.load(ordering: .relaxed) }
        set { minimumTiles.store(newValue, ordering: .relaxed) }
    }
}

/// 3×3 stride-1 convolution by Winograd F(4×4, 3×3) (interpolation points 0, ±1, ±2, ∞).
///
/// Each 6×6 input tile `d` becomes `V = Bᵀ d B`, each filter `U = G g Gᵀ`; the 36 element-wise products summed over
/// input channels are 36 independent GEMMs `M[ξ] (O×tiles) = U[ξ] (O×C) · V[ξ] (C×tiles)`, and `Aᵀ M A` gives the
/// 4×4 output tile. Tiles are processed in blocks of whole tile rows, one block per task on each core (OpenBLAS
/// single-threaded inside), so a block's V and M stay near the core's L2. The transforms run on SIMD8 vectors whose
/// lanes are 8 horizontally adjacent tiles, so V/M rows are written and read contiguously.
extension Kernels {
    static var winogradEnabled: Bool { ConvolutionTuning.winogradFlag.load(ordering: .relaxed) }

    /// Whether `conv2d` should take the Winograd path: enough channels for the GEMMs to dominate the transforms.
    /// Below `winogradMinimumTiles` (64) tiles in the whole batch the 36·O·C weight transform (redone per call for
    /// weights too large to cache) outweighs the multiplies it saves: a UNet's 4×4 level over 32 frames measured
    /// 0.26 s Winograd vs 0.22 s im2col.
    static func winogradApplies(kh: Int, kw: Int, vy: ConvAxis, vx: ConvAxis, groups: Int, channels: Int, outputs: Int,
                                images: Int) -> Bool {
        winogradEnabled && kh == 3 && kw == 3 && vy.stride == 1 && vx.stride == 1 && vy.dilation == 1 && vx.dilation == 1 && groups == 1
            && channels >= 16 && outputs >= 16 && vy.output >= 4 && vx.output >= 4
            && images * ((vy.output + 3) / 4) * ((vx.output + 3) / 4) >= ConvolutionTuning.winogradMinimumTiles
    }

    /// `U[ξ][o][c] = (G g Gᵀ)[ξ]` for every filter, ξ = 6·row + column.
    static func winogradWeights(_ pw: UnsafePointer<Float>, oc: Int, c: Int) -> UnsafeMutablePointer<Float> {
        let u = allocateFloats(36 * oc * c)
        let stride = oc * c
        parallelRanges(oc * c, minPerTask: 1024) { r in
            for pair in r {
                let g = pw + pair * 9
                // Columns of G g (6×3), then each row of G g through G again.
                @inline(__always) func through(_ a: Float, _ b: Float, _ cc: Float) -> SIMD8<Float> {
                    // Multiplies by rounded reciprocals: divisions here were ~5% of an RRDB run.
                    let sixth: Float = 1.0 / 6, twelfth: Float = 1.0 / 12, twentyFourth: Float = 1.0 / 24
                    let outer = a * twentyFourth + cc * sixth, middle = b * twelfth
                    return SIMD8(a * 0.25, -(a + b + cc) * sixth, -(a - b + cc) * sixth, outer + middle,
                                 outer - middle, cc, 0, 0)
                }
                let c0 = through(g[0], g[3], g[6]), c1 = through(g[1], g[4], g[7]), c2 = through(g[2], g[5], g[8])
                for i in 0..<6 {
                    let row = through(c0[i], c1[i], c2[i])
                    let base = u + (i * 6) * stride + pair
                    for j in 0..<6 { base[j * stride] = row[j] }
                }
            }
        }
        return u
    }

    /// Transformed weights of one weight tensor, owned by the cache and freed when the last user lets go.
    final class WinogradWeights: @unchecked Sendable {
        let pointer: UnsafeMutablePointer<Float>
        let count: Int
        /// A copy of the filters the transform was made from, for entries that go into the cache: a tensor freed and
        /// another allocated at the same address, or weights edited in place, must miss. Comparing 9·O·C floats costs
        /// far less than the transform. Transforms too large to cache (a UNet's 1280-channel convs) skip the copy.
        let original: UnsafeMutablePointer<Float>?
        let originalCount: Int
        init(pointer: UnsafeMutablePointer<Float>, count: Int, source: UnsafePointer<Float>?, sourceCount: Int) {
            self.pointer = pointer; self.count = count
            if let source {
                let copy = UnsafeMutablePointer<Float>.allocate(capacity: sourceCount)
                copy.initialize(from: source, count: sourceCount)
                original = copy
            } else {
                original = nil
            }
            originalCount = sourceCount
        }
        func matches(_ weights: UnsafePointer<Float>) -> Bool {
            guard let original else { return false }
            return memcmp(original, weights, originalCount * MemoryLayout<Float>.size) == 0
        }
        deinit { Kernels.releaseFloats(pointer, count); original?.deallocate() }
    }

    struct WinogradKey: Hashable { let address: UInt, oc: Int, c: Int }

    /// Recently used transforms, oldest first, bounded by `winogradCacheLimit` floats in total.
    /// An upscaler runs the same convolutions for every tile and frame, so re-transforming (~4.5% of an RRDB run)
    /// is wasted work. Entries are keyed by the filters' address and checked against a copy of their values.
    static let winogradCache = Mutex<(entries: [WinogradKey: WinogradWeights], order: [WinogradKey], floats: Int)>(
        (entries: [:], order: [], floats: 0))
    static let winogradCacheLimit = 32 << 20  // 128 MB of floats

    /// `winogradWeights` for `weight`, reusing an earlier transform of the same, still-alive storage.
    static func winogradWeightsCached(_ weight: Tensor, oc: Int, c: Int) -> WinogradWeights {
        let key = WinogradKey(address: UInt(bitPattern: weight.basePointer), oc: oc, c: c)
        let hit = winogradCache.withLock { cache -> WinogradWeights? in
            guard let e = cache.entries[key] else { return nil }
            if e.matches(weight.basePointer) {
                if let i = cache.order.firstIndex(of: key) { cache.order.remove(at: i); cache.order.append(key) }
                return e
            }
            cache.entries[key] = nil
            cache.order.removeAll { $0 == key }
            cache.floats -= e.count
            return nil
        }
        if let hit { return hit }
        let count = 36 * oc * c, cacheable = count <= winogradCacheLimit / 4
        let fresh = WinogradWeights(pointer: winogradWeights(weight.basePointer, oc: oc, c: c), count: count,
                                    source: cacheable ? weight.basePointer : nil, sourceCount: 9 * oc * c)
        if cacheable {
            winogradCache.withLock { cache in
                if let old = cache.entries.updateValue(fresh, forKey: key) {
                    cache.floats -= old.count
                    cache.order.removeAll { $0 == key }
                }
                cache.order.append(key)
                cache.floats += count
                while cache.floats > winogradCacheLimit, !cache.order.isEmpty {
                    let victim = cache.order.removeFirst()
                    if let e = cache.entries.removeValue(forKey: victim) { cache.floats -= e.count }
                }
            }
        }
        return fresh
    }

    @inline(__always)
    static func loadV8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always)
    static func storeV8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    }

    /// Elements 0, 4, 8, … 28 (k = 0), 1, 5, … (k = 1), 2, 6, … and 3, 7, … of 32 floats at `p`.
    @inline(__always)
    static func deinterleave4(_ p: UnsafePointer<Float>) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let a = UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
        let b = UnsafeRawPointer(p + 16).loadUnaligned(as: SIMD16<Float>.self)
        let even = SIMD16(lowHalf: a.evenHalf, highHalf: b.evenHalf)
        let odd = SIMD16(lowHalf: a.oddHalf, highHalf: b.oddHalf)
        return (even.evenHalf, odd.evenHalf, even.oddHalf, odd.oddHalf)
    }

    @inline(__always)
    static func zip8(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD16<Float> {
        SIMD16(a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3], a[4], b[4], a[5], b[5], a[6], b[6], a[7], b[7])
    }

    /// Bᵀ applied to six vectors.
    @inline(__always)
    static func inputTransform(_ d0: SIMD8<Float>, _ d1: SIMD8<Float>, _ d2: SIMD8<Float>, _ d3: SIMD8<Float>,
                               _ d4: SIMD8<Float>, _ d5: SIMD8<Float>)
        -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let t1 = d4 - 4 * d2, t2 = d3 - 4 * d1
        let t3 = d4 - d2, t4 = 2 * (d3 - d1)
        return (4 * d0 - 5 * d2 + d4, t1 + t2, t1 - t2, t3 + t4, t3 - t4, 4 * d1 - 5 * d3 + d5)
    }

    /// Aᵀ applied to six vectors.
    @inline(__always)
    static func outputTransform(_ m0: SIMD8<Float>, _ m1: SIMD8<Float>, _ m2: SIMD8<Float>, _ m3: SIMD8<Float>,
                                _ m4: SIMD8<Float>, _ m5: SIMD8<Float>) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4
        return (m0 + a + c, b + 2 * d, a + 4 * c, b + 8 * d + m5)
    }

    /// Runs the convolution with transformed weights `u` (`winogradWeights`); adds `bias` and applies `slope`
    /// (leaky ReLU negative slope; 0 = ReLU) when given, else the per-channel PReLU `slopes` when given.
    static func winogradConv3x3(_ px: UnsafePointer<Float>, _ u: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>,
                                n: Int, c: Int, oc: Int, vy: ConvAxis, vx: ConvAxis,
                                bias: UnsafePointer<Float>?, slope: Float?, slopes: UnsafePointer<Float>? = nil) {
        let h = vy.input, w = vx.input, ho = vy.output, wo = vx.output
        let padT = vy.padding, padL = vx.padding
        let negativeSlope: UnsafePointer<Float>? = slope == nil ? slopes : nil
        let tilesH = (ho + 3) / 4, tilesW = (wo + 3) / 4
        let chunks = (tilesW + 7) / 8
        // Blocks are runs of whole tile rows counted over the batch (row g is tile row g % tilesH of image
        // g / tilesH), so a batch of small maps (a UNet's 8×8 levels over 32 frames) still gives each GEMM hundreds
        // of tiles: OpenBLAS packs the O×C weights of each of the 36 GEMMs per call, and with few tiles that packing
        // cost more than the multiply (UNet 1280→1280 at 8×8: 1.16 s with per-image blocks, 0.34 s batched).
        // Narrow layers (the upscalers' 64 channels) keep ~192-tile blocks, two per core, so V and M stay near L2;
        // wide ones take up to 512 tiles (V + M within 64 MiB per worker) and one block per core is enough.
        let wide = c * oc >= 65_536
        let totalRows = n * tilesH
        let tileCap = wide ? max(8, min(512, (64 << 20) / (4 * 36 * (c + oc)))) : 192
        let capRows = max(1, tileCap / tilesW)
        let minBlocks = wide ? cores : 2 * cores
        let targetRows = max(1, min(capRows, (totalRows + minBlocks - 1) / minBlocks))
        // Blocks differ by at most one row and come in a multiple of the core count, so no core finishes a whole
        // block early (RRDB's 128² maps: 32 tile rows were 6+6+6+6+6+2, now 6+6+5+5+5+5).
        var blocks = (totalRows + targetRows - 1) / targetRows
        if blocks > cores { blocks = min(totalRows, (blocks + cores - 1) / cores * cores) }
        let rowsPerBlock = (totalRows + blocks - 1) / blocks
        let ld = rowsPerBlock * tilesW + 8  // room for the last chunk's lanes past the block's final tile
        let workers = min(cores, blocks)
        let vSize = 36 * c * ld, mSize = 36 * oc * ld, lineSize = 6 * 40
        let perWorker = vSize + mSize + lineSize + 36 * 8 + 32
        let scratch = allocateFloats(workers * perWorker)
        defer { releaseFloats(scratch, workers * perWorker) }

        parallelTasks(blocks) { worker, task in
            let base = scratch + worker * perWorker
            let v = base, m = base + vSize, line = m + mSize, hbuf = line + lineSize, tail = hbuf + 36 * 8
            let g0 = task * totalRows / blocks, g1 = (task + 1) * totalRows / blocks, count = (g1 - g0) * tilesW

            // Input transform into V[ξ][ch][tile].
            for ch in 0..<c {
                for g in g0..<g1 {
                    let ty = g % tilesH, plane = px + ((g / tilesH) * c + ch) * h * w
                    let y0 = ty * 4 - padT
                    let rowBase = (g - g0) * tilesW
                    for chunk in 0..<chunks {
                        // A chunk reads columns x0 ..< x0 + 36 of rows y0 ..< y0 + 6: straight from the plane when all
                        // of it is inside, else through a zero-padded copy.
                        let x0 = chunk * 32 - padL
                        let inside = x0 >= 0 && x0 + 36 <= w && y0 >= 0 && y0 + 6 <= h
                        let src: UnsafePointer<Float>, pitch: Int
                        if inside {
                            src = plane + y0 * w + x0; pitch = w
                        } else {
                            // Inline SIMD clear + copy: at 128² half of all chunks touch an edge, and a memmove
                            // call per ≤ 36-float row was ~10 % of an RRDB run.
                            let lo = max(0, x0), hi = max(lo, min(w, x0 + 36)), span = hi - lo
                            let zero = SIMD8<Float>(repeating: 0)
                            for k in 0..<6 {
                                let row = line + k * 40, y = y0 + k
                                storeV8(zero, row); storeV8(zero, row + 8); storeV8(zero, row + 16)
                                storeV8(zero, row + 24); storeV8(zero, row + 32)
                                if y < 0 || y >= h || span == 0 { continue }
                                let from = plane + y * w + lo, to = row + (lo - x0)
                                var j = 0
                                while j + 8 <= span { storeV8(loadV8(from + j), to + j); j += 8 }
                                while j < span { to[j] = from[j]; j += 1 }
                            }
                            src = UnsafePointer(line); pitch = 40
                        }
                        for k in 0..<6 {
                            let p = src + k * pitch
                            let (d0, d1, d2, d3) = deinterleave4(p)
                            let (d4, d5, _, _) = deinterleave4(p + 4)
                            let r = inputTransform(d0, d1, d2, d3, d4, d5)
                            let hb = hbuf + k * 48
                            storeV8(r.0, hb); storeV8(r.1, hb + 8); storeV8(r.2, hb + 16)
                            storeV8(r.3, hb + 24); storeV8(r.4, hb + 32); storeV8(r.5, hb + 40)
                        }
                        let dst = v + ch * ld + rowBase + chunk * 8
                        for j in 0..<6 {
                            let r = inputTransform(loadV8(hbuf + j * 8), loadV8(hbuf + 48 + j * 8),
                                                   loadV8(hbuf + 96 + j * 8), loadV8(hbuf + 144 + j * 8),
                                                   loadV8(hbuf + 192 + j * 8), loadV8(hbuf + 240 + j * 8))
                            let step = 6 * c * ld
                            let q = dst + j * c * ld
                            storeV8(r.0, q); storeV8(r.1, q + step); storeV8(r.2, q + 2 * step)
                            storeV8(r.3, q + 3 * step); storeV8(r.4, q + 4 * step); storeV8(r.5, q + 5 * step)
                        }
                    }
                }
            }

            for xi in 0..<36 {
                sgemm(transA: false, transB: false, m: oc, n: count, k: c, a: u + xi * oc * c, lda: c,
                      b: v + xi * c * ld, ldb: ld, c: m + xi * oc * ld, ldc: ld)
            }

            // Output transform Y = Aᵀ M A with bias and activation, written as 4 interleaved rows per chunk.
            for oo in 0..<oc {
                let bv = SIMD8<Float>(repeating: bias?[oo] ?? 0)
                let channelSlope: Float? = slope ?? negativeSlope?[oo]
                for g in g0..<g1 {
                    let ty = g % tilesH, dstPlane = o + ((g / tilesH) * oc + oo) * ho * wo
                    let rowBase = (g - g0) * tilesW
                    for chunk in 0..<chunks {
                        let src = m + oo * ld + rowBase + chunk * 8
                        let step = oc * ld
                        // Columns through Aᵀ (rows of M), kept as 4×6 vectors in hbuf.
                        for j in 0..<6 {
                            let q = src + j * step
                            let s = outputTransform(loadV8(q), loadV8(q + 6 * step), loadV8(q + 12 * step),
                                                    loadV8(q + 18 * step), loadV8(q + 24 * step), loadV8(q + 30 * step))
                            storeV8(s.0, hbuf + j * 8); storeV8(s.1, hbuf + 48 + j * 8)
                            storeV8(s.2, hbuf + 96 + j * 8); storeV8(s.3, hbuf + 144 + j * 8)
                        }
                        let ox = chunk * 32
                        for i in 0..<4 {
                            let oy = ty * 4 + i
                            if oy >= ho { break }
                            let hb = hbuf + i * 48
                            var y = outputTransform(loadV8(hb), loadV8(hb + 8), loadV8(hb + 16), loadV8(hb + 24),
                                                    loadV8(hb + 32), loadV8(hb + 40))
                            y.0 += bv; y.1 += bv; y.2 += bv; y.3 += bv
                            if let slope = channelSlope {
                                y.0.replace(with: y.0 * slope, where: y.0 .< 0)
                                y.1.replace(with: y.1 * slope, where: y.1 .< 0)
                                y.2.replace(with: y.2 * slope, where: y.2 .< 0)
                                y.3.replace(with: y.3 * slope, where: y.3 .< 0)
                            }
                            let q = zip8(y.0, y.2), r = zip8(y.1, y.3)
                            let lo = zip8(q.lowHalf, r.lowHalf)
                            let hi = zip8(q.highHalf, r.highHalf)
                            let dst = dstPlane + oy * wo + ox
                            if ox + 32 <= wo {
                                UnsafeMutableRawPointer(dst).storeBytes(of: lo, as: SIMD16<Float>.self)
                                UnsafeMutableRawPointer(dst + 16).storeBytes(of: hi, as: SIMD16<Float>.self)
                            } else {
                                UnsafeMutableRawPointer(tail).storeBytes(of: lo, as: SIMD16<Float>.self)
                                UnsafeMutableRawPointer(tail + 16).storeBytes(of: hi, as: SIMD16<Float>.self)
                                dst.update(from: tail, count: wo - ox)
                            }
                        }
                    }
                }
            }
        }
    }
}
