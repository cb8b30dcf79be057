import Foundation
import LapseTensor

/// One super-resolution architecture `LoadUpscaleModel` can load: its name (a value of the node's `arch` parameter),
/// how it is shown to users, the key signature that detects it and the loader that builds it from a state dict.
///
/// Architectures are found through `UpscaleArchitecture.registry`, keyed by name (as mlx-swift-examples' model type
/// registry maps a `model_type` to its loader), so a new architecture is one entry there and nothing else changes.
public struct UpscaleArchitecture: Sendable, Hashable, CustomStringConvertible {
    /// The name used by `arch` and in errors (`rrdb`, `grl`, …).
    public let name: String
    /// The name shown in "known architectures" lists.
    public let displayName: String
    private let detects: @Sendable (Set<String>) -> Bool
    private let loads: @Sendable ([String: Tensor]) throws -> any UpscaleNetwork

    /// An architecture with a lower-case `name`, a key-signature predicate (shapes are checked when loading) and a
    /// loader that throws `UpscaleModelError.malformed` (or its own typed error) when the tensors don't fit.
    public init(name: String, displayName: String, detects: @escaping @Sendable (Set<String>) -> Bool,
                loads: @escaping @Sendable ([String: Tensor]) throws -> any UpscaleNetwork) {
        self.name = name
        self.displayName = displayName
        self.detects = detects
        self.loads = loads
    }

    /// True when the key set has the architecture's signature keys.
    public func matches(_ keys: Set<String>) -> Bool { detects(keys) }

    /// Builds the network from an unwrapped state dict.
    public func build(_ stateDict: [String: Tensor]) throws -> any UpscaleNetwork { try loads(stateDict) }

    public var description: String { name }

    public static func == (a: UpscaleArchitecture, b: UpscaleArchitecture) -> Bool { a.name == b.name }
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }
}

extension UpscaleArchitecture {
    /// ESRGAN's RRDBNet in its three key layouts (Real-ESRGAN/APISR, old ESRGAN, BSRGAN).
    public static let rrdb = UpscaleArchitecture(name: "rrdb", displayName: "RRDB (ESRGAN/Real-ESRGAN/APISR)",
                                                 detects: RRDBNetwork.canLoad) { try RRDBNetwork(stateDict: $0) }
    /// APISR's GRL generator.
    public static let grl = UpscaleArchitecture(name: "grl", displayName: "GRL (APISR)",
                                                detects: GRLNetwork.canLoad) { try GRLNetwork(stateDict: $0) }
    /// APISR's DAT generator.
    public static let dat = UpscaleArchitecture(name: "dat", displayName: "DAT (APISR)",
                                                detects: DATNetwork.canLoad) { try DATNetwork(stateDict: $0) }
    /// Real-ESRGAN's SRVGGNetCompact.
    public static let srvgg = UpscaleArchitecture(name: "srvgg", displayName: "SRVGGNetCompact (Real-ESRGAN animevideov3)",
                                                  detects: SRVGGNetwork.canLoad) { try SRVGGNetwork(stateDict: $0) }

    /// Every architecture `LoadUpscaleModel` knows, in detection order (most specific key patterns first). A new
    /// architecture is registered by adding it here.
    public static let registry: [UpscaleArchitecture] = [.rrdb, .grl, .dat, .srvgg]

    /// The registered architecture called `name` (any case).
    public static func named(_ name: String) -> UpscaleArchitecture? {
        let key = name.lowercased()
        return registry.first { $0.name == key }
    }

    /// The names accepted by `LoadUpscaleModel.arch`.
    public static var parameterValues: [String] { ["auto"] + registry.map(\.name) }
}

/// Architecture detection from the tensors alone (the way spandrel does it): key signatures pick the family from
/// `UpscaleArchitecture.registry`, the shapes give the hyper-parameters.
public enum ArchitectureDetection {
    /// The first registered architecture whose signature the keys carry, if any.
    public static func detect(_ keys: Set<String>) -> UpscaleArchitecture? {
        UpscaleArchitecture.registry.first { $0.matches(keys) }
    }

    /// Builds the network for a state dict. `requested` is `auto` or a registered architecture's name.
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
                    file: file, found: describe(stateDict), known: UpscaleArchitecture.registry.map(\.displayName))
            }
            arch = detected
        } else {
            guard let wanted = UpscaleArchitecture.named(requested), wanted.matches(keys) else {
                throw UpscaleModelError.architectureMismatch(file: file, requested: requested, detected: detected?.name)
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
            throw UpscaleModelError.invalidCheckpoint(file: file, architecture: arch.name,
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
