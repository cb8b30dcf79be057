import COpenBLAS
import Foundation
import LapseSupport

/// The CPU this process runs on and the kernels OpenBLAS chose for it: what `lapse doctor` prints, what every
/// benchmark figure is quoted with, and what decides whether OpenBLAS must be told its core.
///
/// OpenBLAS built with DYNAMIC_ARCH picks its kernels once, when the library loads, from the CPU model. A release
/// older than the CPU (Debian 12's 0.3.21 on a 2023 Xeon) does not know the model and silently falls back to its
/// SSE3 "Prescott" kernels, a third of the speed. Only `OPENBLAS_CORETYPE`, read at load, changes that.
public struct MachineInfo: Sendable {
    /// `model name` from /proc/cpuinfo, e.g. "Intel(R) Xeon(R) Platinum 8488C".
    public var cpuModel: String
    /// CPU family and model numbers (x86), when known.
    public var family: Int?
    public var model: Int?
    /// Feature flags the kernel reports (it hides those whose register state the OS does not save).
    public var flags: Set<String>
    /// The core name OpenBLAS uses (`openblas_get_corename`), e.g. "Haswell", "SkylakeX", "Prescott".
    public var openBLASCore: String
    /// `openblas_get_config`, e.g. "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Prescott MAX_THREADS=64".
    public var openBLASConfig: String

    /// The machine this process runs on.
    public static var current: MachineInfo {
        var info = MachineInfo(cpuModel: "unknown", family: nil, model: nil, flags: [],
                               openBLASCore: String(cString: openblas_get_corename()),
                               openBLASConfig: String(cString: openblas_get_config()))
        // InputFile.read reads to the end; Foundation's readers stop after 4 KB of a /proc file.
        if let bytes = try? InputFile.read("/proc/cpuinfo") {
            info.parseCPUInfo(String(decoding: bytes, as: UTF8.self))
        }
        return info
    }

    /// Reads the first processor's block of /proc/cpuinfo.
    mutating func parseCPUInfo(_ text: String) {
        for line in text.split(separator: "\n") {
            if line.isEmpty { break }
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "model name": cpuModel = parts[1]
            case "cpu family": family = Int(parts[1])
            case "model": model = Int(parts[1])
            case "flags": flags = Set(parts[1].split(separator: " ").map(String.init))
            default: break
            }
        }
    }

    /// The vector extensions that matter for Lapse's kernels and OpenBLAS, in order of appearance.
    public var vectorExtensions: [String] {
        ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
         "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"].filter(flags.contains)
    }

    /// The OpenBLAS version from its config string, e.g. "0.3.21".
    public var openBLASVersion: String {
        openBLASConfig.split(separator: " ").dropFirst().first.map(String.init) ?? "unknown"
    }

    /// OpenBLAS's x86 cores from weakest to strongest, as `OPENBLAS_CORETYPE` names them.
    static let coreRanking = ["Katmai", "Coppermine", "Northwood", "Prescott", "Banias", "Atom", "Core2", "Penryn",
                              "Dunnington", "Nehalem", "Sandybridge", "Haswell", "Zen", "SkylakeX", "Cooperlake",
                              "SapphireRapids"]

    /// The strongest core OpenBLAS 0.3.x knows that this CPU can run, from its flags; nil off x86 or when unknown.
    public var bestOpenBLASCore: String? {
        let avx512 = ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(flags.contains)
        if avx512 && flags.contains("avx512_bf16") { return "Cooperlake" }
        if avx512 { return "SkylakeX" }
        if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
        if flags.contains("avx") { return "Sandybridge" }
        return nil
    }

    /// True when OpenBLAS runs weaker kernels than the CPU supports (it did not recognise the CPU).
    public var openBLASFellBack: Bool {
        guard let best = bestOpenBLASCore, let bestRank = Self.coreRanking.firstIndex(of: best) else { return false }
        guard let rank = Self.coreRanking.firstIndex(where: { $0.lowercased() == openBLASCore.lowercased() }) else {
            return false  // a core we don't rank (e.g. an AMD Zen variant): trust OpenBLAS
        }
        return rank < bestRank
    }

    /// The model name with family and model numbers when known: "Intel(R) Xeon(R) Processor (family 6, model 207)".
    public var cpuDescription: String {
        guard let family, let model else { return cpuModel }
        return "\(cpuModel) (family \(family), model \(model))"
    }

    /// One line for benchmark headers and logs, ending with Lapse's own kernel level (`KernelDispatch`).
    public var summary: String {
        "CPU \(cpuDescription); \(vectorExtensions.joined(separator: " ")); OpenBLAS \(openBLASVersion), \(openBLASCore) kernels; "
            + "Lapse kernels \(KernelDispatch.summary)"
    }
}
