import Foundation
import Testing
import LapseTensor
import LapseWeights
import DiffusionPlugin

/// The LoRA fixtures of Tools/fixtures/lora.py over the tiny UNet / motion adapter (unet_vae manifest) and tiny CLIP.
enum LoRAFixtures {
    static func path(_ name: String) -> String { DiffusionFixtures.url(name).path }

    /// A tensor of lora_expected.safetensors (merged weights and forward outputs from diffusers / peft).
    static func expected(_ name: String) throws -> Tensor {
        try CheckpointFile.open(path("lora_expected.safetensors")).tensor(name)
    }

    static func unetValue(layout: UNetVAEFixtures.Layout = .diffusers, motion: Bool = false) throws -> UNetValue {
        let s = try UNetVAEFixtures.section("unet", layout: layout)
        var value = UNetValue(config: try UNet2DConditionConfig.decode(json: s.config), weights: s.weights)
        if motion {
            let m = try UNetVAEFixtures.section("motion", layout: .diffusers)
            value.motion = MotionWeights(config: try MotionAdapterConfig.decode(json: m.config), weights: m.weights)
        }
        return value
    }

    /// The tiny UNet's output on the fixture's sample / timestep 321 / context.
    static func unetOutput(_ value: UNetValue) throws -> [Float] {
        let unet = try UNet2DConditionModel(config: value.config, weights: value.weights)
        return try unet(expected("unet.sample"), timesteps: [321], context: expected("unet.context")).scalars
    }

    static func clipConfig() throws -> CLIPTextConfig {
        let io = try #require(try DiffusionFixtures.json("clip_tiny_io.json") as? [String: Any])
        return try CLIPTextConfig.decode(json: JSONSerialization.data(withJSONObject: try #require(io["config"])))
    }

    static func clipWeights() throws -> Weights { try Weights.load(path("clip_tiny.safetensors")) }

    static func clipOutput(_ weights: Weights) throws -> [Float] {
        let io = try #require(try DiffusionFixtures.json("clip_tiny_io.json") as? [String: Any])
        return try CLIPTextModel(config: clipConfig(), weights: weights)(try #require(io["input_ids"] as? [[Int]])).scalars
    }

    /// Norm-relative error of two tensors (max |a − b| / max |b|).
    static func relative(_ a: Tensor, _ b: Tensor) -> Float { normRelativeError(a.scalars, b.scalars) }
}
