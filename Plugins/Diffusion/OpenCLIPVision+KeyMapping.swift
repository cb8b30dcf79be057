import Foundation
import LapseWeights

extension OpenCLIPVisionModel {
    /// The tower's tensors under open_clip's state-dict names (`visual.conv1.weight`, …, `visual.proj`).
    ///
    /// With `prefix` (e.g. `image_encoder.model.visual.`, ending in `visual.` or not) the names under it are taken.
    /// Without, the prefix is found: the one name ending in `visual.class_embedding` locates it (a whole open_clip
    /// CLIP state dict, StreamingT2V's `image_encoder.model.visual.…`), and a bare `VisionTransformer` state dict
    /// (`class_embedding`, `conv1.weight`, … at the top) gets `visual.` added. Renaming keeps entries lazy.
    public static func visualWeights(from weights: Weights, prefix: String? = nil) throws -> Weights {
        let component = "OpenCLIPVisionModel (\(weights.origin))"
        var visual: String
        if let prefix {
            visual = prefix.isEmpty || prefix.hasSuffix(".") ? prefix : prefix + "."
        } else {
            let roots = weights.keys.filter { $0 == "visual.class_embedding" || $0.hasSuffix(".visual.class_embedding") }
                .map { String($0.dropLast("class_embedding".count)) }
            if roots.count > 1 {
                throw DiffusionError.badInput(component: component,
                                              reason: "holds \(roots.count) OpenCLIP vision towers (under \(roots.joined(separator: ", "))): "
                                                  + "name the one to load with its prefix")
            }
            if let root = roots.first {
                visual = root
            } else if weights.contains("class_embedding") && weights.contains("conv1.weight") {
                visual = ""
            } else {
                throw DiffusionError.missingWeight(component: component, key: "visual.class_embedding",
                                                   closeMatches: DiffusionError.closeMatches(to: "visual.class_embedding",
                                                                                             in: weights.keys))
            }
        }
        var scoped = visual.isEmpty ? weights : weights.scoped(visual)
        if !visual.isEmpty && visual != "visual." { scoped.origin = "\(weights.origin) [under \(visual)]" }
        return scoped.renamed([.prefix("", "visual.")])
    }

    /// Every tensor name the tower reads, with its shape.
    public static func expectedShapes(_ config: OpenCLIPVisionConfig) -> [String: [Int]] {
        let d = config.width, f = config.mlpWidth, p = config.patchSize
        var shapes: [String: [Int]] = [
            "visual.conv1.weight": [d, 3, p, p],
            "visual.class_embedding": [d],
            "visual.positional_embedding": [config.grid * config.grid + 1, d],
            "visual.ln_pre.weight": [d], "visual.ln_pre.bias": [d],
            "visual.ln_post.weight": [d], "visual.ln_post.bias": [d],
            "visual.proj": [d, config.embedDim],
        ]
        for i in 0..<config.layers {
            let b = "visual.transformer.resblocks.\(i)."
            shapes.merge(CLIPEncoderLayer.openCLIPBlockShapes(prefix: b, width: d, mlp: f)) { _, block in block }
        }
        return shapes
    }

    /// Compares what the weights tell (width and patch size from `conv1`, the grid from `positional_embedding`,
    /// the embedding width from `proj`, the MLP width from block 0, the block count) with `config`, so a config
    /// that does not belong to the checkpoint is named field by field rather than as a shape error.
    static func checkSizes(_ config: OpenCLIPVisionConfig, against weights: Weights) throws {
        let component = "OpenCLIPVisionModel (\(weights.origin))"
        func mismatch(_ field: String, _ value: any CustomStringConvertible, _ evidence: String) -> DiffusionError {
            .badConfig(component: component, field: field,
                       reason: "\(value) does not match the weights (\(evidence)): use the config of this checkpoint")
        }
        func shape(_ name: String) throws -> [Int] {
            guard let s = weights.shape(of: name) else {
                throw DiffusionError.missingWeight(component: component, key: name,
                                                   closeMatches: DiffusionError.closeMatches(to: name, in: weights.keys))
            }
            return s
        }
        let conv = try shape("visual.conv1.weight")
        guard conv.count == 4, conv[1] == 3, conv[2] == conv[3] else {
            throw DiffusionError.weightShape(component: component, key: "visual.conv1.weight",
                                             expected: [config.width, 3, config.patchSize, config.patchSize], actual: conv)
        }
        if conv[0] != config.width { throw mismatch("vision_cfg.width", config.width, "visual.conv1.weight is \(conv)") }
        if conv[2] != config.patchSize {
            throw mismatch("vision_cfg.patch_size", config.patchSize, "visual.conv1.weight is \(conv)")
        }
        let positions = try shape("visual.positional_embedding")
        if positions.count == 2, positions[0] != config.grid * config.grid + 1 {
            let tokens = positions[0] - 1, side = Int(Double(max(tokens, 0)).squareRoot().rounded())
            let implied = side * side == tokens ? "a \(side)×\(side) grid, image_size \(side * config.patchSize)" : "\(tokens) patches"
            throw mismatch("vision_cfg.image_size", config.imageSize,
                           "visual.positional_embedding is \(positions): \(implied)")
        }
        let proj = try shape("visual.proj")
        if proj.count == 2, proj[1] != config.embedDim { throw mismatch("embed_dim", config.embedDim, "visual.proj is \(proj)") }
        let blockPrefix = "visual.transformer.resblocks."
        let indices = Set(weights.keys.compactMap { key -> Int? in
            guard key.hasPrefix(blockPrefix) else { return nil }
            return Int(key.dropFirst(blockPrefix.count).prefix { $0 != "." })
        })
        if let deepest = indices.max(), deepest + 1 != config.layers {
            throw mismatch("vision_cfg.layers", config.layers, "blocks 0…\(deepest) are present")
        }
        if let fc = weights.shape(of: blockPrefix + "0.mlp.c_fc.weight"), fc.count == 2, fc[0] != config.mlpWidth {
            throw mismatch("vision_cfg.mlp_ratio", "\(config.mlpRatio) (MLP width \(config.mlpWidth))",
                           "\(blockPrefix)0.mlp.c_fc.weight is \(fc)")
        }
    }
}
