import LapseGraph

/// Registers the shared diffusion node family: checkpoints, CLIP, AnimateDiff motion modules, LoRA, samplers and
/// VAEs. Model-specific families (MagicTimePlugin, later StreamingT2V) build on its public components.
public enum DiffusionPlugin: NodePlugin {
    public static let name = "DiffusionPlugin"

    public static func register(into registry: NodeRegistry) throws {
        for node in nodeTypes { try registry.register(node, source: name) }
        // What `--cache-dir` may keep of this family's results (DiffusionValues+Persistable.swift).
        registry.registerPersistable(Conditioning.self)
        registry.registerPersistable(LatentValue.self)
    }

    /// Every node type of the family; adding a node adds one line here.
    static let nodeTypes: [any Node.Type] = [
        Text.self, LoadCLIP.self, TextEncode.self,
        LoadCheckpoint.self, LoadMotionModule.self, ApplyMotionModule.self, EmptyLatentVideo.self, Sample.self,
        VAEDecode.self, VAEEncode.self,
        ApplyLoRA.self,
        LoadLatent.self, SaveLatent.self, LoadConditioning.self, PredictNoise.self,
    ]
}
