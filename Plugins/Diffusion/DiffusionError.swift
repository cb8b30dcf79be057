import Foundation
import LapseNN
import LapseSupport
import LapseWeights

/// Errors of the diffusion components (tokenizer, text encoder, schedulers), each naming what is wrong.
public enum DiffusionError: Error, LocalizedError, Equatable {
    /// A file could not be read or decoded.
    case fileUnreadable(path: String, reason: String)
    /// The BPE vocabulary file has an unexpected layout.
    case badVocabulary(path: String, reason: String)
    /// A configuration value is out of range or unknown.
    case badConfig(component: String, field: String, reason: String)
    /// A weight the model needs is absent; `closeMatches` lists the most similar keys present.
    case missingWeight(component: String, key: String, closeMatches: [String])
    /// A weight is present with the wrong shape.
    case weightShape(component: String, key: String, expected: [Int], actual: [Int])
    /// An input does not fit the model (wrong rank, too long, token id out of range).
    case badInput(component: String, reason: String)
    /// A scheduler was stepped past its last timestep or before `setTimesteps`.
    case schedulerState(scheduler: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .fileUnreadable(let path, let reason): return "\(path): cannot read (\(reason))"
        case .badVocabulary(let path, let reason): return "\(path): not a CLIP BPE vocabulary: \(reason)"
        case .badConfig(let component, let field, let reason): return "\(component): config '\(field)': \(reason)"
        case .missingWeight(let component, let key, let close):
            let hint = close.isEmpty ? "" : "; closest present: \(close.joined(separator: ", "))"
            return "\(component): missing weight '\(key)'\(hint)"
        case .weightShape(let component, let key, let expected, let actual):
            return "\(component): weight '\(key)' has shape \(actual), expected \(expected)"
        case .badInput(let component, let reason): return "\(component): \(reason)"
        case .schedulerState(let scheduler, let reason): return "\(scheduler) scheduler: \(reason)"
        }
    }

    /// The `limit` keys of `candidates` most similar to `key` (edit distance on the dotted path), for error hints.
    public static func closeMatches(to key: String, in candidates: some Sequence<String>, limit: Int = 3) -> [String] {
        let target = Array(key.utf8)
        let scored = candidates.map { ($0, LapseSupport.editDistance(target, Array($0.utf8))) }
        return scored.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }.prefix(limit).map(\.0)
    }
}

/// The diffusion family's wording of weight-reading failures: `DiffusionError.missingWeight` with the nearest keys
/// present, and `DiffusionError.weightShape`, both naming the component and where its weights came from.
public struct DiffusionWeightWording: WeightErrorWording {
    /// E.g. `UNet2DConditionModel (unet.safetensors)`.
    public let component: String

    public init(component: String) { self.component = component }

    public func missing(_ name: String, in weights: Weights) -> any Error {
        DiffusionError.missingWeight(component: component, key: name,
                                     closeMatches: DiffusionError.closeMatches(to: name, in: weights.keys))
    }

    public func wrongShape(_ name: String, expected: [Int], actual: [Int]) -> any Error {
        DiffusionError.weightShape(component: component, key: name, expected: expected, actual: actual)
    }
}

extension WeightReader {
    /// A reader over one component's weights whose failures are `DiffusionError`s naming `component` and the
    /// weights' origin (`"UNet2DConditionModel (unet.safetensors)"`).
    public init(_ weights: Weights, component: String) {
        self.init(weights, wording: DiffusionWeightWording(component: "\(component) (\(weights.origin))"))
    }
}
