import Foundation

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

/// Why a GRL or DAT state dict could not be turned into a network.
public enum TransformerUpscalerError: LocalizedError, Sendable, Equatable {
    /// A key the architecture needs is absent.
    case missingKey(architecture: String, key: String)
    /// A tensor exists but its shape does not fit the inferred hyper-parameters.
    case badShape(architecture: String, key: String, expected: [Int], actual: [Int])
    /// The state dict is a variant of the architecture this port does not implement.
    case unsupported(architecture: String, detail: String)
    /// `forward` was given something other than `[1, 3, H, W]`.
    case badInput(architecture: String, shape: [Int])

    /// A sentence naming the architecture and the key, shape or input at fault.
    public var errorDescription: String? {
        switch self {
        case let .missingKey(arch, key):
            return "\(arch) state dict: missing key '\(key)'"
        case let .badShape(arch, key, expected, actual):
            return "\(arch) state dict: '\(key)' has shape \(actual), expected \(expected)"
        case let .unsupported(arch, detail):
            return "\(arch) state dict: unsupported variant (\(detail))"
        case let .badInput(arch, shape):
            return "\(arch) forward: expected an input of shape [1, 3, H, W], got \(shape)"
        }
    }
}
