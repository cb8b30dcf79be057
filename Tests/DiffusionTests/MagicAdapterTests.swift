import Foundation
import Testing
import LapseGraph
import LapseTensor
import LapseTestSupport
import LapseWeights
import DiffusionPlugin
import MagicTimePlugin

/// MagicTime's adapters: MagicAdapter-S's ×4 convention, MagicAdapter-T on motion modules named as in the original
/// AnimateDiff code, and the Magic text encoder, against torch / peft references (Tools/fixtures/lora.py).
@Suite struct MagicAdapterTests {
    @Test func spatialAdapterUsesMagicTimesFourfoldScale() throws {
        #expect(MagicAdapter.spatialScale == 4)
        let (unet, n) = try MagicAdapter.applySpatial(LoRAFixtures.path("lora_magic_s.ckpt"), to: try LoRAFixtures.unetValue(), strength: 1)
        #expect(n == 32)
        for name in ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                     "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.weight"] {
            let err = LoRAFixtures.relative(try unet.weights.tensor(name), try LoRAFixtures.expected("magic_s.x4." + name))
            #expect(err <= 1e-5, "\(name): relative error \(err)")
        }
        let err = normRelativeError(try LoRAFixtures.unetOutput(unet), try LoRAFixtures.expected("unet.out.magic_s_x4").scalars)
        #expect(err <= 1e-4, "UNet forward relative error \(err)")
        // Not the plain-scale result: the ×4 matters.
        #expect(normRelativeError(try LoRAFixtures.unetOutput(unet), try LoRAFixtures.expected("unet.out.base").scalars) > 1e-3)
    }

    @Test func temporalAdapterMapsOriginalMotionNames() throws {
        let base = try LoRAFixtures.unetValue(motion: true)
        let (unet, n) = try MagicAdapter.applyTemporal(LoRAFixtures.path("lora_motion_peft"), to: base, strength: 1)
        let changed = Int(try LoRAFixtures.expected("motion_peft.changed").scalars[0])
        #expect(n == changed && n == 24)
        let motion = try #require(unet.motion)
        for name in ["down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight",
                     "up_blocks.1.motion_modules.1.transformer_blocks.0.attn2.to_out.0.weight"] {
            let err = LoRAFixtures.relative(try motion.weights.tensor(name), try LoRAFixtures.expected("motion_peft." + name))
            #expect(err <= 1e-5, "\(name): relative error \(err)")
        }
        // The spatial weights are untouched, and the merged modules still build.
        #expect(try unet.weights.tensor("conv_in.weight").storage === base.weights.tensor("conv_in.weight").storage)
        #expect(try unet.motion?.weights.tensor("down_blocks.0.motion_modules.0.proj_in.weight").storage
                === base.motion?.weights.tensor("down_blocks.0.motion_modules.0.proj_in.weight").storage)
        _ = try motion.makeAdapter()
        #expect(throws: LoRAError.self) {
            try MagicAdapter.applyTemporal(LoRAFixtures.path("lora_motion_peft"), to: try LoRAFixtures.unetValue(), strength: 1)
        }
    }

    @Test func nodeAppliesAllThreeAdapters() throws {
        let tokenizer = try CLIPTokenizer(vocabularyFile: try DiffusionFixtures.clipVocabulary())
        let clip = CLIPValue(config: try LoRAFixtures.clipConfig(), weights: try LoRAFixtures.clipWeights(), tokenizer: tokenizer)
        let context = TestNodeContext(nodeType: "ApplyMagicAdapter")
        let out = try ApplyMagicAdapter().run(NodeInputs([
            "unet": .object(try LoRAFixtures.unetValue(motion: true)), "clip": .object(clip),
            "spatial": .string(LoRAFixtures.path("lora_magic_s.ckpt")),
            "temporal": .string(LoRAFixtures.path("lora_motion_peft")),
            "text_encoder": .string(LoRAFixtures.path("lora_te_peft")), "strength": .float(1),
        ]), context: context)
        let results = NodeInputs(out.values)
        let unet = try results.get("unet", .unet)
        let merged = try results.get("clip", .clip)
        #expect(normRelativeError(try LoRAFixtures.unetOutput(unet), try LoRAFixtures.expected("unet.out.magic_s_x4").scalars) <= 1e-4)
        let q = "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight"
        #expect(LoRAFixtures.relative(try #require(unet.motion).weights.tensor(q), try LoRAFixtures.expected("motion_peft." + q)) <= 1e-5)
        let cerr = normRelativeError(try LoRAFixtures.clipOutput(merged.weights), try LoRAFixtures.expected("clip.out.te_peft").scalars)
        #expect(cerr <= 1e-4, "CLIP forward relative error \(cerr)")
        #expect(context.logs.count == 3)
        // A kohya file is not MagicAdapter-S.
        #expect(throws: (any Error).self) {
            try MagicAdapter.applySpatial(LoRAFixtures.path("lora_kohya_ldm.safetensors"), to: try LoRAFixtures.unetValue(), strength: 1)
        }
    }
}
