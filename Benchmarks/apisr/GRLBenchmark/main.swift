import Foundation
import APISRPlugin
import LapseTensor
import LapseWeights

/// Times APISR's GRL / DAT generators on a checkpoint:
/// `GRLBenchmark <grl|dat> <checkpoint.pth> <side> [runs] [reference.bin]`.
/// Prints the best wall time of `runs` forwards on `torch.manual_seed(0); torch.rand(1, 3, side, side)` (the same
/// input PyTorch sees) and, given PyTorch's output as raw float32, the relative error max|Δ| / max|ref|.
/// `GRLBenchmark serve <grl|dat> <checkpoint.pth> <side> [reference.bin]`, for Benchmarks/pairs.py: prints "ready"
/// after a warm-up forward, answers each "run" line on standard input with "time <seconds>", and at the end of input
/// prints the relative error against the reference.

enum BenchmarkError: LocalizedError {
    case usage
    var errorDescription: String? {
        "usage: GRLBenchmark <grl|dat> <checkpoint.pth> <side> [runs] [reference.bin] | serve <grl|dat> <checkpoint.pth> <side> [reference.bin]"
    }
}

/// Writes a line unbuffered: the driver reads it through a pipe while this process waits for its next command.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

func run() throws {
    var args = CommandLine.arguments
    let serving = args.count > 1 && args[1] == "serve"
    if serving { args.remove(at: 1) }
    guard args.count >= 4, let side = Int(args[3]) else { throw BenchmarkError.usage }
    // Serving, the optional fourth argument is the reference (no run count: the driver decides how many).
    if serving, args.count > 4 { args.insert("1", at: 4) }
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
    var output = Tensor(zeros: [0])
    if serving {
        say("lapse: \(MachineInfo.current.summary); \(network.architecture) on \(side)x\(side)")
        output = try network.forward(input)  // warm-up, as the reference gets one
        say("ready")
        while let line = readLine() {
            guard line == "run" else { continue }
            let start = DispatchTime.now().uptimeNanoseconds
            output = try network.forward(input)
            say(String(format: "time %.4f", Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
        }
    }
    var best = Double.infinity, bestCPU = Double.infinity
    for _ in 0..<(serving ? 0 : runs) {
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
    if serving {
        say(String(format: "lapse %@ %dx%d -> %@: output mean %.5f%@", network.architecture, side, side,
                   "\(output.shape)", mean, comparison))
    } else {
        print(String(format: "lapse %@ %dx%d -> %@: best of %d = %.3f s, cpu %.3f s (output mean %.5f%@)",
                     network.architecture, side, side, "\(output.shape)", runs, best, bestCPU, mean, comparison))
    }
}

do { try run() } catch {
    FileHandle.standardError.write(Data("GRLBenchmark: \(error.localizedDescription)\n".utf8))
    exit(1)
}
