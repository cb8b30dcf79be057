import Foundation
import LapseTensor

/// Window bookkeeping shared by GRL and DAT: token layouts, window partitions and the Swin-style shift masks.
///
/// Feature maps inside the transformer bodies are kept channels-last (`[H, W, C]` with batch 1), the layout
/// the linear layers want; the partitions below turn them into `[windows, heads, tokens, headDim]` for attention.
enum TransformerWindows {
    /// `[1, C, H, W]` → `[H·W, C]`.
    static func tokens(_ x: Tensor) -> Tensor {
        let c = x.shape[1], h = x.shape[2], w = x.shape[3]
        return permute(x.reshaped([c, h * w]), [1, 0])
    }

    /// `[H·W, C]` → `[1, C, H, W]`.
    static func image(_ t: Tensor, height: Int, width: Int) -> Tensor {
        let c = t.shape[t.rank - 1]
        return permute(t.reshaped([height * width, c]), [1, 0]).reshaped([1, c, height, width])
    }

    /// Splits `parts` stacked projections of a `[H, W, parts·heads·d]` map into windows:
    /// → `[parts, nWindows, heads, wh·ww, d]`, windows row-major, tokens row-major inside each window.
    static func partition(_ x: Tensor, height: Int, width: Int, window: (Int, Int), parts: Int, heads: Int) -> Tensor {
        let (wh, ww) = window
        let channels = x.count / (height * width)
        let d = channels / (parts * heads)
        let nh = height / wh, nw = width / ww
        let v = x.reshaped([nh, wh, nw, ww, parts, heads, d])
        return permute(v, [4, 0, 2, 5, 1, 3, 6]).reshaped([parts, nh * nw, heads, wh * ww, d])
    }

    /// Inverse of `partition` for one part: `[nWindows, heads, wh·ww, d]` → `[H, W, heads·d]`.
    static func merge(_ x: Tensor, height: Int, width: Int, window: (Int, Int)) -> Tensor {
        let (wh, ww) = window
        let heads = x.shape[1], d = x.shape[3]
        let nh = height / wh, nw = width / ww
        let v = x.reshaped([nh, nw, heads, wh, ww, d])
        return permute(v, [0, 3, 1, 4, 2, 5]).reshaped([height, width, heads * d])
    }

    /// Part `i` of a stacked `[parts, …]` tensor, without copying.
    static func part(_ x: Tensor, _ i: Int) -> Tensor {
        let inner = Array(x.shape.dropFirst())
        let n = Tensor.elementCount(inner)
        return Tensor(shape: inner, storage: x.storage, offset: x.offset + i * n)
    }

    /// Region ids of Swin's shifted-window mask (`_fill_window`): the map is cut at `-window` and `-shift` on each
    /// axis into 3×3 regions; returns `[nWindows, wh·ww]` ids in window-partition order.
    static func regionIDs(height: Int, width: Int, window: (Int, Int), shift: (Int, Int)) -> [[Int]] {
        func region(_ i: Int, _ size: Int, _ win: Int, _ sh: Int) -> Int {
            // Python slices (0, -win), (-win, -sh), (-sh, None); negative bounds clamp at 0 like Python's.
            let a = max(0, size - win), b = max(0, size - sh)
            return i < a ? 0 : (i < b ? 1 : 2)
        }
        let (wh, ww) = window
        let nh = height / wh, nw = width / ww
        var out: [[Int]] = []
        out.reserveCapacity(nh * nw)
        for by in 0..<nh {
            for bx in 0..<nw {
                var ids = [Int](repeating: 0, count: wh * ww)
                for y in 0..<wh {
                    for x in 0..<ww {
                        ids[y * ww + x] = region(by * wh + y, height, wh, shift.0) * 3 + region(bx * ww + x, width, ww, shift.1)
                    }
                }
                out.append(ids)
            }
        }
        return out
    }

