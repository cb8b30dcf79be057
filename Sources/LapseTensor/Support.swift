import COpenBLAS
import Dispatch
import Foundation

/// Zero-padding, mirror (without repeating the edge, like `torch` "reflect") or edge-clamping borders.
public enum PaddingMode: Sendable { case zeros, reflect, replicate }

/// Pointwise nonlinearities that convolutions can fuse into their output pass.
public enum Activation: Sendable, Equatable { case relu, leakyReLU(Float), silu, gelu, geluTanh, quickGELU, sigmoid }

/// Interpolation kernels of `resize`, matching `torch.nn.functional.interpolate`.
public enum ResizeMode: Sendable { case nearest, bilinear, bicubic }

/// Carries a non-Sendable closure into `concurrentPerform`. Sound here because every parallel body in this module
/// writes disjoint output ranges and the call does not return before all iterations finish.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Helpers shared by the ops; internal so the public surface stays the agreed op API.
enum Kernels {
    /// Cores used for `concurrentPerform`; the machine is small, so never more tasks than cores for bulk loops.
    static let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Resolves a PyTorch-style (possibly negative) axis.
    @inline(__always)
    static func axis(_ a: Int, rank: Int, _ op: StaticString = #function) -> Int {
        let r = a < 0 ? a + rank : a
        precondition(r >= 0 && r < max(rank, 1), "\(op): axis \(a) out of range for rank \(rank)")
        return r
    }

    /// Row-major strides of `shape`.
    static func strides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) { s[i] = acc; acc *= shape[i] }
        return s
    }

    /// NumPy broadcast of two shapes (right-aligned).
    static func broadcastShape(_ a: [Int], _ b: [Int], _ op: StaticString = #function) -> [Int] {
        let r = max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let da = i < r - a.count ? 1 : a[i - (r - a.count)]
            let db = i < r - b.count ? 1 : b[i - (r - b.count)]
            precondition(da == db || da == 1 || db == 1, "\(op): shapes \(a) and \(b) do not broadcast")
            out[i] = da == 1 ? db : da
        }
        return out
    }

    /// Strides to read a tensor of `shape` as if broadcast to `target` (0 along broadcast dims).
    static func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
        let own = strides(shape)
        let lead = target.count - shape.count
        var out = [Int](repeating: 0, count: target.count)
        for i in 0..<shape.count where shape[i] != 1 { out[lead + i] = own[i] }
        return out
    }

    /// Runs `body` over `0..<count` split into at most `cores` contiguous ranges; serial when the work is small.
    @inline(__always)
    static func parallelRanges(_ count: Int, minPerTask: Int = 32_768, _ body: (Range<Int>) -> Void) {
        let tasks = min(cores, max(1, count / max(minPerTask, 1)))
        if tasks <= 1 { body(0..<count); return }
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: tasks) { t in
                let lo = count * t / tasks, hi = count * (t + 1) / tasks
                if lo < hi { box.value(lo..<hi) }
            }
        }
    }

    /// Runs `body(task)` for `tasks` independent tasks on all cores while OpenBLAS runs single-threaded, so the two
    /// thread pools never oversubscribe the cores.
    static func parallelTasks(_ tasks: Int, _ body: (_ worker: Int, _ task: Int) -> Void) {
        let workers = min(cores, tasks)
        if workers <= 1 { for t in 0..<tasks { body(0, t) }; return }
        let previous = openblas_get_num_threads()
        openblas_set_num_threads(1)
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                var t = w
                while t < tasks { box.value(w, t); t += workers }
            }
        }
        openblas_set_num_threads(previous)
    }

    /// Row-major single-precision GEMM `C = alpha·op(A)·op(B) + beta·C`.
    @inline(__always)
    static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                      a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                      beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

extension Tensor {
    /// Read-only base pointer of the tensor's elements (valid while the tensor is alive).
    @inline(__always)
    var basePointer: UnsafePointer<Float> { UnsafePointer(storage.pointer + offset) }

    /// A fresh uninitialised-looking (zeroed) output tensor and its writable pointer.
    @inline(__always)
    static func output(_ shape: [Int]) -> (Tensor, UnsafeMutablePointer<Float>) {
        let t = Tensor(zeros: shape)
        return (t, t.storage.pointer)
    }
}
