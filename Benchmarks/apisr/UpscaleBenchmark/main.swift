import Dispatch
import Foundation
import APISRPlugin
import LapseTensor

/// Times Lapse's convolutional upscalers for Benchmarks/apisr/bench.sh.
///
///   UpscaleBenchmark time <checkpoint> <side> [runs]           best forward time on a seeded [1, 3, side, side]
///   UpscaleBenchmark memory <checkpoint> <width> <height> <mb>  one tiled upscale (tile 0), peak RSS
///   UpscaleBenchmark serve <checkpoint> <side>                  for Benchmarks/pairs.py: prints the machine and
///       "ready", then one forward on the seeded input per "run" line on standard input, answering "time <seconds>"
enum BenchmarkError: LocalizedError {
    case usage
    var errorDescription: String? {
        "usage: UpscaleBenchmark time <checkpoint> <side> [runs] | memory <checkpoint> <width> <height> <max_memory_mb> | serve <checkpoint> <side>"
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
func peakRSSMiB() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return .nan }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? .nan
        return kb / 1024
    }
    return .nan
}

/// Writes a line unbuffered: the driver reads it through a pipe while this process waits for its next command.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

func seconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

func run() throws {
    let args = CommandLine.arguments
    guard args.count >= 4 else { throw BenchmarkError.usage }
    let model = try UpscaleModelLoader.load(path: args[2])
    let network = model.network
    switch args[1] {
    case "time":
        guard let side = Int(args[3]) else { throw BenchmarkError.usage }
        let runs = args.count > 4 ? Int(args[4]) ?? 3 : 3
        let input = TorchGenerator(seed: 0).rand([1, 3, side, side])
        var best = Double.infinity
        for _ in 0..<runs {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try network.forward(input)
            best = min(best, seconds(since: start))
        }
        print(String(format: "lapse %@ x%d %dx%d: best of %d = %.3f s", network.architecture, network.scale, side, side,
                     runs, best))
    case "serve":
        guard let side = Int(args[3]) else { throw BenchmarkError.usage }
        let input = TorchGenerator(seed: 0).rand([1, 3, side, side])
        say("lapse: \(MachineInfo.current.summary); \(network.architecture) x\(network.scale) on \(side)x\(side)")
        _ = try network.forward(input)  // warm-up, as the reference gets one
        say("ready")
        while let line = readLine() {
            guard line == "run" else { continue }
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try network.forward(input)
            say(String(format: "time %.4f", seconds(since: start)))
        }
        say(String(format: "lapse: peak RSS %.0f MiB", peakRSSMiB()))
    case "memory":
        guard args.count >= 6, let width = Int(args[3]), let height = Int(args[4]), let mb = Int(args[5]) else {
            throw BenchmarkError.usage
        }
        let image = TorchGenerator(seed: 1).rand([1, 3, height, width])
        let upscaler = TiledUpscaler(network: network, tile: 0, overlap: 16, maxMemoryMB: mb)
        let core = try upscaler.coreSize(width: width, height: height)
        var tiles = 0
        let start = DispatchTime.now().uptimeNanoseconds
        let out = try upscaler.upscale(image, progress: { _, total in tiles = total })
        let machine = MachineInfo.current
        print("cpu: \(machine.cpuModel), OpenBLAS core: \(machine.openBLASCore)")
        print(String(format: "lapse %@ x%d %dx%d -> %dx%d, tile 0 / max_memory_mb %d: core %d px, %d tiles, %.1f s, peak RSS %.0f MiB",
                     network.architecture, network.scale, width, height, out.shape[3], out.shape[2], mb, core, tiles,
                     seconds(since: start), peakRSSMiB()))
    default:
        throw BenchmarkError.usage
    }
}

do { try run() } catch {
    FileHandle.standardError.write(Data("UpscaleBenchmark: \(error.localizedDescription)\n".utf8))
    exit(1)
}
