import DiffusionPlugin
import Foundation
import LapseGraph
import LapseWeights

/// `ApplyMagicAdapter {spatial, temporal, text_encoder, strength}` ← `unet`, `clip` → `unet`, `clip`: MagicTime's
/// three adapters merged as MagicTime merges them. See `MagicAdapter`.
public struct ApplyMagicAdapter: Node {
    public static let schema = NodeSchema(
        type: "ApplyMagicAdapter", category: "loaders",
        summary: "Merges MagicTime's MagicAdapter-S (×4 convention), MagicAdapter-T and Magic text-encoder LoRA",
        inputs: [
            InputSpec("unet", .unet, doc: "SD1.5 UNet (after DreamBooth) with the AnimateDiff motion modules attached"),
            InputSpec("clip", .clip, doc: "CLIP text encoder"),
            InputSpec("spatial", .string, default: .string(""),
                      doc: "magic_adapter_s.ckpt (diffusers LoRAAttnProcessor layout); empty skips it"),
            InputSpec("temporal", .string, default: .string(""),
                      doc: "magic_adapter_t folder (ms-swift / peft adapter over the motion modules); empty skips it"),
            InputSpec("text_encoder", .string, default: .string(""),
                      doc: "magic_text_encoder folder (ms-swift / peft adapter over CLIP self-attention); empty skips it"),
            InputSpec("strength", .float, default: .float(1), min: -10, max: 10,
                      doc: "multiplies all three adapters' updates (1 is MagicTime)"),
        ],
        outputs: [
            OutputSpec("unet", .unet, doc: "UNet with MagicAdapter-S and -T merged"),
            OutputSpec("clip", .clip, doc: "CLIP with the Magic text-encoder LoRA merged"),
        ],
        inputFileParams: ["spatial", "temporal", "text_encoder"])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        var unet = try inputs.get("unet", .unet)
        var clip = try inputs.get("clip", .clip)
        let strength = Float(try inputs.float("strength"))
        let spatial = try inputs.string("spatial"), temporal = try inputs.string("temporal")
        let text = try inputs.string("text_encoder")
        if spatial.isEmpty, temporal.isEmpty, text.isEmpty { context.log("no adapter paths given: models pass through unchanged") }
        if !spatial.isEmpty {
            let n: Int
            (unet, n) = try MagicAdapter.applySpatial(spatial, to: unet, strength: strength)
            context.log("MagicAdapter-S: \(n) spatial attention weights merged (×4 MagicTime scaling)")
        }
        if !temporal.isEmpty {
            let n: Int
            (unet, n) = try MagicAdapter.applyTemporal(temporal, to: unet, strength: strength)
            context.log("MagicAdapter-T: \(n) motion-module weights merged")
        }
        if !text.isEmpty {
            let n: Int
            (clip, n) = try MagicAdapter.applyTextEncoder(text, to: clip, strength: strength)
            context.log("Magic text encoder: \(n) CLIP self-attention weights merged")
        }
        var outputs = NodeOutputs()
        outputs.set("unet", .unet, unet)
        outputs.set("clip", .clip, clip)
        return outputs
    }
}
