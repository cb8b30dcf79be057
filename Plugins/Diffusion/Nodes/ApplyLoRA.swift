import Foundation
import LapseGraph
import LapseWeights

/// `ApplyLoRA {path, strength, format}` ← `unet`?, `clip`? → `unet`, `clip`: copies of the models with a LoRA
/// merged into their weights.
///
/// Reads diffusers LoRAAttnProcessor files (scale 1), kohya / LDM LoRA files (alpha / rank) and peft / ms-swift
/// adapter folders (lora_alpha / r). UNet modules go into the spatial UNet, motion-module modules into the attached
/// motion modules, text-encoder modules into CLIP. At least one input must be linked; the output of an unlinked
/// input is left empty (a node reading it fails, saying to link the input). Modules for a part that is not linked
/// are skipped (logged).
public struct ApplyLoRA: Node {
    public static let schema = NodeSchema(
        type: "ApplyLoRA", category: "loaders",
        summary: "Merges a LoRA (diffusers, kohya/LDM, peft/ms-swift) into a UNet and/or CLIP text encoder",
        inputs: [
            InputSpec("unet", .unet, optional: true, doc: "UNet (with or without motion modules) to patch"),
            InputSpec("clip", .clip, optional: true, doc: "CLIP text encoder to patch"),
            InputSpec("path", .string, doc: "LoRA .safetensors/.ckpt/.bin, or a peft / ms-swift adapter folder"),
            InputSpec("strength", .float, default: .float(1), min: -10, max: 10,
                      doc: "multiplies every update: W + strength · scale · up @ down"),
            InputSpec("format", .string, default: .string("auto"), allowed: LoRAFormat.allCases.map(\.rawValue),
                      doc: "file layout; auto detects it from the key names (a folder is peft)"),
        ],
        outputs: [
            OutputSpec("unet", .unet, optional: true, doc: "merged UNet; empty when no unet was linked"),
            OutputSpec("clip", .clip, optional: true, doc: "merged CLIP; empty when no clip was linked"),
        ],
        inputFileParams: ["path"])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        guard inputs.has("unet") || inputs.has("clip") else {
            throw LoRAError.missingInput(node: "ApplyLoRA", reason: "link a unet, a clip, or both: there is nothing to merge the LoRA into")
        }
        let path = try inputs.string("path")
        let strength = Float(try inputs.float("strength"))
        guard let format = LoRAFormat(rawValue: try inputs.string("format")) else {
            throw NodeError.invalidValue(port: "format", reason: "expected one of \(LoRAFormat.allCases.map(\.rawValue))")
        }
        let lora = try LoRAFile.load(path, format: format)
        let name = (path as NSString).lastPathComponent
        var outputs = NodeOutputs()
        var applied = 0
        if inputs.has("unet") {
            var unet = try inputs.get("unet", .unet)
            let (merged, n) = try LoRAMerge.apply(lora, to: unet, strength: strength)
            unet = merged
            applied += n
            outputs.set("unet", .unet, unet)
        } else {
            outputs.leaveEmpty("unet", reason: "ApplyLoRA had no unet linked, so it merged nothing into one; link a UNet to its unet input")
        }
        if inputs.has("clip") {
            var clip = try inputs.get("clip", .clip)
            let (weights, n) = try LoRAMerge.merge(lora.patches, component: .textEncoder, into: clip.weights,
                                                   strength: strength, path: lora.path)
            clip.weights = weights
            applied += n
            outputs.set("clip", .clip, clip)
        } else {
            outputs.leaveEmpty("clip", reason: "ApplyLoRA had no clip linked, so it merged nothing into one; link a CLIP text encoder to its clip input")
        }
        for component in LoRAComponent.allCases {
            let count = lora.patches(for: component).count
            let linked = component == .textEncoder ? inputs.has("clip") : inputs.has("unet")
            if count > 0, !linked { context.log("\(name): \(count) \(component.rawValue) module(s) skipped (no input linked)") }
        }
        context.log("\(name): \(lora.format.rawValue) LoRA, \(lora.patches.count) module(s), \(applied) weight(s) merged at strength \(strength)")
        return outputs
    }
}

extension LoRAMerge {
    /// Merges a LoRA's UNet modules into the spatial weights and its motion-module modules into the attached
    /// motion modules (an error if the file has some and none are attached).
    public static func apply(_ lora: LoRAFile, to unet: UNetValue, strength: Float) throws -> (UNetValue, Int) {
        // SD LoRA formats name the 2-D UNet's modules (LDM/kohya numbering, 2-D block layout); merging them into a
        // ModelScope 3-D UNet would silently hit the wrong layers.
        if unet.unet3D != nil || unet.vid2vid != nil {
            throw LoRAError.missingInput(node: lora.path, reason: "LoRAs for \(unet.kindDescription) are not supported: "
                                         + "the LoRA formats read here target Stable Diffusion's 2-D UNet; link only `clip`, or use an SD checkpoint")
        }
        var out = unet
        let (spatial, n) = try merge(lora.patches, component: .unet, into: unet.weights, strength: strength,
                                     path: lora.path, layersPerBlock: unet.config.layersPerBlock)
        out.weights = spatial
        var total = n
        let motionPatches = lora.patches(for: .motion)
        if !motionPatches.isEmpty {
            guard var motion = unet.motion else {
                throw LoRAError.missingInput(node: lora.path, reason: "\(motionPatches.count) module(s) target motion modules (e.g. '\(motionPatches[0].key)'), but the UNet has none attached: apply the motion module first")
            }
            let (weights, m) = try merge(motionPatches, component: .motion, into: motion.weights, strength: strength, path: lora.path)
            motion.weights = weights
            out.motion = motion
            total += m
        }
        return (out, total)
    }
}
