import DiffusionPlugin
import Foundation
import LapseWeights

/// MagicTime's adapters, merged into the base weights once at load exactly as MagicTime's loader does:
/// - **MagicAdapter-S** (`magic_adapter_s.ckpt`): diffusers LoRAAttnProcessor modules on `to_q/to_k/to_v/to_out.0`
///   of every spatial `attn1`/`attn2`. MagicTime merges each as `W += alpha · (2·up) @ (2·down)` with alpha 1.0,
///   i.e. an effective scale of 4 — reproduced here (`spatialScale`).
/// - **MagicAdapter-T** (`magic_adapter_t/`): an ms-swift / peft LoRA on the motion modules under their original
///   AnimateDiff names; scale lora_alpha / r, mapped onto the diffusers motion names.
/// - **Magic text encoder** (`magic_text_encoder/`): an ms-swift / peft LoRA on CLIP's `self_attn.{q,k,v,out}_proj`,
///   scale lora_alpha / r (1/32 in the published adapter).
public enum MagicAdapter {
    /// MagicTime's factor on MagicAdapter-S: alpha 1.0 times the ×2 it applies to both `up` and `down`.
    public static let spatialScale: Float = 4

    /// Merges MagicAdapter-S into the spatial UNet; every module must be a spatial-attention one.
    public static func applySpatial(_ path: String, to unet: UNetValue, strength: Float) throws -> (UNetValue, Int) {
        let lora = try LoRAFile.load(path, format: .diffusers, diffusersScale: spatialScale)
        if let stray = lora.patches.first(where: { $0.component != .unet }) {
            throw LoRAError.badModule(path: lora.path, key: stray.key, reason: "MagicAdapter-S should only patch spatial attention, this targets the \(stray.component.rawValue)")
        }
        var out = unet
        let n: Int
        (out.weights, n) = try LoRAMerge.merge(lora.patches, component: .unet, into: unet.weights, strength: strength,
                                               path: lora.path, layersPerBlock: unet.config.layersPerBlock)
        return (out, n)
    }

    /// Merges MagicAdapter-T into the UNet's motion modules, which must be attached.
    public static func applyTemporal(_ path: String, to unet: UNetValue, strength: Float) throws -> (UNetValue, Int) {
        let lora = try LoRAFile.load(path, format: .peft)
        if let stray = lora.patches.first(where: { $0.component != .motion }) {
            throw LoRAError.badModule(path: lora.path, key: stray.key, reason: "MagicAdapter-T should only patch motion modules, this targets the \(stray.component.rawValue)")
        }
        guard var motion = unet.motion else {
            throw LoRAError.missingInput(node: "ApplyMagicAdapter", reason: "temporal adapter \(path) needs motion modules on the UNet: link it after ApplyMotionModule")
        }
        var out = unet
        let n: Int
        (motion.weights, n) = try LoRAMerge.merge(lora.patches, component: .motion, into: motion.weights,
                                                  strength: strength, path: lora.path)
        out.motion = motion
        return (out, n)
    }

    /// Merges the Magic text-encoder LoRA into CLIP.
    public static func applyTextEncoder(_ path: String, to clip: CLIPValue, strength: Float) throws -> (CLIPValue, Int) {
        let lora = try LoRAFile.load(path, format: .peft)
        if let stray = lora.patches.first(where: { $0.component != .textEncoder }) {
            throw LoRAError.badModule(path: lora.path, key: stray.key, reason: "the Magic text encoder should only patch CLIP, this targets the \(stray.component.rawValue)")
        }
        var out = clip
        let n: Int
        (out.weights, n) = try LoRAMerge.merge(lora.patches, component: .textEncoder, into: clip.weights,
                                               strength: strength, path: lora.path)
        return (out, n)
    }
}
