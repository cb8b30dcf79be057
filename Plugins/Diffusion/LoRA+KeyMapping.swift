import Foundation
import LapseTensor
import LapseWeights

/// Maps LoRA module names onto the names a model part's weights actually use.
///
/// The base names are canonicalised with the model's own key-mapping code (run on a probe collection whose
/// tensors hold each key's index, so the mapping is reused exactly rather than re-implemented), then indexed both
/// dotted and flattened (kohya's underscores).
struct TargetResolver {
    let component: LoRAComponent
    let layersPerBlock: Int
    /// Canonical weight name → name in the base collection.
    var baseName: [String: String] = [:]
    /// Flattened canonical module name (no `.weight`) → canonical weight name.
    var flattened: [String: String] = [:]

    init(base: Weights, component: LoRAComponent, layersPerBlock: Int) {
        self.component = component
        self.layersPerBlock = layersPerBlock
        var probe = Weights(origin: base.origin)
        for (index, key) in base.keys.enumerated() { probe[key] = Tensor(shape: [1], data: [Float(index)]) }
        let mapped: Weights
        switch component {
        case .unet:
            var config = UNet2DConditionConfig.sd15
            config.layersPerBlock = layersPerBlock
            mapped = UNet2DConditionModel.diffusersWeights(from: probe, config: config)
        case .textEncoder: mapped = CLIPTextModel.transformersWeights(from: probe)
        case .motion: mapped = MotionAdapter.diffusersWeights(from: probe)
        }
        for key in mapped.keys {
            guard let index = mapped[key]?.scalars.first else { continue }
            baseName[key] = base.keys[Int(index)]
            if key.hasSuffix(".weight") { flattened[Self.flatten(String(key.dropLast(7)))] = key }
        }
    }

    static func flatten(_ name: String) -> String { name.replacingOccurrences(of: ".", with: "_") }

    /// The canonical name of a LoRA module's weight, from whatever layout the file uses.
    func canonical(_ target: LoRAPatch.Target) -> String? {
        switch target {
        case .module(let module):
            var name = module
            switch component {
            case .unet:
                for prefix in ["unet.", "base_model.model."] where name.hasPrefix(prefix) { name.removeFirst(prefix.count) }
                if name.hasPrefix(UNet2DConditionModel.singleFilePrefix) {
                    name.removeFirst(UNet2DConditionModel.singleFilePrefix.count)
                    return UNet2DConditionModel.diffusersName(ldm: name + ".weight", layersPerBlock: layersPerBlock)
                }
                return name + ".weight"
            case .textEncoder:
                for prefix in ["text_encoder.", "base_model.model."] + CLIPTextModel.singleFilePrefixes where name.hasPrefix(prefix) {
                    name.removeFirst(prefix.count)
                }
                return (name.hasPrefix("text_model.") ? name : "text_model." + name) + ".weight"
            case .motion:
                for prefix in ["unet.", "base_model.model."] where name.hasPrefix(prefix) { name.removeFirst(prefix.count) }
                return MotionAdapter.diffusersWeights(from: Weights([name + ".weight": Tensor(zeros: [1])])).keys.first
            }
        case .flattened(let flat):
            if let name = flattened[flat] { return name }
            if component == .textEncoder, let name = flattened["text_model_" + flat] { return name }
            if component == .unet, let ldm = Self.ldmDotted(flat),
               let name = UNet2DConditionModel.diffusersName(ldm: ldm + ".weight", layersPerBlock: layersPerBlock) {
                // Transformer internals keep kohya's underscores as one opaque component: flatten and look up.
                return flattened[Self.flatten(String(name.dropLast(7)))] ?? name
            }
            return nil
        }
    }

    /// `input_blocks_1_1_transformer_blocks_0_attn1_to_q` → `input_blocks.1.1.transformer_blocks_0_attn1_to_q`
    /// (block indices and resnet layer names dotted, transformer internals left flattened), or nil when the name
    /// is not LDM-style.
    static func ldmDotted(_ flat: String) -> String? {
        var parts = flat.split(separator: "_").map(String.init)
        func take(_ words: [String], indices: Int) -> String? {
            guard parts.count >= words.count + indices, Array(parts.prefix(words.count)) == words else { return nil }
            let numbers = parts[words.count..<(words.count + indices)]
            guard numbers.allSatisfy({ Int($0) != nil }) else { return nil }
            parts.removeFirst(words.count + indices)
            return ([words.joined(separator: "_")] + numbers).joined(separator: ".")
        }
        guard let head = take(["input", "blocks"], indices: 2) ?? take(["output", "blocks"], indices: 2)
            ?? take(["middle", "block"], indices: 1) ?? take(["time", "embed"], indices: 1) ?? take(["out"], indices: 1) else { return nil }
        if parts.isEmpty { return head }
        let rest = parts.joined(separator: "_")
        for layer in ["in_layers", "emb_layers", "out_layers"] where rest.hasPrefix(layer + "_") {
            return head + "." + layer + "." + rest.dropFirst(layer.count + 1)
        }
        return head + "." + rest
    }

    /// The patch's canonical weight name and the base's key for it.
    func resolve(_ patch: LoRAPatch, path: String) throws -> (canonical: String, base: String) {
        let shown: String
        switch patch.target {
        case .module(let m): shown = m
        case .flattened(let f): shown = f
        }
        guard let canonical = canonical(patch.target), let base = baseName[canonical] else {
            let guess = canonical(patch.target) ?? shown
            throw LoRAError.unknownTarget(path: path, key: patch.key, target: guess,
                                          closeMatches: DiffusionError.closeMatches(to: guess, in: baseName.keys))
        }
        return (canonical, base)
    }
}
