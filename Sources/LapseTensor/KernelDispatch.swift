import CLapseKernels

/// The instruction-set level of Lapse's own kernels (activations, softmax, norms, the Winograd transforms, the direct
/// 3×3 convolution): one binary carries all three and picks one at load time, so it runs at full speed on any
/// x86-64 CPU without a build-time `-target-cpu`.
public enum KernelLevel: Int, Sendable, CaseIterable, Comparable, CustomStringConvertible {
    /// The architecture's baseline (SSE2 on x86-64, NEON on arm64).
    case generic = 0
    /// AVX2 + FMA (Intel Haswell, AMD Zen 1 and later).
    case avx2 = 1
    /// AVX-512 F/DQ/BW/VL (Intel Skylake-SP and later servers, AMD Zen 4 and later).
    case avx512 = 2

    /// "generic", "avx2" or "avx512", as `LAPSE_CPU_LEVEL` takes it.
    public var description: String {
        switch self {
        case .generic: return "generic"
        case .avx2: return "avx2"
        case .avx512: return "avx512"
        }
    }

    public static func < (a: KernelLevel, b: KernelLevel) -> Bool { a.rawValue < b.rawValue }

    /// The level's kernels, or nil when this CPU cannot run them.
    static func table(_ level: KernelLevel) -> UnsafePointer<LapseKernelTable>? {
        lapse_kernels_table(Int32(level.rawValue))
    }
}

/// Which kernel level runs, and why.
///
/// At load time the strongest level CPUID and the OS allow is chosen; `LAPSE_CPU_LEVEL=generic|avx2|avx512`
/// (read once, at load) picks a weaker one instead, e.g. to benchmark the AVX2 path on an AVX-512 machine. A value
/// that is unknown or needs instructions the CPU lacks is reported (`note`, and once on stderr) and ignored.
public enum KernelDispatch {
    /// The level every op uses unless `withLevel` says otherwise.
    public static var active: KernelLevel { KernelLevel(rawValue: Int(lapse_kernels_active_level())) ?? .generic }

    /// The strongest level this CPU and OS support.
    public static var best: KernelLevel { KernelLevel(rawValue: Int(lapse_kernels_best_level())) ?? .generic }

    /// The levels this CPU can run, weakest first.
    public static var supported: [KernelLevel] { KernelLevel.allCases.filter { $0 <= best } }

    /// True when `LAPSE_CPU_LEVEL` chose `active`, false when CPUID did.
    public static var overridden: Bool { lapse_kernels_overridden() != 0 }

    /// Why `LAPSE_CPU_LEVEL` was not followed, when it wasn't.
    public static var note: String? { lapse_kernels_note().map { String(cString: $0) } }

    /// The level ops called from here use: the one `withLevel` forced on this task, else `active`.
    public static var current: KernelLevel { forced ?? active }

    /// "avx512 (auto)" or "avx2 (LAPSE_CPU_LEVEL)": one line for `lapse doctor` and benchmark headers.
    public static var summary: String { "\(active) (\(overridden ? "LAPSE_CPU_LEVEL" : "auto"))" }

    /// A level forced for the ops called inside `withLevel` on this task (tests compare levels in one process).
    @TaskLocal static var forced: KernelLevel?

    /// Runs `body` with every op it calls on this task using `level`'s kernels, which must be in `supported`.
    /// Ops read the level once on entry, so work they spread over cores follows it too.
    public static func withLevel<R>(_ level: KernelLevel, _ body: () throws -> R) rethrows -> R {
        precondition(level <= best, "KernelDispatch.withLevel: this CPU cannot run \(level) kernels (best: \(best))")
        return try $forced.withValue(level, operation: body)
    }
}

extension Kernels {
    /// The kernel table for the calling op: read once on entry (in the caller's task, where `withLevel` applies)
    /// and captured by the parallel bodies.
    @inline(__always)
    static var table: UnsafePointer<LapseKernelTable> {
        if let forced = KernelDispatch.forced, let t = KernelLevel.table(forced) { return t }
        return lapse_kernels_active()
    }
}

extension Activation {
    /// The C kernel's `kind` and `parameter` for this activation.
    var kernelKind: (kind: Int32, parameter: Float) {
        switch self {
        case .relu: return (Int32(LAPSE_ACT_RELU), 0)
        case .leakyReLU(let slope): return (Int32(LAPSE_ACT_LEAKY_RELU), slope)
        case .silu: return (Int32(LAPSE_ACT_SILU), 0)
        case .gelu: return (Int32(LAPSE_ACT_GELU), 0)
        case .geluTanh: return (Int32(LAPSE_ACT_GELU_TANH), 0)
        case .quickGELU: return (Int32(LAPSE_ACT_QUICK_GELU), 0)
        case .sigmoid: return (Int32(LAPSE_ACT_SIGMOID), 0)
        }
    }
}
