import Foundation
import LapseSupport
import LapseTensor
import LapseWeights

/// Errors of LoRA reading and merging; each names the LoRA file and the key at fault.
public enum LoRAError: Error, LocalizedError, Equatable {
    /// The file or folder could not be read, or its layout is not one of the supported LoRA formats.
    case unreadable(path: String, reason: String)
    /// A LoRA module lacks its up or down matrix, or holds a kind of adapter this reader does not merge.
    case badModule(path: String, key: String, reason: String)
    /// The adapter names a module the model does not have.
    case unknownTarget(path: String, key: String, target: String, closeMatches: [String])
    /// The low-rank matrices do not fit the weight they patch.
    case shapeMismatch(path: String, key: String, target: String, weight: [Int], up: [Int], down: [Int])
    /// A node received neither of its optional model inputs, or an adapter for a part it was not given.
    case missingInput(node: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .unreadable(let path, let reason): return "\(path): not a readable LoRA: \(reason)"
        case .badModule(let path, let key, let reason): return "\(path): LoRA module '\(key)': \(reason)"
        case .unknownTarget(let path, let key, let target, let close):
            let hint = close.isEmpty ? "" : "; closest weights: \(close.joined(separator: ", "))"
            return "\(path): LoRA key '\(key)' targets '\(target)', which the model does not have\(hint)"
        case .shapeMismatch(let path, let key, let target, let weight, let up, let down):
            return "\(path): LoRA key '\(key)' does not fit '\(target)': weight \(weight), up \(up) × down \(down)"
        case .missingInput(let node, let reason): return "\(node): \(reason)"
        }
    }
}

/// The on-disk layouts `LoRAFile.load` reads.
public enum LoRAFormat: String, Sendable, CaseIterable {
    /// Detect from the path (folder → peft) and the key names.
    case auto
    /// diffusers `LoRAAttnProcessor` state dicts (`….attn1.processor.to_q_lora.down.weight`), as MagicAdapter-S is
    /// stored, and the older `….lora_linear_layer.{up,down}.weight` text-encoder form. No alpha: scale 1.
    case diffusers
    /// kohya-ss / sd-scripts files: `lora_unet_…` / `lora_te_…` with `.lora_down.weight`, `.lora_up.weight`,
    /// `.alpha` (scale alpha / rank), diffusers- or LDM-style module names, linear and conv modules.
    case kohya
    /// peft / ms-swift adapters: `<module>.lora_A[.default].weight` + `lora_B`, scale lora_alpha / r from
    /// `adapter_config.json`.
    case peft
}

/// The part of a pipeline a LoRA module patches.
public enum LoRAComponent: String, Sendable, CaseIterable {
    /// The spatial SD UNet (diffusers `UNet2DConditionModel` names).
    case unet
    /// The CLIP text encoder (transformers names, `text_model.…`).
    case textEncoder = "text_encoder"
    /// AnimateDiff motion modules (diffusers `MotionAdapter` names).
    case motion
}

/// One low-rank update `ΔW = scale · up @ down` for one weight.
public struct LoRAPatch: Sendable {
    /// How the module is named in the file, for resolving it against a model's weights.
    public enum Target: Sendable, Equatable {
        /// A dotted module path (diffusers / transformers / original AnimateDiff / LDM), without `.weight`.
        case module(String)
        /// kohya's flattened form (dots turned into underscores, prefix `lora_unet_` / `lora_te_` removed).
        case flattened(String)
    }

    /// Which model part it patches.
    public var component: LoRAComponent
    /// The module it patches.
    public var target: Target
    /// `[out, r]` (or `[out, r, 1, 1]` for conv modules).
    public var up: Tensor
    /// `[r, in]` (or `[r, in, kh, kw]`).
    public var down: Tensor
    /// Multiplier from the file's convention (alpha / rank, or a fixed factor).
    public var scale: Float
    /// The key in the file (up matrix), for error messages.
    public var key: String

    /// Makes a patch.
    public init(component: LoRAComponent, target: Target, up: Tensor, down: Tensor, scale: Float, key: String) {
        self.component = component
        self.target = target
        self.up = up
        self.down = down
        self.scale = scale
        self.key = key
    }
}

