import Foundation
import DiffusionPlugin
import LapseTensor
import LapseWeights

/// Times UNet2DConditionModel forwards on the weights and config Benchmarks/diffusion/unet.sh prepares.
/// Usage: UNetBenchmark <config.json> <weights.safetensors> <latent-size> <batch> <repeats>
/// Inputs are seeded (TorchGenerator 0): sample [batch, 4, s, s], context [batch, 77, D], timestep 500.
let args = CommandLine.arguments
guard args.count == 6, let size = Int(args[3]), let batch = Int(args[4]), let repeats = Int(args[5]) else {
    FileHandle.standardError.write(Data("usage: UNetBenchmark <config.json> <weights.safetensors> <latent-size> <batch> <repeats>\n".utf8))
    exit(2)
}
do {
    let config = try UNet2DConditionConfig.decode(json: Data(contentsOf: URL(fileURLWithPath: args[1])))
    let loadStart = Date()
    let unet = try UNet2DConditionModel(config: config, weights: try Weights.load(args[2]))
    let load = Date().timeIntervalSince(loadStart)
    let generator = TorchGenerator(seed: 0)
    let sample = generator.randn([batch, config.inChannels, size, size])
    let context = generator.randn([batch, 77, config.crossAttentionDim])
    var times: [Double] = []
    var checksum: Float = 0
    for _ in 0..<repeats {
        let start = Date()
        let out = try unet(sample, timesteps: [500], context: context)
        times.append(Date().timeIntervalSince(start))
        checksum = out.scalars.reduce(0) { $0 + abs($1) } / Float(out.count)
    }
    print(String(format: "lapse: load %.2f s, forward best %.3f s, median %.3f s (%d runs), mean|eps| %.6f",
                 load, times.min()!, times.sorted()[times.count / 2], repeats, checksum))
} catch {
    FileHandle.standardError.write(Data("UNetBenchmark: \(error.localizedDescription)\n".utf8))
    exit(1)
}
