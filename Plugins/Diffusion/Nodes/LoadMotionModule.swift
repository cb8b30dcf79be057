import Foundation
import LapseGraph
import LapseTensor
import LapseWeights

extension MotionAdapterConfig {
    /// `base` with what diffusers-named motion `weights` reveal: block widths (`proj_in`), modules per down block
    /// and the mid-block module. Heads and GroupNorm groups cannot be read from shapes and stay `base`'s.
    public static func inferred(from weights: Weights, base: MotionAdapterConfig = .animateDiffV3) -> MotionAdapterConfig {
        var c = base
        var widths: [Int] = []
        while let s = weights.shape(of: "down_blocks.\(widths.count).motion_modules.0.proj_in.weight"), s.count == 2 { widths.append(s[0]) }
        guard !widths.isEmpty else { return c }
        var layers = 0
        while weights.contains("down_blocks.0.motion_modules.\(layers).proj_in.weight") { layers += 1 }
        c.blockOutChannels = widths
        c.motionLayersPerBlock = layers
        c.useMotionMidBlock = weights.contains("mid_block.motion_modules.0.proj_in.weight")
        return c
    }
}

/// `LoadMotionModule {path, config, precision}` → `motion`.
public struct LoadMotionModule: Node {
    public static let schema = NodeSchema(
        type: "LoadMotionModule", category: "loaders",
        summary: "Loads AnimateDiff motion modules (v3_sd15_mm.ckpt, merged .safetensors, or a diffusers MotionAdapter file)",
        inputs: [
            InputSpec("path", .string, doc: "motion module file, original AnimateDiff or diffusers names"),
            InputSpec("config", .string, default: .string(""),
                      doc: "optional diffusers MotionAdapter config.json for what shapes cannot tell (heads, norm groups); empty: AnimateDiff v3"),
            WeightPrecision.input,
        ],
        outputs: [OutputSpec("motion", .motion, doc: "motion-module weights (diffusers names)")],
        inputFileParams: ["path"])

    public init() {}

    public func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        let path = try inputs.string("path")
        let configPath = try inputs.string("config")
        var base = MotionAdapterConfig.animateDiffV3
        if !configPath.isEmpty {
            do { base = try MotionAdapterConfig.decode(json: InputFile.read(configPath)) } catch {
                throw DiffusionNodeError.badConfigFile(path: configPath, reason: "not a MotionAdapter config (\(error))")
            }
        }
        let all = try Weights.load(path, precision: try WeightPrecision.param(inputs))
        let weights = MotionAdapter.diffusersWeights(from: all)
        guard !weights.isEmpty else {
            let sample = all.keys.prefix(3).joined(separator: ", ")
            throw DiffusionNodeError.missingComponent(path: path, component: "motion-module",
                                                      hint: "no tensor name contains \"motion_modules.\"; the file starts with \(sample)")
        }
        var config = MotionAdapterConfig.inferred(from: weights, base: base)
        if let length = MotionAdapter.positionTableLength(in: all) { config.motionMaxSeqLength = length }
        // Build once so a damaged or foreign file fails here, naming the missing tensor, not in the sampler.
        _ = try MotionAdapter(config: config, weights: weights)
        context.log("\((path as NSString).lastPathComponent): motion modules for blocks \(config.blockOutChannels) × "
                    + "\(config.motionLayersPerBlock)\(config.useMotionMidBlock ? " + mid" : ""), \(config.motionMaxSeqLength) frame positions")
        return NodeOutputs("motion", .motion, MotionWeights(config: config, weights: weights))
    }
}