/// A LoRA adapter read from disk: its patches for every component.
public struct LoRAFile: Sendable {
    /// The path it was read from.
    public let path: String
    /// The layout it was read as.
    public let format: LoRAFormat
    /// Every module's update.
    public var patches: [LoRAPatch]

    /// Patches of one component.
    public func patches(for component: LoRAComponent) -> [LoRAPatch] { patches.filter { $0.component == component } }

    /// Makes a file value from patches (e.g. built in memory).
    public init(path: String, format: LoRAFormat, patches: [LoRAPatch]) {
        self.path = path
        self.format = format
        self.patches = patches
    }

    /// Reads a LoRA file or peft/ms-swift adapter folder. `diffusersScale` multiplies the diffusers layout's
    /// implicit scale of 1 (MagicTime merges MagicAdapter-S with 4).
    public static func load(_ path: String, format: LoRAFormat = .auto, diffusersScale: Float = 1) throws -> LoRAFile {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw LoRAError.unreadable(path: path, reason: "no such file or folder")
        }
        if isDirectory.boolValue {
            guard format == .auto || format == .peft else {
                throw LoRAError.unreadable(path: path, reason: "a folder can only be a peft / ms-swift adapter, not format '\(format.rawValue)'")
            }
            return try PEFTAdapter.load(folder: path)
        }
        let config = PEFTAdapter.configBeside(file: path)
        let weights = try Weights.load(path)
        let resolved = format == .auto ? try detect(weights, path: path, hasConfig: config != nil) : format
        let patches: [LoRAPatch]
        switch resolved {
        case .diffusers: patches = try readDiffusers(weights, path: path, scale: diffusersScale)
        case .kohya: patches = try readKohya(weights, path: path)
        case .peft: patches = try PEFTAdapter.read(weights, path: path, config: try config.map { try PEFTAdapter.Config.read($0) })
        case .auto:
            throw LoRAError.unreadable(path: path, reason: "format detection gave no concrete format")
        }
        guard !patches.isEmpty else {
            throw LoRAError.unreadable(path: path, reason: "no \(resolved.rawValue) LoRA modules among \(weights.count) tensors (\(weights.keys.prefix(3).joined(separator: ", ")))")
        }
        return LoRAFile(path: path, format: resolved, patches: patches)
    }

    /// The format implied by the key names.
    static func detect(_ weights: Weights, path: String, hasConfig: Bool) throws -> LoRAFormat {
        let keys = weights.keys
        if keys.contains(where: { $0.hasSuffix(".lora_down.weight") || $0.hasPrefix("lora_unet_") || $0.hasPrefix("lora_te") }) {
            return .kohya
        }
        if keys.contains(where: { $0.contains("_lora.down.") || $0.contains(".lora_linear_layer.") }) { return .diffusers }
        if keys.contains(where: { $0.contains(".lora_A.") || $0.contains(".lora_B.") }) { return .peft }
        throw LoRAError.unreadable(path: path, reason: "no LoRA key layout recognised (kohya lora_down/lora_up, diffusers processor *_lora.down/up, peft lora_A/lora_B) among \(keys.prefix(3).joined(separator: ", "))")
    }

    /// Which component a dotted module name belongs to.
    static func component(ofModule name: String) -> LoRAComponent {
        if name.contains("motion_modules.") { return .motion }
        if name.hasPrefix("text_model.") || name.contains("self_attn.") || name.hasPrefix("encoder.layers.")
            || name.hasPrefix("text_encoder.") || name.hasPrefix("cond_stage_model.") { return .textEncoder }
        return .unet
    }

    // MARK: diffusers LoRAAttnProcessor

    static func readDiffusers(_ weights: Weights, path: String, scale: Float) throws -> [LoRAPatch] {
        var patches: [LoRAPatch] = []
        for key in weights.keys {
            var module: String
            let downKey: String
            if let r = key.range(of: "_lora.up.weight"), r.upperBound == key.endIndex, let p = key.range(of: ".processor.") {
                // `<attn>.processor.to_q_lora.up.weight` → `<attn>.to_q`; the output projection is `to_out.0`.
                let proj = String(key[p.upperBound..<r.lowerBound])
                module = String(key[..<p.lowerBound]) + "." + (proj == "to_out" ? "to_out.0" : proj)
                downKey = String(key[..<r.lowerBound]) + "_lora.down.weight"
            } else if key.hasSuffix(".lora_linear_layer.up.weight") {
                module = String(key.dropLast(".lora_linear_layer.up.weight".count))
                downKey = module + ".lora_linear_layer.down.weight"
            } else {
                continue
            }
            guard weights.contains(downKey) else {
                throw LoRAError.badModule(path: path, key: key, reason: "has no matching down matrix '\(downKey)'")
            }
            var component = LoRAComponent.unet
            for (prefix, part) in [("unet.", LoRAComponent.unet), ("text_encoder.", .textEncoder)] where module.hasPrefix(prefix) {
                module.removeFirst(prefix.count)
                component = part
            }
            if component == .unet { component = Self.component(ofModule: module) }
            patches.append(LoRAPatch(component: component, target: .module(module), up: try weights.tensor(key),
                                     down: try weights.tensor(downKey), scale: scale, key: key))
        }
        return patches
    }

    // MARK: kohya

    static func readKohya(_ weights: Weights, path: String) throws -> [LoRAPatch] {
        var patches: [LoRAPatch] = []
        let prefixes: [(String, LoRAComponent)] = [("lora_unet_", .unet), ("lora_te1_", .textEncoder), ("lora_te_", .textEncoder)]
        for key in weights.keys {
            let base = key.split(separator: ".", maxSplits: 1).first.map(String.init) ?? key
            if key.hasSuffix(".lora_mid.weight") || key.contains(".hada_") || key.contains(".lokr_") {
                throw LoRAError.badModule(path: path, key: key, reason: "LyCORIS (LoCon-Tucker / LoHa / LoKr) modules are not plain LoRA and cannot be merged here")
            }
            guard key.hasSuffix(".lora_up.weight") else { continue }
            guard let (prefix, component) = prefixes.first(where: { base.hasPrefix($0.0) }) else {
                if base.hasPrefix("lora_te2_") { continue }  // SDXL's second text encoder: no such model here.
                throw LoRAError.badModule(path: path, key: key, reason: "unknown kohya prefix (expected lora_unet_ or lora_te_)")
            }
            let downKey = base + ".lora_down.weight"
            guard weights.contains(downKey) else {
                throw LoRAError.badModule(path: path, key: key, reason: "has no matching down matrix '\(downKey)'")
            }
            let down = try weights.tensor(downKey), up = try weights.tensor(key)
            let rank = down.shape.first ?? 1
            var scale: Float = 1
            if weights.contains(base + ".alpha") {
                let alpha = try weights.tensor(base + ".alpha")
                guard alpha.count == 1 else {
                    throw LoRAError.badModule(path: path, key: base + ".alpha", reason: "alpha must be a scalar, got shape \(alpha.shape)")
                }
                scale = alpha.scalars[0] / Float(max(rank, 1))
            }
            patches.append(LoRAPatch(component: component, target: .flattened(String(base.dropFirst(prefix.count))),
                                     up: up, down: down, scale: scale, key: key))
        }
        return patches
    }
}

