import Foundation
import LapseTensor

/// Errors raised while turning a checkpoint into an upscale network.
public enum UpscaleModelError: LocalizedError, Sendable {
    /// No known architecture matches the tensors; `found` lists the first keys with their shapes.
    case unknownArchitecture(file: String, found: [String], known: [String])
    /// The tensors look like `architecture` but something is missing or inconsistent (raised by the networks, which
    /// don't know the file; the loader adds it with `invalidCheckpoint`).
    case malformed(architecture: String, reason: String)
    /// A checkpoint that matched an architecture but could not be built into it.
    case invalidCheckpoint(file: String, architecture: String, reason: String)
    /// `arch` named an architecture the weights don't have.
    case architectureMismatch(file: String, requested: String, detected: String?)
    /// An ncnn graph that isn't one of the layer patterns Lapse converts.
    case unsupportedNCNN(file: String, reason: String)
    /// The checkpoint holds no tensors at all.
    case empty(file: String)

    public var errorDescription: String? {
        switch self {
        case .unknownArchitecture(let file, let found, let known):
            "\(file): unrecognised upscaler weights; known architectures: \(known.joined(separator: ", ")). "
                + "Found \(found.isEmpty ? "no tensors" : found.joined(separator: ", "))"
        case .malformed(let arch, let reason):
            "\(arch) weights: \(reason)"
        case .invalidCheckpoint(let file, let arch, let reason):
            "\(file): looks like \(arch) but \(reason)"
        case .architectureMismatch(let file, let requested, let detected):
            "\(file): arch \"\(requested)\" was requested but the weights are "
                + (detected.map { "\($0)" } ?? "no known architecture")
        case .unsupportedNCNN(let file, let reason):
            "\(file): unsupported ncnn model: \(reason)"
        case .empty(let file):
            "\(file): the checkpoint holds no tensors"
        }
    }
}

/// The architectures `LoadUpscaleModel` knows, in detection order (most specific key patterns first).
public enum UpscaleArchitecture: String, CaseIterable, Sendable {
    case rrdb, grl, dat, srvgg

    /// The names accepted by `LoadUpscaleModel.arch`.
    public static var parameterValues: [String] { ["auto"] + allCases.map(\.rawValue) }

    /// Name used in messages.
    public var displayName: String {
        switch self {
        case .rrdb: "RRDB (ESRGAN/Real-ESRGAN/APISR)"
        case .grl: "GRL (APISR)"
        case .dat: "DAT (APISR)"
        case .srvgg: "SRVGGNetCompact (Real-ESRGAN animevideov3)"
        }
    }

    /// True when the key set has the architecture's signature keys (shapes are checked when building).
    public func matches(_ keys: Set<String>) -> Bool {
        switch self {
        case .rrdb: RRDBNetwork.canLoad(keys)
        case .srvgg: SRVGGNetwork.canLoad(keys)
        case .grl: TransformerArchitectures.grlCanLoad(keys)
        case .dat: TransformerArchitectures.datCanLoad(keys)
        }
    }

    /// Builds the network; throws `UpscaleModelError.malformed` when the tensors don't fit.
    public func build(_ stateDict: [String: Tensor]) throws -> any UpscaleNetwork {
        switch self {
        case .rrdb: try RRDBNetwork(stateDict: stateDict)
        case .srvgg: try SRVGGNetwork(stateDict: stateDict)
        case .grl: try TransformerArchitectures.buildGRL(stateDict)
        case .dat: try TransformerArchitectures.buildDAT(stateDict)
        }
    }
}

/// Architecture detection from the tensors alone (the way spandrel does it): key signatures pick the family, the
/// shapes give the hyper-parameters.
public enum ArchitectureDetection {
    /// The architecture whose signature the keys carry, if any.
    public static func detect(_ keys: Set<String>) -> UpscaleArchitecture? {
        UpscaleArchitecture.allCases.first { $0.matches(keys) }
    }

    /// Builds the network for a state dict. `requested` is `auto` or one of `UpscaleArchitecture`'s raw values.
    /// `file` only names the source in errors.
    public static func network(stateDict: [String: Tensor], file: String, requested: String = "auto") throws
        -> any UpscaleNetwork
    {
        guard !stateDict.isEmpty else { throw UpscaleModelError.empty(file: file) }
        let keys = Set(stateDict.keys)
        let detected = detect(keys)
        let arch: UpscaleArchitecture
        if requested == "auto" {
            guard let detected else {
                throw UpscaleModelError.unknownArchitecture(
                    file: file, found: describe(stateDict), known: UpscaleArchitecture.allCases.map(\.displayName))
            }
            arch = detected
        } else {
            guard let wanted = UpscaleArchitecture(rawValue: requested.lowercased()) else {
                throw UpscaleModelError.architectureMismatch(file: file, requested: requested, detected: detected?.rawValue)
            }
            guard wanted.matches(keys) else {
                throw UpscaleModelError.architectureMismatch(file: file, requested: requested, detected: detected?.rawValue)
            }
            arch = wanted
        }
        do {
            return try arch.build(stateDict)
        } catch let UpscaleModelError.malformed(name, reason) {
            throw UpscaleModelError.invalidCheckpoint(file: file, architecture: name, reason: reason)
        } catch let error as UpscaleModelError {
            throw error
        } catch {
            throw UpscaleModelError.invalidCheckpoint(file: file, architecture: arch.rawValue,
                                                      reason: error.localizedDescription)
        }
    }

