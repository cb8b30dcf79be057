import CLapseKernels
import Foundation

extension Kernels {
    /// Query rows per chunk: bounds the score matrix of one task to about 1 MiB whatever the key length.
    static func attentionChunk(keys: Int) -> Int { max(16, min(256, (1 << 18) / max(keys, 1))) }

    /// Where the rows of one (batch, head) slice of an attention operand live: element `(b, h, row, j)` is at
    /// `b·batch + h·head + row·row + j`. Head-major `[B, H, L, D]` and token-major `[B, L, H·D]` (a linear layer's
    /// output, read in place instead of permuted) are both such layouts.
    struct AttentionLayout {
        var batch: Int, head: Int, row: Int
        /// `[B, H, L, D]`.
        static func headMajor(heads: Int, length: Int, width: Int) -> AttentionLayout {
            AttentionLayout(batch: heads * length * width, head: length * width, row: width)
        }
        /// `[B, L, H·D]`.
        static func tokenMajor(heads: Int, length: Int, width: Int) -> AttentionLayout {
            AttentionLayout(batch: length * heads * width, head: width, row: heads * width)
        }
    }

    /// Scaled-dot-product attention with one scale per head. Work is split into (batch·head, query chunk) tasks
    /// run on all cores with single-threaded BLAS; each worker reuses one score buffer.
    static func attention(query q: Tensor, key k: Tensor, value v: Tensor, mask: Tensor?, headScales: [Float],
                          op: StaticString) -> Tensor {
        precondition(q.rank == 4 && k.rank == 4 && v.rank == 4,
                     "\(op): query/key/value must be [B, H, L, D], got \(q.shape), \(k.shape), \(v.shape)")
        let b = q.shape[0], h = q.shape[1], lq = q.shape[2], d = q.shape[3]
        let lk = k.shape[2], dv = v.shape[3]
        precondition(k.shape[0] == b && k.shape[1] == h && k.shape[3] == d,
                     "\(op): key \(k.shape) does not match query \(q.shape)")
        precondition(v.shape[0] == b && v.shape[1] == h && v.shape[2] == lk,
                     "\(op): value \(v.shape) does not match key \(k.shape)")
        precondition(headScales.count == h, "\(op): \(headScales.count) scales for \(h) heads")
        var maskStrides = [0, 0, 0, 0]
        if let mask {
            precondition(mask.rank <= 4, "\(op): mask \(mask.shape) has rank > 4")
            let full = [b, h, lq, lk]
            precondition(Kernels.broadcastShape(mask.shape, full, op) == full,
                         "\(op): mask \(mask.shape) does not broadcast to \(full)")
            maskStrides = Kernels.broadcastStrides(mask.shape, to: full)
        }
        let (out, o) = Tensor.uninitializedOutput([b, h, lq, dv])  // the kernel writes every element
        withExtendedLifetime((q, k, v, mask)) {
            attentionKernel(q.basePointer, .headMajor(heads: h, length: lq, width: d),
                            k.basePointer, .headMajor(heads: h, length: lk, width: d),
                            v.basePointer, .headMajor(heads: h, length: lk, width: dv),
                            o, .headMajor(heads: h, length: lq, width: dv),
                            batches: b, heads: h, queries: lq, keys: lk, width: d, valueWidth: dv,
                            mask: mask?.basePointer, maskStrides: maskStrides, headScales: headScales)
        }
        return out
    }

    /// The attention loop over raw operands in any `AttentionLayout`; writes every output element.
    static func attentionKernel(_ pq: UnsafePointer<Float>, _ lq: AttentionLayout,
                                _ pk: UnsafePointer<Float>, _ lk: AttentionLayout,
                                _ pv: UnsafePointer<Float>, _ lv: AttentionLayout,
                                _ o: UnsafeMutablePointer<Float>, _ lo: AttentionLayout,
                                batches b: Int, heads h: Int, queries nq: Int, keys nk: Int, width d: Int,
                                valueWidth dv: Int, mask pm: UnsafePointer<Float>?, maskStrides: [Int],
                                headScales: [Float]) {
        if b * h * nq == 0 || dv == 0 { return }
        let chunk = attentionChunk(keys: nk)
        let chunks = (nq + chunk - 1) / chunk
        let workers = min(cores, b * h * chunks)
        // Per worker: the score block, then one 1/Σ per query row of the chunk.
        let perWorker = chunk * nk + chunk
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: workers * perWorker)
        defer { scratch.deallocate() }
        let t = table
        parallelTasks(b * h * chunks) { worker, task in
            let bh = task / chunks, c0 = (task % chunks) * chunk
            let rows = min(chunk, nq - c0)
            let s = scratch + worker * perWorker, inverseSums = s + chunk * nk
            let head = bh % h, batch = bh / h
            let out = o + batch * lo.batch + head * lo.head + c0 * lo.row
            if nk == 0 {
                for r in 0..<rows { (out + r * lo.row).update(repeating: 0, count: dv) }
                return
            }
            sgemm(transA: false, transB: true, m: rows, n: nk, k: d, alpha: headScales[head],
                  a: pq + batch * lq.batch + head * lq.head + c0 * lq.row, lda: lq.row,
                  b: pk + batch * lk.batch + head * lk.head, ldb: lk.row, c: s, ldc: nk)
            for r in 0..<rows {
                let row = s + r * nk
                if let pm {
                    let mrow = pm + batch * maskStrides[0] + head * maskStrides[1] + (c0 + r) * maskStrides[2]
                    t.pointee.scale_add(row, nk, 1, mrow, maskStrides[3])
                }
                inverseSums[r] = t.pointee.softmax_unnormalised(row, nk)
            }
            // exp(scores)·v, then each output row times 1/Σ: dv multiplies per row instead of nk.
            sgemm(transA: false, transB: false, m: rows, n: dv, k: nk, a: s, lda: nk,
                  b: pv + batch * lv.batch + head * lv.head, ldb: lv.row, c: out, ldc: lo.row)
            for r in 0..<rows { t.pointee.scale_add(out + r * lo.row, dv, inverseSums[r], nil, 0) }
        }
    }

    /// Rows of the last dim divided by max(‖row‖₂, 1e-12), like `F.normalize`.
    static func l2NormalizeRows(_ x: Tensor) -> Tensor {
        let d = x.shape[x.rank - 1]
        let (out, o) = Tensor.uninitializedOutput(x.shape)
        let p = x.basePointer, t = table
        parallelRanges(x.count / max(d, 1), minPerTask: max(1, 16_384 / max(d, 1))) { r in
            for row in r { t.pointee.l2_normalize(p + row * d, o + row * d, d) }
        }
        return out
    }
}