/// Merging LoRA patches into a model part's weights: `W' = W + strength · scale · up @ down`, done once at load.
///
/// The result is a copy of the base `Weights` in which only the patched entries are new in-memory tensors; every
/// other entry stays the same (lazy, memory-mapped) item, so merging never copies a whole UNet.
public enum LoRAMerge {
    /// `weight + factor · up @ down` for a linear (`[out, in]`) or conv (`[out, in, kh, kw]`) weight. Conv LoRAs
    /// (kohya LoCon) have `down` `[r, in, kh, kw]` and a 1×1 `up` `[out, r, 1, 1]`: the product is a conv weight of
    /// the down kernel's size.
    public static func merged(weight: Tensor, up: Tensor, down: Tensor, factor: Float, path: String, key: String,
                              target: String) throws -> Tensor {
        let mismatch = LoRAError.shapeMismatch(path: path, key: key, target: target, weight: weight.shape, up: up.shape, down: down.shape)
        guard weight.rank == 2 || weight.rank == 4, up.rank == 2 || up.rank == 4, down.rank == 2 || down.rank == 4 else { throw mismatch }
        let out = up.shape[0], rank = up.shape[1]
        func tail(_ t: Tensor) -> [Int] { t.rank == 2 ? [t.shape[1], 1, 1] : Array(t.shape.dropFirst()) }
        guard up.rank == 2 || (up.shape[2] == 1 && up.shape[3] == 1), down.shape[0] == rank,
              weight.shape[0] == out, tail(weight) == tail(down) else { throw mismatch }
        let k = down.count / max(rank, 1)
        var result = matmul(up.reshaped([out, rank]), down.reshaped([rank, k]))
        weight.withUnsafeBufferPointer { w in
            result.withUnsafeMutableBufferPointer { r in
                for i in 0..<r.count { r[i] = w[i] + factor * r[i] }
            }
        }
        return result.reshaped(weight.shape)
    }

