import CLapseKernels

/// The activation applied to the gate half of a gated feed-forward.
public enum GateActivation: Sendable {
    /// Exact (erf) GELU: GEGLU, as diffusers' `GEGLU` and Stable Diffusion use.
    case gelu
    /// SiLU: SwiGLU.
    case silu
}

/// Gated feed-forward over the last dim: `[value, gate] = x·Wᵢᵀ + bᵢ` (the projection's first and second halves),
/// then `(value · act(gate))·Wₒᵀ + bₒ`. With `.gelu` this is the GEGLU block of Stable Diffusion's transformers.
///
/// `inWeight` is `[2·inner, dim]`, `outWeight` `[out, inner]` (PyTorch layout). Rows run in blocks of up to 512 on
/// all cores, so the `[rows, 2·inner]` projection never exists in full: at 512² × 16 frames that intermediate
/// alone would be 1.3 GB, and each of the unfused chunk/GELU/multiply passes over it costs a memory round trip.
public func gatedFeedForward(_ x: Tensor, inWeight: Tensor, inBias: Tensor?, outWeight: Tensor, outBias: Tensor?,
                             gate: GateActivation = .gelu) -> Tensor {
    precondition(inWeight.rank == 2 && outWeight.rank == 2 && inWeight.shape[0] % 2 == 0,
                 "gatedFeedForward: weights must be [2·inner, dim] and [out, inner], got \(inWeight.shape), \(outWeight.shape)")
    let dim = inWeight.shape[1], inner = inWeight.shape[0] / 2, outFeatures = outWeight.shape[0]
    precondition(outWeight.shape[1] == inner,
                 "gatedFeedForward: output weight \(outWeight.shape) does not take the \(inner) gated features")
    precondition(x.rank >= 1 && x.shape[x.rank - 1] == dim,
                 "gatedFeedForward: input \(x.shape) does not end in \(dim) features (weight \(inWeight.shape))")
    if let inBias { precondition(inBias.count == 2 * inner, "gatedFeedForward: input bias has \(inBias.count) values, expected \(2 * inner)") }
    if let outBias { precondition(outBias.count == outFeatures, "gatedFeedForward: output bias has \(outBias.count) values, expected \(outFeatures)") }
    let rows = x.count / max(dim, 1)
    let (out, o) = Tensor.uninitializedOutput(Array(x.shape.dropLast()) + [outFeatures])
    if rows == 0 || outFeatures == 0 { return out }
    // 512 rows amortise OpenBLAS packing the weights on every call; fewer when that would leave a core idle.
    let block = max(1, min(512, (rows + Kernels.cores - 1) / Kernels.cores))
    let tasks = (rows + block - 1) / block
    let workers = min(Kernels.cores, tasks)
    let scratch = Kernels.allocateFloats(workers * block * 2 * inner)
    defer { Kernels.releaseFloats(scratch, workers * block * 2 * inner) }
    let px = x.basePointer, pwi = inWeight.basePointer, pwo = outWeight.basePointer
    let pbi = inBias?.basePointer, pbo = outBias?.basePointer, t = Kernels.table
    let kind = Int32(gate == .gelu ? LAPSE_ACT_GELU : LAPSE_ACT_SILU)
    Kernels.parallelTasks(tasks) { worker, task in
        let r0 = task * block, n = min(block, rows - r0)
        let s = scratch + worker * block * 2 * inner
        if let pbi { for r in 0..<n { (s + r * 2 * inner).update(from: pbi, count: 2 * inner) } }
        Kernels.sgemm(transA: false, transB: true, m: n, n: 2 * inner, k: dim, a: px + r0 * dim, lda: dim,
                      b: pwi, ldb: dim, beta: pbi == nil ? 0 : 1, c: s, ldc: 2 * inner)
        for r in 0..<n {
            let row = s + r * 2 * inner
            t.pointee.gate(row, row + inner, row, inner, kind)
        }
        let dst = o + r0 * outFeatures
        if let pbo { for r in 0..<n { (dst + r * outFeatures).update(from: pbo, count: outFeatures) } }
        Kernels.sgemm(transA: false, transB: true, m: n, n: outFeatures, k: inner, a: s, lda: 2 * inner,
                      b: pwo, ldb: inner, beta: pbo == nil ? 0 : 1, c: dst, ldc: outFeatures)
    }
    return out
}