/// Scaled-dot-product attention: q `[B, H, Lq, D]`, k `[B, H, Lk, D]`, v `[B, H, Lk, Dv]` → `[B, H, Lq, Dv]`.
///
/// `mask` is additive and broadcastable to `[B, H, Lq, Lk]`; `scale` defaults to 1/√D. Memory stays bounded by
/// processing query rows in chunks instead of materialising the full score matrix.
public func attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor? = nil, scale: Float? = nil) -> Tensor {
    precondition(query.rank == 4, "attention: query must be [B, H, L, D], got \(query.shape)")
    let s = scale ?? 1 / Float(query.shape[3]).squareRoot()
    return Kernels.attention(query: query, key: key, value: value, mask: mask,
                             headScales: [Float](repeating: s, count: query.shape[1]), op: "attention")
}

/// Multi-head scaled-dot-product attention on token-major operands, as linear projections produce them:
/// query `[B, Lq, H·D]`, key `[B, Lk, H·D]`, value `[B, Lk, H·Dv]` → `[B, Lq, H·Dv]` (heads side by side in each
/// row). Equal to splitting the heads out, `attention`, and merging them back, without the three permuted copies.
public func multiHeadAttention(query: Tensor, key: Tensor, value: Tensor, heads: Int, scale: Float? = nil) -> Tensor {
    precondition(query.rank == 3 && key.rank == 3 && value.rank == 3,
                 "multiHeadAttention: query/key/value must be [B, L, C], got \(query.shape), \(key.shape), \(value.shape)")
    let b = query.shape[0], lq = query.shape[1], c = query.shape[2], lk = key.shape[1], cv = value.shape[2]
    precondition(heads >= 1 && c % heads == 0 && cv % heads == 0,
                 "multiHeadAttention: widths \(c) and \(cv) do not split into \(heads) heads")
    precondition(key.shape[0] == b && key.shape[2] == c, "multiHeadAttention: key \(key.shape) does not match query \(query.shape)")
    precondition(value.shape[0] == b && value.shape[1] == lk,
                 "multiHeadAttention: value \(value.shape) does not match key \(key.shape)")
    let d = c / heads, dv = cv / heads
    let s = scale ?? 1 / Float(d).squareRoot()
    let (out, o) = Tensor.uninitializedOutput([b, lq, cv])
    withExtendedLifetime((query, key, value)) {
        Kernels.attentionKernel(query.basePointer, .tokenMajor(heads: heads, length: lq, width: d),
                                key.basePointer, .tokenMajor(heads: heads, length: lk, width: d),
                                value.basePointer, .tokenMajor(heads: heads, length: lk, width: dv),
                                o, .tokenMajor(heads: heads, length: lq, width: dv),
                                batches: b, heads: heads, queries: lq, keys: lk, width: d, valueWidth: dv,
                                mask: nil, maskStrides: [0, 0, 0, 0], headScales: [Float](repeating: s, count: heads))
    }
    return out
}

/// Cosine attention (Swin-v2 / GRL): `normalize(q)·normalize(k)ᵀ · exp(min(logitScale[h], maxLogit)) + mask`,
/// softmax, times v. `logitScale` holds one value per head (`[H]` or `[H, 1, 1]`).
public func cosineAttention(query: Tensor, key: Tensor, value: Tensor, logitScale: Tensor,
                            maxLogit: Float = 4.605170185988092, mask: Tensor? = nil) -> Tensor {
    precondition(query.rank == 4, "cosineAttention: query must be [B, H, L, D], got \(query.shape)")
    let h = query.shape[1]
    precondition(logitScale.count == h, "cosineAttention: logitScale has \(logitScale.count) values for \(h) heads")
    let ls = logitScale.scalars
    let scales = (0..<h).map { Foundation.exp(Swift.min(ls[$0], maxLogit)) }
    return Kernels.attention(query: Kernels.l2NormalizeRows(query), key: Kernels.l2NormalizeRows(key), value: value,
                             mask: mask, headScales: scales, op: "cosineAttention")
}