    /// Merges every patch of `component` into `weights`, whose names may be in any layout the component's model
    /// accepts (diffusers or LDM single-file UNet; transformers or single-file CLIP; diffusers or original
    /// AnimateDiff motion modules). Patched entries keep the base's own names. `layersPerBlock` resolves LDM-style
    /// kohya names (`lora_unet_input_blocks_1_1_…`). Returns the merged copy and how many weights changed.
    public static func merge(_ patches: [LoRAPatch], component: LoRAComponent, into weights: Weights, strength: Float,
                             path: String, layersPerBlock: Int = 2) throws -> (weights: Weights, merged: Int) {
        let selected = patches.filter { $0.component == component }
        guard !selected.isEmpty else { return (weights, 0) }
        let resolver = TargetResolver(base: weights, component: component, layersPerBlock: layersPerBlock)
        var out = weights
        var touched: [String: Tensor] = [:]
        for patch in selected {
            let (canonical, baseKey) = try resolver.resolve(patch, path: path)
            let current = try touched[baseKey] ?? weights.tensor(baseKey)
            touched[baseKey] = try merged(weight: current, up: patch.up, down: patch.down, factor: strength * patch.scale,
                                          path: path, key: patch.key, target: canonical)
        }
        for (key, tensor) in touched { out[key] = tensor }
        return (out, touched.count)
    }
}

/// peft / ms-swift LoRA adapters: `adapter_config.json` beside `adapter_model.safetensors` or `adapter_model.bin`.
enum PEFTAdapter {
    /// The fields of `adapter_config.json` that decide the merge.
    struct Config {
        var rank: Int
        var alpha: Double
        var useRSLoRA: Bool
        var rankPattern: [String: Int]
        var alphaPattern: [String: Double]

        static func read(_ path: String) throws -> Config {
            let object: Any
            do {
                object = try JSONSerialization.jsonObject(with: InputFile.read(path))
            } catch {
                throw LoRAError.unreadable(path: path, reason: "adapter_config.json is not JSON (\(error.localizedDescription))")
            }
            guard let json = object as? [String: Any] else {
                throw LoRAError.unreadable(path: path, reason: "adapter_config.json is not a JSON object")
            }
            if let type = json["peft_type"] as? String ?? json["swift_type"] as? String, type.uppercased() != "LORA" {
                throw LoRAError.unreadable(path: path, reason: "adapter type '\(type)' is not LoRA")
            }
            if json["use_dora"] as? Bool == true {
                throw LoRAError.unreadable(path: path, reason: "DoRA adapters (use_dora) rescale weight columns and are not merged here")
            }
            guard let rank = json["r"] as? Int, rank > 0 else {
                throw LoRAError.unreadable(path: path, reason: "adapter_config.json has no positive integer 'r'")
            }
            let alpha = (json["lora_alpha"] as? NSNumber)?.doubleValue ?? Double(rank)
            return Config(rank: rank, alpha: alpha, useRSLoRA: json["use_rslora"] as? Bool ?? false,
                          rankPattern: (json["rank_pattern"] as? [String: Int]) ?? [:],
                          alphaPattern: ((json["alpha_pattern"] as? [String: NSNumber]) ?? [:]).mapValues(\.doubleValue))
        }