    /// The first keys (in a natural order) with their shapes, for "unrecognised" errors.
    static func describe(_ stateDict: [String: Tensor], limit: Int = 8) -> [String] {
        let keys = stateDict.keys.sorted { $0.localizedStandardCompare($1) == .orderedAscending }
        var lines = keys.prefix(limit).map { "\($0) \(stateDict[$0]!.shape)" }
        if keys.count > limit { lines.append("… (\(keys.count) tensors)") }
        return lines
    }
}

/// One convolution's weights in PyTorch layout; applies "same" padding for odd kernels.
struct ConvLayer: Sendable {
    let weight: Tensor
    let bias: Tensor?

    var outChannels: Int { weight.shape[0] }
    var inChannels: Int { weight.shape[1] }
    var kernel: Int { weight.shape[2] }

    /// Convolution with the layer's bias and an optional fused activation.
    func callAsFunction(_ x: Tensor, activation: Activation? = nil) -> Tensor {
        conv2d(x, weight: weight, bias: bias, stride: 1, padding: kernel / 2, activation: activation)
    }
}

/// Typed access to a state dict that reports missing keys and wrong shapes as `UpscaleModelError.malformed`.
struct StateDictReader {
    let tensors: [String: Tensor]
    let architecture: String

    func has(_ key: String) -> Bool { tensors[key] != nil }

    func tensor(_ key: String, shape expected: [Int]? = nil) throws -> Tensor {
        guard let t = tensors[key] else {
            throw UpscaleModelError.malformed(architecture: architecture, reason: "missing tensor \"\(key)\"")
        }
        if let expected, t.shape != expected {
            throw UpscaleModelError.malformed(
                architecture: architecture, reason: "\"\(key)\" has shape \(t.shape), expected \(expected)")
        }
        return t
    }

    /// A square-kernel convolution `prefix.weight` / `prefix.bias`; nil dimensions are taken from the file.
    func conv(_ prefix: String, out: Int? = nil, in inChannels: Int? = nil, kernel: Int? = 3) throws -> ConvLayer {
        let w = try tensor(prefix + ".weight")
        guard w.rank == 4, w.shape[2] == w.shape[3], w.shape[2] % 2 == 1 else {
            throw UpscaleModelError.malformed(
                architecture: architecture, reason: "\"\(prefix).weight\" has shape \(w.shape), expected a square odd conv kernel")
        }
        if let out, w.shape[0] != out { throw shapeError(prefix, w.shape, "\(out) output channels") }
        if let inChannels, w.shape[1] != inChannels { throw shapeError(prefix, w.shape, "\(inChannels) input channels") }
        if let kernel, w.shape[2] != kernel { throw shapeError(prefix, w.shape, "a \(kernel)×\(kernel) kernel") }
        let b = try tensors[prefix + ".bias"].map { bias -> Tensor in
            guard bias.shape == [w.shape[0]] else { throw shapeError(prefix + ".bias", bias.shape, "[\(w.shape[0])]") }
            return bias
        }
        return ConvLayer(weight: w, bias: b)
    }

    private func shapeError(_ key: String, _ shape: [Int], _ expected: String) -> UpscaleModelError {
        .malformed(architecture: architecture, reason: "\"\(key)\" has shape \(shape), expected \(expected)")
    }

    /// Sorted distinct integers `N` of keys `prefix.N.…`.
    func indices(under prefix: String) -> [Int] {
        var found = Set<Int>()
        for key in tensors.keys where key.hasPrefix(prefix + ".") {
            let rest = key.dropFirst(prefix.count + 1)
            if let n = Int(rest.prefix { $0 != "." }) { found.insert(n) }
        }
        return found.sorted()
    }
}

/// The transformer generators (GRL, DAT) live in their own files; detection reaches them through here.
enum TransformerArchitectures {
    static func grlCanLoad(_ keys: Set<String>) -> Bool { GRLNetwork.canLoad(keys) }
    static func datCanLoad(_ keys: Set<String>) -> Bool { DATNetwork.canLoad(keys) }
    static func buildGRL(_ stateDict: [String: Tensor]) throws -> any UpscaleNetwork { try GRLNetwork(stateDict: stateDict) }
    static func buildDAT(_ stateDict: [String: Tensor]) throws -> any UpscaleNetwork { try DATNetwork(stateDict: stateDict) }
}
