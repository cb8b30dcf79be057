import Foundation
import Testing
import LapseGraph
import LapseTensor
import LapseTestSupport
import LapseWeights
import DiffusionPlugin

/// LoRA reading and merging against diffusers / peft / torch references (Tools/fixtures/lora.py).
@Suite struct LoRATests {
    @Test func diffusersProcessorLayoutMergesWithScaleOne() throws {
        let lora = try LoRAFile.load(LoRAFixtures.path("lora_magic_s.ckpt"))
        #expect(lora.format == .diffusers)
        #expect(lora.patches.count == 32 && lora.patches.allSatisfy { $0.component == .unet && $0.scale == 1 })
        let base = try LoRAFixtures.unetValue()
        let name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
        let (full, n) = try LoRAMerge.merge(lora.patches, component: .unet, into: base.weights, strength: 1, path: lora.path)
        #expect(n == 32)
        let err = LoRAFixtures.relative(try full.tensor(name), try LoRAFixtures.expected("magic_s.x1." + name))
        #expect(err <= 1e-5, "merged weight relative error \(err)")
        // Strength scales the update: diffusers' forward of W + 0.5 · up @ down.
        var half = base
        (half.weights, _) = try LoRAMerge.merge(lora.patches, component: .unet, into: base.weights, strength: 0.5, path: lora.path)
        let out = try LoRAFixtures.unetOutput(half)
        let ferr = normRelativeError(out, try LoRAFixtures.expected("unet.out.magic_s_x1_strength0.5").scalars)
        #expect(ferr <= 1e-4, "UNet forward relative error \(ferr)")
    }

    /// kohya LDM-style names (`lora_unet_input_blocks_1_1_…`), with 3×3 / 1×1 conv LoRAs and a module without alpha,
    /// merged into both diffusers- and LDM-named UNet weights; `lora_te_` modules into CLIP.
    @Test(arguments: [UNetVAEFixtures.Layout.diffusers, .singleFile])
    func kohyaLDMNamesMatchReference(layout: UNetVAEFixtures.Layout) throws {
        let lora = try LoRAFile.load(LoRAFixtures.path("lora_kohya_ldm.safetensors"))
        #expect(lora.format == .kohya)
        #expect(lora.patches(for: .unet).count == 9 && lora.patches(for: .textEncoder).count == 2)
        var unet = try LoRAFixtures.unetValue(layout: layout)
        let n: Int
        (unet.weights, n) = try LoRAMerge.merge(lora.patches, component: .unet, into: unet.weights, strength: 1, path: lora.path,
                                                layersPerBlock: unet.config.layersPerBlock)
        #expect(n == 9)
        let canonical = UNet2DConditionModel.diffusersWeights(from: unet.weights, config: unet.config)
        for name in ["down_blocks.0.resnets.0.conv1.weight", "down_blocks.0.attentions.0.proj_in.weight",
                     "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight"] {
            let err = LoRAFixtures.relative(try canonical.tensor(name), try LoRAFixtures.expected("kohya." + name))
            #expect(err <= 1e-5, "\(layout) \(name): relative error \(err)")
        }
        let ferr = normRelativeError(try LoRAFixtures.unetOutput(unet), try LoRAFixtures.expected("unet.out.kohya").scalars)
        #expect(ferr <= 1e-4, "\(layout) UNet forward relative error \(ferr)")

        let (clip, m) = try LoRAMerge.merge(lora.patches, component: .textEncoder, into: try LoRAFixtures.clipWeights(),
                                            strength: 1, path: lora.path)
        #expect(m == 2)
        let fc1 = "text_model.encoder.layers.1.mlp.fc1.weight"
        #expect(LoRAFixtures.relative(try clip.tensor(fc1), try LoRAFixtures.expected("kohya." + fc1)) <= 1e-5)
        let cerr = normRelativeError(try LoRAFixtures.clipOutput(clip), try LoRAFixtures.expected("clip.out.kohya").scalars)
        #expect(cerr <= 1e-4, "CLIP forward relative error \(cerr)")
    }

    @Test func kohyaDiffusersNamesMatchReference() throws {
        let lora = try LoRAFile.load(LoRAFixtures.path("lora_kohya_diffusers.safetensors"), format: .kohya)
        var unet = try LoRAFixtures.unetValue()
        (unet.weights, _) = try LoRAMerge.merge(lora.patches, component: .unet, into: unet.weights, strength: 1, path: lora.path)
        let ferr = normRelativeError(try LoRAFixtures.unetOutput(unet), try LoRAFixtures.expected("unet.out.kohya").scalars)
        #expect(ferr <= 1e-4, "UNet forward relative error \(ferr)")
    }

