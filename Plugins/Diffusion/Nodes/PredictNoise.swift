import Foundation
import LapseGraph
import LapseTensor

/// `PredictNoise {timestep}` ← `unet`, `positive`, `latent` → `latent`.
///
/// One raw evaluation of the UNet on its port — the SD image UNet per frame, AnimateDiff's video UNet,
/// ModelScope's UNet3D or MS-Vid2Vid-XL's generator, as `Sample` / `RefineVideo` would call it — with no guidance, no scheduler input scaling and no step: the
/// output is whatever the model predicts (ε, or v for v-prediction models), `[B, out_channels, F, h, w]`. This is
/// the node-level parity tool: save the reference's UNet input and `prompt_embeds`, load them with `LoadLatent` /
/// `LoadConditioning`, and compare this node's `SaveLatent` output with the reference's `unet(...).sample`.
public struct PredictNoise: Node {
    public static let schema = NodeSchema(
        type: "PredictNoise", category: "video/diffusion/parity",
        summary: "One raw UNet evaluation (ε or v, no guidance, no scheduler) on latents at a timestep",
        inputs: [
            InputSpec("unet", .unet, doc: "UNet (image, with motion modules, ModelScope 3-D, or MS-Vid2Vid-XL from LoadVid2VidModel)"),
            InputSpec("positive", .conditioning, doc: "embeddings [1 or B, tokens, width] the UNet cross-attends to"),
            InputSpec("latent", .latent, doc: "the UNet's input [B, C, F, h, w], already scaled as the model expects"),
            InputSpec("timestep", .float, min: 0, max: 1000,
                      doc: "diffusion timestep in training steps (0…num_train_timesteps), as the reference passes it"),
        ],
        outputs: [OutputSpec("latent", .latent, doc: "the model's prediction, same layout as the input")])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let unet = try inputs.get("unet", .unet)
        let positive = try inputs.get("positive", .conditioning)
        let input = try inputs.get("latent", .latent)
        let timestep = try inputs.float("timestep")
        // The model's own training range when its folder says it, else the usual 1000 steps.
        let trained = (try? unet.schedulerConfig?.schedulerConfig(for: .ddim).numTrainTimesteps) ?? 1000
        guard timestep.isFinite, timestep >= 0, timestep <= Double(trained) else {
            throw NodeError.invalidValue(port: "timestep", reason: "\(timestep) is outside 0…\(trained), the model's training timesteps")
        }
        let shape = input.tensor.shape
        let batch = try unet.latentSize(shape).batch
        let embeddings = try Sample.batched(positive.embeddings, batch: batch, port: "positive", width: unet.config.crossAttentionDim)
        try context.checkCancellation()
        let model = try unet.makeModel()
        context.log("\(unet.kindDescription): one evaluation of \(shape) at timestep \(timestep), conditioning \(embeddings.shape)")
        let prediction = try model(input.tensor, timestep: Float(timestep), context: embeddings)
        context.progress(step: 1, total: 1, unit: "step")
        return NodeOutputs("latent", .latent, LatentValue(tensor: prediction, frameRate: input.frameRate))
    }
}
