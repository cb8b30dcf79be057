import Foundation
import APISRPlugin
import LapseTensor
import LapseWeights

/// Times APISR's GRL / DAT generators on a checkpoint: `GRLBenchmark <grl|dat> <checkpoint.pth> <side> [runs]`.
/// Prints the best wall time of `runs` forwards on a seeded `[1, 3, side, side]` input (after one warm-up when runs > 1).

enum BenchmarkError: LocalizedError {
    case usage
    var errorDescription: String? { "usage: GRLBenchmark <grl|dat> <checkpoint.pth> <side> [runs]" }
}

func run() throws {
    let args = CommandLine.arguments
    guard args.count >= 4, let side = Int(args[3]) else { throw BenchmarkError.usage }
    let runs = args.count > 4 ? Int(args[4]) ?? 3 : 3
    let weights = try Weights.load(args[2])
    var dict: [String: Tensor] = [:]
    for key in weights.keys { dict[key] = try weights.tensor(key) }
    let network: any UpscaleNetwork
    switch args[1].lowercased() {
    case "grl": network = try GRLNetwork(stateDict: dict)
    case "dat": network = try DATNetwork(stateDict: dict)
    default: throw BenchmarkError.usage
    }
    let input = TorchGenerator(seed: 0).rand([1, 3, side, side])
    var best = Double.infinity
    var output = Tensor(zeros: [0])
    for _ in 0..<runs {
        let start = DispatchTime.now().uptimeNanoseconds
        output = try network.forward(input)
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
    let values = output.scalars
    let mean = values.reduce(0, +) / Float(max(values.count, 1))
    print(String(format: "lapse %@ %dx%d -> %@: best of %d = %.3f s (output mean %.5f)",
                 network.architecture, side, side, "\(output.shape)", runs, best, mean))
}

do { try run() } catch {
    FileHandle.standardError.write(Data("GRLBenchmark: \(error.localizedDescription)\n".utf8))
    exit(1)
}