    /// An ms-swift adapter folder (`default/adapter_config.json` + pickled `adapter_model.bin`, `.lora_A.default.`
    /// keys) against peft's merge_and_unload on transformers' CLIP.
    @Test func peftFolderMatchesMergeAndUnload() throws {
        let lora = try LoRAFile.load(LoRAFixtures.path("lora_te_peft"))
        #expect(lora.format == .peft)
        #expect(lora.patches.count == 8 && lora.patches.allSatisfy { $0.component == .textEncoder && $0.scale == 0.25 })
        let (merged, n) = try LoRAMerge.merge(lora.patches, component: .textEncoder, into: try LoRAFixtures.clipWeights(),
                                              strength: 1, path: lora.path)
        #expect(n == 8)
        for name in ["text_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.encoder.layers.1.self_attn.out_proj.weight"] {
            let err = LoRAFixtures.relative(try merged.tensor(name), try LoRAFixtures.expected("te_peft." + name))
            #expect(err <= 1e-5, "\(name): relative error \(err)")
        }
        let err = normRelativeError(try LoRAFixtures.clipOutput(merged), try LoRAFixtures.expected("clip.out.te_peft").scalars)
        #expect(err <= 1e-4, "CLIP forward relative error \(err)")
        // The same file given directly (config found beside it), and the flattened transformers-5 base names.
        let direct = try LoRAFile.load(LoRAFixtures.path("lora_te_peft/default/adapter_model.bin"))
        #expect(direct.format == .peft && direct.patches.allSatisfy { $0.scale == 0.25 })
        let flat = try LoRAFixtures.clipWeights().renamed([.prefix("text_model.", "")])
        let (flatMerged, _) = try LoRAMerge.merge(direct.patches, component: .textEncoder, into: flat, strength: 1, path: direct.path)
        let q = "encoder.layers.0.self_attn.q_proj.weight"
        #expect(LoRAFixtures.relative(try flatMerged.tensor(q), try LoRAFixtures.expected("te_peft.text_model." + q)) <= 1e-5)
    }

    @Test func mergedCopySharesUntouchedTensors() throws {
        let base = try LoRAFixtures.clipWeights()
        let lora = try LoRAFile.load(LoRAFixtures.path("lora_te_peft"))
        let (merged, _) = try LoRAMerge.merge(lora.patches, component: .textEncoder, into: base, strength: 1, path: lora.path)
        #expect(merged.keys == base.keys)
        let untouched = "text_model.encoder.layers.0.mlp.fc1.weight", touched = "text_model.encoder.layers.0.self_attn.q_proj.weight"
        // Lazy entries are zero-copy views of the mapped file: the same entry reads the same address.
        func address(_ w: Weights, _ name: String) throws -> UnsafePointer<Float>? { try w.tensor(name).withUnsafeBufferPointer { $0.baseAddress } }
        #expect(try address(merged, untouched) == address(base, untouched))
        #expect(try address(merged, touched) != address(base, touched))
        // The base is unchanged.
        #expect(try base.tensor(touched).scalars == Weights.load(LoRAFixtures.path("clip_tiny.safetensors")).tensor(touched).scalars)
    }

    @Test func shapesThatDoNotFitNameKeyAndShapes() throws {
        let base = try LoRAFixtures.clipWeights()
        let bad = LoRAPatch(component: .textEncoder, target: .module("text_model.encoder.layers.0.self_attn.q_proj"),
                            up: Tensor(zeros: [32, 4]), down: Tensor(zeros: [4, 48]), scale: 1, key: "q_proj.lora_B.weight")
        #expect {
            try LoRAMerge.merge([bad], component: .textEncoder, into: base, strength: 1, path: "bad.safetensors")
        } throws: { error in
            let text = (error as? LocalizedError)?.errorDescription ?? ""
            return text.contains("q_proj.lora_B.weight") && text.contains("[32, 32]") && text.contains("[32, 4]")
                && text.contains("[4, 48]") && text.contains("bad.safetensors")
        }
        let missing = LoRAPatch(component: .textEncoder, target: .module("text_model.encoder.layers.7.self_attn.q_proj"),
                                up: Tensor(zeros: [32, 4]), down: Tensor(zeros: [4, 32]), scale: 1, key: "layers.7.lora_B")
        #expect {
            try LoRAMerge.merge([missing], component: .textEncoder, into: base, strength: 1, path: "bad.safetensors")
        } throws: { error in
            guard case LoRAError.unknownTarget(_, let key, let target, let close)? = error as? LoRAError else { return false }
            return key == "layers.7.lora_B" && target == "text_model.encoder.layers.7.self_attn.q_proj.weight" && !close.isEmpty
        }
        #expect(throws: LoRAError.self) { try LoRAFile.load(LoRAFixtures.path("clip_tiny.safetensors")) }
        #expect(throws: LoRAError.self) { try LoRAFile.load(LoRAFixtures.path("no_such_lora.safetensors")) }
    }

    @Test func applyLoRANodeNeedsAnInputAndLeavesTheUnlinkedOutputEmpty() throws {
        let context = TestNodeContext(nodeType: "ApplyLoRA")
        let params: [String: Value] = ["path": .string(LoRAFixtures.path("lora_kohya_ldm.safetensors")),
                                       "strength": .float(1), "format": .string("auto")]
        #expect(throws: LoRAError.self) { try ApplyLoRA().run(NodeInputs(params), context: context) }
        var inputs = params
        inputs["unet"] = .object(try LoRAFixtures.unetValue())
        let out = try ApplyLoRA().run(NodeInputs(inputs), context: context)
        let unet = try NodeInputs(out.values).get("unet", .unet)
        let ferr = normRelativeError(try LoRAFixtures.unetOutput(unet), try LoRAFixtures.expected("unet.out.kohya").scalars)
        #expect(ferr <= 1e-4)
        #expect(out.values["clip"] == nil)
        #expect(out.emptyReasons["clip"]?.contains("link a CLIP text encoder to its clip input") == true)
        #expect(context.logs.contains { $0.contains("2 text_encoder module(s) skipped") })
        // Motion-module modules with no motion modules attached are an error, not silently dropped.
        inputs["path"] = .string(LoRAFixtures.path("lora_motion_peft"))
        #expect(throws: LoRAError.self) { try ApplyLoRA().run(NodeInputs(inputs), context: context) }
    }
}
