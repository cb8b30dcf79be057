import CLapseKernels
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
        let t = table
        parallelRanges(oc * c, minPerTask: 1024) { r in
            t.pointee.winograd_weights(pw, u, r.lowerBound, r.upperBound, stride)
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
        let perWorker = vSize + mSize + lineSize
        let scratch = allocateFloats(workers * perWorker)
        defer { releaseFloats(scratch, workers * perWorker) }
        let t = table

        parallelTasks(blocks) { worker, task in
            let base = scratch + worker * perWorker
            let v = base, m = base + vSize, line = m + mSize
            let g0 = task * totalRows / blocks, g1 = (task + 1) * totalRows / blocks, count = (g1 - g0) * tilesW

            // Input transform into V[ξ][ch][tile]: 8 horizontally adjacent tiles per vector, so V rows are
            // written contiguously.
            for ch in 0..<c {
                for g in g0..<g1 {
                    let ty = g % tilesH, plane = px + ((g / tilesH) * c + ch) * h * w
                    t.pointee.winograd_input(plane, h, w, ty * 4 - padT, padL, chunks, v + ch * ld + (g - g0) * tilesW,
                                             c * ld, line)
                }
            }

            for xi in 0..<36 {
                sgemm(transA: false, transB: false, m: oc, n: count, k: c, a: u + xi * oc * c, lda: c,
                      b: v + xi * c * ld, ldb: ld, c: m + xi * oc * ld, ldc: ld)
            }

            // Output transform Y = Aᵀ M A with bias and activation, written as 4 interleaved rows per chunk.
            for oo in 0..<oc {
                let channelSlope: Float? = slope ?? negativeSlope?[oo]
                for g in g0..<g1 {
                    t.pointee.winograd_output(m + oo * ld + (g - g0) * tilesW, oc * ld,
                                              o + ((g / tilesH) * oc + oo) * ho * wo, ho, wo, g % tilesH, chunks,
                                              bias?[oo] ?? 0, channelSlope == nil ? 0 : 1, channelSlope ?? 0)
                }
            }
        }
    }
}
