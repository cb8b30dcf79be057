import Foundation
import APISRPlugin
import LapseTensor
import LapseWeights

/// Times APISR's GRL / DAT generators on a checkpoint:
/// `GRLBenchmark <grl|dat> <checkpoint.pth> <side> [runs] [reference.bin]`.
/// Prints the best wall time of `runs` forwards on `torch.manual_seed(0); torch.rand(1, 3, side, side)` (the same
/// input PyTorch sees) and, given PyTorch's output as raw float32, the relative error max|Δ| / max|ref|.

enum BenchmarkError: LocalizedError {
    case usage
    var errorDescription: String? { "usage: GRLBenchmark <grl|dat> <checkpoint.pth> <side> [runs] [reference.bin]" }
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
    var best = Double.infinity, bestCPU = Double.infinity
    var output = Tensor(zeros: [0])
    for _ in 0..<runs {
        // CPU time (all threads) next to wall time: on a shared, loaded machine it is the steadier number.
        let start = DispatchTime.now().uptimeNanoseconds, cpuStart = clock()
        output = try network.forward(input)
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        bestCPU = min(bestCPU, Double(clock() - cpuStart) / Double(CLOCKS_PER_SEC))
    }
    let values = output.scalars
    let mean = values.reduce(0, +) / Float(max(values.count, 1))
    var comparison = ""
    if args.count > 5 {
        let data = try Data(contentsOf: URL(fileURLWithPath: args[5]))
        var reference = [Float](repeating: 0, count: data.count / 4)
        _ = reference.withUnsafeMutableBytes { data.copyBytes(to: $0) }
        if reference.count == values.count {
            var diff: Float = 0, scale: Float = 0
            for i in 0..<values.count {
                diff = max(diff, abs(values[i] - reference[i]))
                scale = max(scale, abs(reference[i]))
            }
            comparison = String(format: ", relative error vs PyTorch %.2e", diff / max(scale, 1e-12))
        } else {
            comparison = ", reference has \(reference.count) values, output \(values.count)"
        }
    }
    print(String(format: "lapse %@ %dx%d -> %@: best of %d = %.3f s, cpu %.3f s (output mean %.5f%@)",
                 network.architecture, side, side, "\(output.shape)", runs, best, bestCPU, mean, comparison))
}

do { try run() } catch {
    FileHandle.standardError.write(Data("GRLBenchmark: \(error.localizedDescription)\n".utf8))
    exit(1)
}
