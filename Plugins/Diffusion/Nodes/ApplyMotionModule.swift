import LapseGraph

/// `ApplyMotionModule` ← `unet`, `motion` → `unet`.
public struct ApplyMotionModule: Node {
    public static let schema = NodeSchema(
        type: "ApplyMotionModule", category: "video/diffusion",
        summary: "Inflates an image UNet to video with AnimateDiff motion modules (per-frame spatial layers, temporal transformers)",
        inputs: [
            InputSpec("unet", .unet, doc: "SD1.x UNet from LoadCheckpoint"),
            InputSpec("motion", .motion, doc: "motion modules from LoadMotionModule"),
        ],
        outputs: [OutputSpec("unet", .unet, doc: "the video UNet")])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        var unet = try inputs.get("unet", .unet)
        let motion = try inputs.get("motion", .motion)
        try Self.checkCompatible(unet: unet, motion: motion)
        if unet.motion != nil { context.log("replacing the motion modules already applied to this UNet") }
        unet.motion = motion
        return NodeOutputs("unet", .unet, unet)
    }

    /// Motion modules are trained for one base: their widths and count per block must be the UNet's.
    static func checkCompatible(unet: UNetValue, motion: MotionWeights) throws {
        if unet.unet3D != nil || unet.vid2vid != nil {
            throw DiffusionNodeError.motionMismatch(reason: "the \(unet.kindDescription) has its own temporal layers; "
                + "AnimateDiff motion modules attach only to Stable Diffusion 1.x UNets")
        }
        let u = unet.config, m = motion.config
        guard u.blockOutChannels == m.blockOutChannels else {
            throw DiffusionNodeError.motionMismatch(reason: "the UNet's blocks are \(u.blockOutChannels) channels wide, the motion modules' "
                + "\(m.blockOutChannels) (an SD1.5 motion module needs an SD1.x base, [320, 640, 1280, 1280])")
        }
        guard u.layersPerBlock == m.motionLayersPerBlock else {
            throw DiffusionNodeError.motionMismatch(reason: "the UNet has \(u.layersPerBlock) layers per block, the motion modules \(m.motionLayersPerBlock)")
        }
        if m.useMotionMidBlock, u.midBlockType == nil {
            throw DiffusionNodeError.motionMismatch(reason: "the motion modules have a mid-block module but the UNet has no mid block")
        }
    }
}