    /// Swin's shifted-window mask, kept as region ids and expanded only for the windows being attended:
    /// `-100` where query and key tokens come from different regions.
    struct ShiftMask {
        let ids: [[Int]]

        init(height: Int, width: Int, window: (Int, Int), shift: (Int, Int)) {
            ids = TransformerWindows.regionIDs(height: height, width: width, window: window, shift: shift)
        }

        /// `[end − start, 1, N, N]` for windows `start..<end`.
        func rows(_ start: Int, _ end: Int) -> Tensor {
            let n = ids[0].count
            var mask = Tensor(zeros: [end - start, 1, n, n])
            mask.withUnsafeMutableBufferPointer { m in
                for w in start..<end {
                    let r = ids[w]
                    for i in 0..<n {
                        let row = ((w - start) * n + i) * n
                        for j in 0..<n where r[i] != r[j] { m[row + j] = -100 }
                    }
                }
            }
            return mask
        }
    }

    /// Zero-pads a channels-last `[H, W, C]` map to `[toH, toW, C]` (bottom/right).
    static func padChannelsLast(_ x: Tensor, height: Int, width: Int, toHeight: Int, toWidth: Int) -> Tensor {
        if toHeight == height && toWidth == width { return x }
        let c = x.count / (height * width)
        var out = Tensor(zeros: [toHeight, toWidth, c])
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<height {
                    (dst.baseAddress! + y * toWidth * c).update(from: src.baseAddress! + y * width * c, count: width * c)
                }
            }
        }
        return out
    }

    /// Top-left `[H, W, C]` crop of a channels-last `[fromH, fromW, C]` map.
    static func cropChannelsLast(_ x: Tensor, fromWidth: Int, height: Int, width: Int) -> Tensor {
        let c = x.shape[x.rank - 1]
        if fromWidth == width && x.count == height * width * c { return x.reshaped([height, width, c]) }
        var out = Tensor(zeros: [height, width, c])
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<height {
                    (dst.baseAddress! + y * width * c).update(from: src.baseAddress! + y * fromWidth * c, count: width * c)
                }
            }
        }
        return out
    }

    /// Relative-position bias lookup: `table[index[i, j], h]` → `[heads, Ni, Nj]`.
    static func gatherBias(table: Tensor, index: [[Int]]) -> Tensor {
        let heads = table.shape[table.rank - 1]
        let ni = index.count, nj = index[0].count
        var out = Tensor(zeros: [heads, ni, nj])
        table.withUnsafeBufferPointer { t in
            out.withUnsafeMutableBufferPointer { o in
                for i in 0..<ni {
                    for j in 0..<nj {
                        let src = index[i][j] * heads
                        for h in 0..<heads { o[(h * ni + i) * nj + j] = t[src + h] }
                    }
                }
            }
        }
        return out
    }

    /// Rows `start..<end` of axis 0 of a contiguous tensor, without copying.
    static func rows(_ x: Tensor, _ start: Int, _ end: Int) -> Tensor {
        let inner = Array(x.shape.dropFirst())
        let n = Tensor.elementCount(inner)
        return Tensor(shape: [end - start] + inner, storage: x.storage, offset: x.offset + start * n)
    }

    /// Runs `body` over groups of windows so that `bias + shiftMask` (`[windows, heads, Nq, Nk]`) is only ever
    /// materialised for one group: on a 720p map the full per-window mask would take gigabytes.
    /// `q`, `k`, `v`: `[nWindows, heads, N, d]`; `bias`: `[1, heads, N, N]`.
    /// `budget` bounds the mask elements of one group.
    static func windowedAttention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, shiftMask: ShiftMask?, budget: Int,
                                  _ body: (Tensor, Tensor, Tensor, Tensor) -> Tensor) -> Tensor {
        guard let shiftMask else { return body(q, k, v, bias) }
        let windows = q.shape[0]
        let perWindow = max(1, bias.count)
        let group = max(1, min(windows, budget / perWindow))
        if group == windows { return body(q, k, v, bias + shiftMask.rows(0, windows)) }
        var outs: [Tensor] = []
        var start = 0
        while start < windows {
            let end = min(windows, start + group)
            outs.append(body(rows(q, start, end), rows(k, start, end), rows(v, start, end), bias + shiftMask.rows(start, end)))
            start = end
        }
        return concat(outs, axis: 0)
    }

    /// A depthwise 3×3 convolution (zero padding 1) on a channels-last `[H·W, C]` token map, so the token
    /// layout the transformer blocks use never has to be transposed to NCHW and back.
    struct DepthwiseConv3x3: @unchecked Sendable {
        /// Weights as `[9 taps, C]` so the inner loop runs over contiguous channels.
        let taps: [Float]
        let bias: [Float]
        let channels: Int

        /// From PyTorch's `[C, 1, 3, 3]` weight and `[C]` bias (nil: zeros); `scale`/`shift` fold a following
        /// inference BatchNorm in.
        init(weight: Tensor, bias: Tensor?, scale: [Float]? = nil, shift: [Float]? = nil) {
            let c = weight.shape[0]
            channels = c
            let w = weight.scalars, b = bias?.scalars ?? [Float](repeating: 0, count: c)
            var t = [Float](repeating: 0, count: 9 * c)
            var bb = [Float](repeating: 0, count: c)
            for ch in 0..<c {
                let s = scale?[ch] ?? 1
                for k in 0..<9 { t[k * c + ch] = w[ch * 9 + k] * s }
                bb[ch] = b[ch] * s + (shift?[ch] ?? 0)
            }
            taps = t
            self.bias = bb
        }

        /// Raw buffers handed to the parallel rows; each task writes only its own rows.
        private struct Pointers: @unchecked Sendable {
            let s: UnsafePointer<Float>, d: UnsafeMutablePointer<Float>, k: UnsafePointer<Float>, b: UnsafePointer<Float>
        }

        func callAsFunction(_ x: Tensor, height h: Int, width w: Int) -> Tensor {
            let c = channels
            precondition(x.count == h * w * c, "depthwise conv: \(x.shape) is not \(h)×\(w)×\(c)")
            var out = Tensor(zeros: [h * w, c])
            x.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    taps.withUnsafeBufferPointer { wt in
                        bias.withUnsafeBufferPointer { bs in
                            let p = Pointers(s: src.baseAddress!, d: dst.baseAddress!, k: wt.baseAddress!, b: bs.baseAddress!)
                            let workers = min(h, max(1, ProcessInfo.processInfo.activeProcessorCount))
                            DispatchQueue.concurrentPerform(iterations: workers) { part in
                                let s = p.s, d = p.d, k = p.k, b = p.b
                                for y in (part * h / workers)..<((part + 1) * h / workers) {
                                    for xx in 0..<w {
                                        let o = d + (y * w + xx) * c
                                        o.update(from: b, count: c)
                                        for dy in -1...1 where y + dy >= 0 && y + dy < h {
                                            for dx in -1...1 where xx + dx >= 0 && xx + dx < w {
                                                let i = s + ((y + dy) * w + xx + dx) * c
                                                let t = k + ((dy + 1) * 3 + dx + 1) * c
                                                for ch in 0..<c { o[ch] += i[ch] * t[ch] }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return out
        }
    }

    /// `x / max(‖x‖₂, 1e-12)` over the last dimension, as `torch.nn.functional.normalize`.
    static func l2Normalized(_ x: Tensor) -> Tensor {
        let n = x.shape[x.rank - 1]
        let rows = x.count / max(n, 1)
        var out = Tensor(zeros: x.shape)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for r in 0..<rows {
                    var s: Float = 0
                    for i in 0..<n { let v = src[r * n + i]; s += v * v }
                    let inv = 1 / max(s.squareRoot(), 1e-12)
                    for i in 0..<n { dst[r * n + i] = src[r * n + i] * inv }
                }
            }
        }
        return out
    }
}