        /// peft's `get_pattern_key`: a pattern applies when it matches the whole module name or its dotted tail.
        static func lookup<V>(_ patterns: [String: V], _ module: String) -> V? {
            for (pattern, value) in patterns.sorted(by: { $0.key < $1.key }) {
                if module == pattern || module.hasSuffix("." + pattern) { return value }
                if let regex = try? NSRegularExpression(pattern: "^(.*\\.)?(\(pattern))$"),
                   regex.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil { return value }
            }
            return nil
        }

        /// lora_alpha / r (or / √r for rsLoRA), with the per-module overrides.
        func scale(for module: String) -> Float {
            let r = Self.lookup(rankPattern, module) ?? rank
            let a = Self.lookup(alphaPattern, module) ?? alpha
            return Float(useRSLoRA ? a / Double(r).squareRoot() : a / Double(r))
        }
    }

    /// `adapter_config.json` in the same folder as `file`, if present.
    static func configBeside(file: String) -> String? {
        let candidate = ((file as NSString).deletingLastPathComponent as NSString).appendingPathComponent("adapter_config.json")
        return FileManager.default.fileExists(atPath: candidate) ? candidate : nil
    }

    /// An adapter folder, or one holding a single adapter subfolder (ms-swift writes `<dir>/default/`).
    static func load(folder: String) throws -> LoRAFile {
        let fm = FileManager.default
        var dir = folder
        func has(_ name: String) -> Bool { fm.fileExists(atPath: (dir as NSString).appendingPathComponent(name)) }
        if !has("adapter_config.json") {
            let subfolders = ((try? fm.contentsOfDirectory(atPath: folder)) ?? []).sorted().filter {
                fm.fileExists(atPath: ((folder as NSString).appendingPathComponent($0) as NSString).appendingPathComponent("adapter_config.json"))
            }
            guard subfolders.count == 1 else {
                throw LoRAError.unreadable(path: folder, reason: subfolders.isEmpty
                    ? "folder has no adapter_config.json (peft / ms-swift adapter expected)"
                    : "folder holds several adapters (\(subfolders.joined(separator: ", "))); give one of them")
            }
            dir = (folder as NSString).appendingPathComponent(subfolders[0])
        }
        guard let model = ["adapter_model.safetensors", "adapter_model.bin"].first(where: has) else {
            throw LoRAError.unreadable(path: dir, reason: "no adapter_model.safetensors or adapter_model.bin beside adapter_config.json")
        }
        let file = (dir as NSString).appendingPathComponent(model)
        let config = try Config.read((dir as NSString).appendingPathComponent("adapter_config.json"))
        let patches = try read(try Weights.load(file), path: file, config: config)
        guard !patches.isEmpty else { throw LoRAError.unreadable(path: file, reason: "no lora_A / lora_B tensors") }
        return LoRAFile(path: file, format: .peft, patches: patches)
    }

    /// Pairs `<module>.lora_A[.<adapter>].weight` with its `lora_B`. Without a config the scale is 1 (diffusers'
    /// own peft-layout files store none).
    static func read(_ weights: Weights, path: String, config: Config?) throws -> [LoRAPatch] {
        var patches: [LoRAPatch] = []
        for key in weights.keys {
            if key.contains("lora_embedding_") || key.contains("lora_magnitude_vector") {
                throw LoRAError.badModule(path: path, key: key, reason: "embedding LoRA / DoRA tensors are not merged here")
            }
            guard let r = key.range(of: ".lora_B."), key.hasSuffix(".weight") else { continue }
            var module = String(key[..<r.lowerBound])
            let downKey = module + ".lora_A." + key[r.upperBound...]
            guard weights.contains(downKey) else {
                throw LoRAError.badModule(path: path, key: key, reason: "has no matching lora_A matrix '\(downKey)'")
            }
            for prefix in ["base_model.model.", "model."] where module.hasPrefix(prefix) { module.removeFirst(prefix.count) }
            patches.append(LoRAPatch(component: LoRAFile.component(ofModule: module), target: .module(module),
                                     up: try weights.tensor(key), down: try weights.tensor(downKey),
                                     scale: config?.scale(for: module) ?? 1, key: key))
        }
        return patches
    }
}
