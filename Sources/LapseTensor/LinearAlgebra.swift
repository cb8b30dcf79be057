import COpenBLAS

/// Batched matrix product `[..., m, k] × [..., k, n] → [..., m, n]` with broadcast batch dims.
///
/// `transposeA` reads `a` as `[..., k, m]`, `transposeB` reads `b` as `[..., n, k]` (no copies: BLAS transposes).
public func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
    precondition(a.rank >= 2 && b.rank >= 2, "matmul: operands need rank ≥ 2, got \(a.shape) and \(b.shape)")
    let ar = a.shape[a.rank - 2], ac = a.shape[a.rank - 1]
    let br = b.shape[b.rank - 2], bc = b.shape[b.rank - 1]
    let m = transposeA ? ac : ar, k = transposeA ? ar : ac
    let kb = transposeB ? bc : br, n = transposeB ? br : bc
    precondition(k == kb, "matmul: inner dimensions differ: \(a.shape)\(transposeA ? "ᵀ" : "") × \(b.shape)\(transposeB ? "ᵀ" : "")")
    let batchA = Array(a.shape.dropLast(2)), batchB = Array(b.shape.dropLast(2))
    let batch = Kernels.broadcastShape(batchA, batchB)
    let (out, o) = Tensor.output(batch + [m, n])
    let batches = Tensor.elementCount(batch)
    if batches == 0 || m == 0 || n == 0 { return out }
    let pa = a.basePointer, pb = b.basePointer
    let lda = ac, ldb = bc
    // One tall GEMM when `b` is shared by every batch and `a`'s batches are contiguous rows.
    if Tensor.elementCount(batchB) == 1 && !transposeA && Tensor.elementCount(batchA) == batches {
        Kernels.sgemm(transA: false, transB: transposeB, m: batches * m, n: n, k: k,
                      a: pa, lda: lda, b: pb, ldb: ldb, c: o, ldc: n)
        return out
    }
    let sa = Kernels.broadcastStrides(batchA, to: batch), sb = Kernels.broadcastStrides(batchB, to: batch)
    let matA = ar * ac, matB = br * bc
    func offsets(_ index: Int) -> (Int, Int) {
        var rem = index, oa = 0, ob = 0
        for d in stride(from: batch.count - 1, through: 0, by: -1) {
            let i = rem % batch[d]; rem /= batch[d]
            oa += i * sa[d]; ob += i * sb[d]
        }
        return (oa * matA, ob * matB)
    }
    let run = { (index: Int) in
        let (oa, ob) = offsets(index)
        Kernels.sgemm(transA: transposeA, transB: transposeB, m: m, n: n, k: k,
                      a: pa + oa, lda: lda, b: pb + ob, ldb: ldb, c: o + index * m * n, ldc: n)
    }
    // Small matrices: parallelise over the batch with single-threaded BLAS; large ones: let BLAS thread.
    if batches > 1 && m * n * k < 1 << 24 {
        Kernels.parallelTasks(batches) { _, index in run(index) }
    } else {
        for index in 0..<batches { run(index) }
    }
    return out
}

/// Fully connected layer over the last dim: `y = x·Wᵀ + b`, weight `[out, in]` (PyTorch layout).
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
    precondition(weight.rank == 2, "linear: weight must be [out, in], got \(weight.shape)")
    let inFeatures = weight.shape[1], outFeatures = weight.shape[0]
    precondition(x.rank >= 1 && x.shape[x.rank - 1] == inFeatures,
                 "linear: input \(x.shape) does not end in \(inFeatures) features (weight \(weight.shape))")
    if let bias { precondition(bias.count == outFeatures, "linear: bias has \(bias.count) values, expected \(outFeatures)") }
    let rows = x.count / max(inFeatures, 1)
    // Every element is written: by the bias fill, or by the GEMM with beta 0 (which also clears C when k == 0).
    let (out, o) = Tensor.uninitializedOutput(Array(x.shape.dropLast()) + [outFeatures])
    if rows == 0 || outFeatures == 0 { return out }
    var beta: Float = 0
    if let bias {
        // Pre-filling C with the bias lets the GEMM add it for free (beta = 1).
        let pbias = bias.basePointer
        for r in 0..<rows { (o + r * outFeatures).update(from: pbias, count: outFeatures) }
        beta = 1
    }
    Kernels.sgemm(transA: false, transB: true, m: rows, n: outFeatures, k: inFeatures,
                  a: x.basePointer, lda: inFeatures, b: weight.basePointer, ldb: inFeatures,
                  beta: beta, c: o, ldc: outFeatures)
    return out
}
