import Foundation

extension Kernels {
    /// Query rows per chunk: bounds the score matrix of one task to about 1 MiB whatever the key length.
    static func attentionChunk(keys: Int) -> Int { max(16, min(256, (1 << 18) / max(keys, 1))) }

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
            _ = Kernels.broadcastShape(mask.shape, full, op)
            precondition(Kernels.broadcastShape(mask.shape, full, op) == full,
                         "\(op): mask \(mask.shape) does not broadcast to \(full)")
            maskStrides = Kernels.broadcastStrides(mask.shape, to: full)
        }
        let (out, o) = Tensor.output([b, h, lq, dv])
        if b * h * lq == 0 { return out }
        let chunk = attentionChunk(keys: lk)
        let chunks = (lq + chunk - 1) / chunk
        let pq = q.basePointer, pk = k.basePointer, pv = v.basePointer, pm = mask?.basePointer
        let workers = min(cores, b * h * chunks)
        // Per worker: the score block, then one 1/Σ per query row of the chunk.
        let perWorker = chunk * lk + chunk
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: workers * perWorker)
        defer { scratch.deallocate() }
        parallelTasks(b * h * chunks) { worker, task in
            let bh = task / chunks, c0 = (task % chunks) * chunk
            let rows = min(chunk, lq - c0)
            let s = scratch + worker * perWorker, inverseSums = s + chunk * lk
            let head = bh % h, batch = bh / h
            sgemm(transA: false, transB: true, m: rows, n: lk, k: d, alpha: headScales[head],
                  a: pq + (bh * lq + c0) * d, lda: d, b: pk + bh * lk * d, ldb: d, c: s, ldc: lk)
            for r in 0..<rows {
                let row = s + r * lk
                if let pm {
                    let mrow = pm + batch * maskStrides[0] + head * maskStrides[1] + (c0 + r) * maskStrides[2]
                    let ms = maskStrides[3]
                    if ms == 1 { for j in 0..<lk { row[j] += mrow[j] } } else { for j in 0..<lk { row[j] += mrow[j * ms] } }
                }
                inverseSums[r] = FastMath.softmaxUnnormalised(row, lk)
            }
            // exp(scores)·v, then each output row times 1/Σ: dv multiplies per row instead of lk.
            let out = o + (bh * lq + c0) * dv
            sgemm(transA: false, transB: false, m: rows, n: dv, k: lk, a: s, lda: lk,
                  b: pv + bh * lk * dv, ldb: dv, c: out, ldc: dv)
            for r in 0..<rows {
                let inv = inverseSums[r], orow = out + r * dv
                for j in 0..<dv { orow[j] *= inv }
            }
        }
        return out
    }

    /// Rows of the last dim divided by max(‖row‖₂, 1e-12), like `F.normalize`.
    static func l2NormalizeRows(_ x: Tensor) -> Tensor {
        let d = x.shape[x.rank - 1]
        let (out, o) = Tensor.output(x.shape)
        let p = x.basePointer
        parallelRanges(x.count / max(d, 1), minPerTask: max(1, 16_384 / max(d, 1))) { r in
            for row in r {
                let src = p + row * d, dst = o + row * d
                var acc = SIMD8<Float>(), i = 0
                while i + 8 <= d { let x = FastMath.load(src + i); acc += x * x; i += 8 }
                var s = acc.sum()
                for j in i..<d { s += src[j] * src[j] }
                let inv = 1 / Swift.max(s.squareRoot(), 1e-12), vinv = SIMD8<Float>(repeating: inv)
                i = 0
                while i + 8 <= d { FastMath.store(FastMath.load(src + i) * vinv, dst + i); i += 8 }
                for j in i..<d { dst[j] = src[j] * inv }
            }
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
