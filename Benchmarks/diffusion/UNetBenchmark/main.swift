import Foundation
import DiffusionPlugin
import LapseTensor
import LapseWeights
import StreamingT2VPlugin

/// Times SD1.5 UNet forwards on the weights Benchmarks/diffusion/unet.sh and motion.sh prepare.
///
///     UNetBenchmark <config.json> <weights.safetensors> <latent-size> <batch> <repeats | serve>
///         spatial UNet2DConditionModel; seeded inputs (TorchGenerator 0): sample [batch, 4, s, s],
///         context [batch, 77, D], timestep 500. `serve`: "ready", then "time <seconds>" per "run" line on standard
///         input (Benchmarks/pairs.py, driven by Benchmarks/diffusion/unet.sh).
///     UNetBenchmark motion <unet-config.json> <unet.safetensors> <motion.safetensors> <io.safetensors | latent-size>
///                          <repeats | serve> <across|per> [torch-seconds]
///         UNetMotionModel (AnimateDiff v3 adapter) with the GroupNorm mode given; inputs (`sample` [2, 4, 16, s, s],
///         `context` [2, 77, 768]) and torch's `eps` come from the io file, or are seeded at the given latent size
///         when no reference exists (memory runs). Prints times, agreement with torch, ratio and peak RSS.
///         `serve` in place of a repeat count: prints "ready" and answers each "run" line on standard input with
///         "time <seconds>" (Benchmarks/pairs.py, driven by Benchmarks/diffusion/motion.sh).
///     UNetBenchmark unet3d <config.json> <weights.safetensors> <io.safetensors>
///         ModelScope UNet3DConditionModel, driven by Benchmarks/diffusion/unet3d.sh: prints the machine line and
///         "ready", then runs one forward (`sample`, `context`, timestep 500 from the io file) per "run" line on
///         standard input, answering "time <seconds>"; at end of input prints agreement with the io file's `eps`.
///     UNetBenchmark streamingt2v <unet-config.json> <streaming_t2v.safetensors> [pairs=3]
///         StreamingT2V's stage-2 step (`StreamingT2VDenoiser.predictNoise`: CAM + mergers + APM token mixing) vs the
///         plain UNet3DConditionModel on the same `base_model.*` weights, CFG batch 2 × 16 frames, latent 32×32,
///         timestep 500, seeded inputs (TorchGenerator 0: latents, 77 text tokens, 16 APM tokens, 8 conditioning
///         frames 256² in [-1, 1]); timed interleaved A B A B so machine load hits both alike. Driven by
///         Benchmarks/streamingt2v/stage2.sh.
///     UNetBenchmark vid2vid <generator.safetensors> <io.safetensors>
///         One StreamingT2V refiner solver evaluation: MS-Vid2Vid-XL's generator (`Vid2VidUNet`, sizes read from the
///         modelscope-named weights, head width 64) run twice, on `latents` [1, 4, F, h, w] at timestep `t` with the
///         `positive` and then the `negative` [1, 77, 1024] context (CFG as two passes, as the refiner does).
///         Driven by Benchmarks/streamingt2v/refiner_step.sh: prints the machine line and "ready", answers each
///         "run" line on standard input with "time <both> <positive> <negative>" (seconds). An untimed positive
///         pass first (the weights' first touch) is compared with the io file's `eps` (PyTorch's output).
///     UNetBenchmark machine
///         Prints the machine line (CPU, vector extensions, OpenBLAS core in use) and exits.
let args = CommandLine.arguments

/// Peak resident set size so far (Linux reports `ru_maxrss` in KiB), in GiB.
func peakRSS() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024 / 1024
}

/// Current resident set size from /proc, in GiB (peak and current differ once activations are freed).
func currentRSS() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kib = Double(line.split(separator: " ").dropFirst().first ?? "") else { return .nan }
    return kib / 1024 / 1024
}

/// Writes a line unbuffered, so progress shows in a log while a long forward runs.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("UNetBenchmark: \(message)\n".utf8))
    exit(code)
}

func runSpatial() throws {
    let serving = args.count == 6 && args[5] == "serve"
    guard args.count == 6, let size = Int(args[3]), let batch = Int(args[4]), let repeats = serving ? 0 : Int(args[5]) else {
        fail("usage: UNetBenchmark <config.json> <weights.safetensors> <latent-size> <batch> <repeats | serve>", code: 2)
    }
    let config = try UNet2DConditionConfig.decode(json: Data(contentsOf: URL(fileURLWithPath: args[1])))
    let loadStart = Date()
    let unet = try UNet2DConditionModel(config: config, weights: try Weights.load(args[2]))
    let load = Date().timeIntervalSince(loadStart)
    let generator = TorchGenerator(seed: 0)
    let sample = generator.randn([batch, config.inChannels, size, size])
    let context = generator.randn([batch, 77, config.crossAttentionDim])
    var times: [Double] = []
    var checksum: Float = 0
    if serving {
        say("lapse: \(MachineInfo.current.summary); load \(String(format: "%.2f", load)) s")
        say("ready")
        while let line = readLine() {
            guard line == "run" else { continue }
            let start = Date()
            let out = try unet(sample, timesteps: [500], context: context)
            say(String(format: "time %.4f", Date().timeIntervalSince(start)))
            checksum = out.scalars.reduce(0) { $0 + abs($1) } / Float(out.count)
        }
        say(String(format: "lapse: mean|eps| %.6f, peak RSS %.2f GiB", checksum, peakRSS()))
        return
    }
    for _ in 0..<repeats {
        let start = Date()
        let out = try unet(sample, timesteps: [500], context: context)
        times.append(Date().timeIntervalSince(start))
        checksum = out.scalars.reduce(0) { $0 + abs($1) } / Float(out.count)
    }
    print(String(format: "lapse: load %.2f s, forward best %.3f s, median %.3f s (%d runs), mean|eps| %.6f",
                 load, times.min()!, times.sorted()[times.count / 2], repeats, checksum))
}

func runMotion() throws {
    let serving = args.count > 6 && args[6] == "serve"
    guard args.count == 8 || args.count == 9, let repeats = serving ? 0 : Int(args[6]), serving || repeats >= 1,
          let normMode: MotionNormMode = ["across": .acrossFrames, "per": .perFrame][args[7]] else {
        fail("usage: UNetBenchmark motion <unet-config.json> <unet.safetensors> <motion.safetensors> <io.safetensors | latent-size> <repeats | serve> <across|per> [torch-seconds]", code: 2)
    }
    let config = try UNet2DConditionConfig.decode(json: Data(contentsOf: URL(fileURLWithPath: args[2])))
    let loadStart = Date()
    // PRECISION=auto keeps fp16 files' layer weights in 16 bits (see WeightPrecision); default fp32 as before.
    func load(_ path: String) throws -> Weights {
        var weights = try Weights.load(path)
        weights.precision = ProcessInfo.processInfo.environment["PRECISION"].flatMap(WeightPrecision.init(rawValue:)) ?? .fp32
        return weights
    }
    let unet = try UNet2DConditionModel(config: config, weights: try load(args[3]))
    let adapter = try MotionAdapter(config: .animateDiffV3, weights: try load(args[4]), normMode: normMode)
    let model = try UNetMotionModel(unet: unet, motion: adapter)
    let load = Date().timeIntervalSince(loadStart)
    let rssLoaded = currentRSS()

    let sample: Tensor, context: Tensor, reference: Tensor?
    if let size = Int(args[5]) {
        let generator = TorchGenerator(seed: 0)
        sample = generator.randn([2, config.inChannels, 16, size, size])
        context = generator.randn([2, 77, config.crossAttentionDim])
        reference = nil
    } else {
        let io = try Weights.load(args[5])
        sample = try io.tensor("sample")
        context = try io.tensor("context")
        reference = try io.tensor("eps")
    }
    say(String(format: "lapse: load %.2f s, RSS after load %.2f GiB, sample %@, norm %@",
                 load, rssLoaded, "\(sample.shape)", args[7]))

    var times: [Double] = []
    var out = sample
    if serving {
        say("lapse: \(MachineInfo.current.summary)")
        say("ready")
        while let line = readLine() {
            guard line == "run" else { continue }
            let start = Date()
            out = try model(sample, timesteps: [500, 500], context: context)
            times.append(Date().timeIntervalSince(start))
            say(String(format: "time %.4f", times.last!))
        }
        guard !times.isEmpty else { return }
    }
    for _ in 0..<repeats {
        let start = Date()
        out = try model(sample, timesteps: [500, 500], context: context)
        times.append(Date().timeIntervalSince(start))
        say(String(format: "  forward %.3f s, peak RSS so far %.2f GiB", times.last!, peakRSS()))
    }
    let meanAbs = out.scalars.reduce(0) { $0 + Double(abs($1)) } / Double(out.count)
    say(String(format: "lapse: forward best %.3f s (%d runs), mean|eps| %.6f, peak RSS %.2f GiB (after load %.2f GiB)",
                 times.min()!, repeats, meanAbs, peakRSS(), rssLoaded))
    if let reference {
        guard reference.shape == out.shape else {
            fail("torch eps \(reference.shape) vs Lapse \(out.shape) in \(args[5])", code: 1)
        }
        let a = out.scalars, b = reference.scalars
        var maxDiff: Float = 0, maxRef: Float = 0, sumDiff = 0.0, sumRef = 0.0
        for i in a.indices {
            let d = abs(a[i] - b[i])
            maxDiff = max(maxDiff, d); maxRef = max(maxRef, abs(b[i]))
            sumDiff += Double(d); sumRef += Double(abs(b[i]))
        }
        say(String(format: "agreement vs torch: max|Δ| %.3e (%.3e of max|eps|), mean|Δ|/mean|eps| %.3e",
                     maxDiff, maxDiff / maxRef, sumDiff / sumRef))
    }
    if args.count == 9, let torch = Double(args[8]) {
        say(String(format: "ratio lapse/torch (best of each): %.3f  (torch %.3f s, lapse %.3f s; target <= 1.5)",
                     times.min()! / torch, torch, times.min()!))
    }
}

/// As `lapse` does: when OpenBLAS did not recognise the CPU and fell back to generic kernels, restart once with
/// OPENBLAS_CORETYPE naming the best core the CPU supports (standard input, the driver's pipe, carries over).
func restartWithBestOpenBLASCore() -> MachineInfo {
    let machine = MachineInfo.current
    if ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil, machine.openBLASFellBack, let best = machine.bestOpenBLASCore {
        setenv("OPENBLAS_CORETYPE", best, 1)
        let argv = args.map { strdup($0) } + [nil]
        execv("/proc/self/exe", argv)
        fail("could not restart with OPENBLAS_CORETYPE=\(best)", code: 1)
    }
    return machine
}

func runUNet3D() throws {
    guard args.count == 5 else { fail("usage: UNetBenchmark unet3d <config.json> <weights.safetensors> <io.safetensors>", code: 2) }
    let machine = restartWithBestOpenBLASCore()
    say("lapse: \(machine.summary)")
    let config = try UNet3DConditionConfig.decode(json: Data(contentsOf: URL(fileURLWithPath: args[2])))
    let loadStart = Date()
    let model = try UNet3DConditionModel(config: config, weights: try Weights.load(args[3]))
    let io = try Weights.load(args[4])
    let sample = try io.tensor("sample"), context = try io.tensor("context")
    say(String(format: "lapse: load %.2f s, RSS %.2f GiB, sample %@", Date().timeIntervalSince(loadStart), currentRSS(), "\(sample.shape)"))
    say("ready")
    var out: Tensor?
    while let line = readLine() {
        guard line == "run" else { continue }
        let start = Date()
        out = try model(sample, timestep: 500, context: context)
        say(String(format: "time %.4f", Date().timeIntervalSince(start)))
    }
    if let out, io.contains("eps") {
        let a = out.scalars, b = try io.tensor("eps").scalars
        var maxDiff: Float = 0, maxRef: Float = 0
        for i in a.indices { maxDiff = max(maxDiff, abs(a[i] - b[i])); maxRef = max(maxRef, abs(b[i])) }
        say(String(format: "lapse: agreement vs torch max|Δ| %.3e (%.3e of max|eps|), peak RSS %.2f GiB", maxDiff, maxDiff / maxRef, peakRSS()))
    }
}

func runStreamingT2V() throws {
    guard args.count == 4 || args.count == 5, let pairs = Int(args.count == 5 ? args[4] : "3"), pairs >= 1 else {
        fail("usage: UNetBenchmark streamingt2v <unet-config.json> <streaming_t2v.safetensors> [pairs]", code: 2)
    }
    let machine = restartWithBestOpenBLASCore()
    say("lapse: \(machine.summary)")
    let config = try UNet3DConditionConfig.decode(json: Data(contentsOf: URL(fileURLWithPath: args[2])))
    let loadStart = Date()
    let weights = try Weights.load(args[3])
    let denoiser = try StreamingT2VDenoiser(weights: weights, config: config)
    // The plain step: the same base weights; the checkpoint's mergers and mixing tensors beside them go unread.
    let plain = try UNet3DConditionModel(config: config, weights: weights.scoped("base_model."))
    let d = config.crossAttentionDim
    let generator = TorchGenerator(seed: 0)
    let latents = generator.randn([2, config.inChannels, 16, 32, 32])
    let text = generator.randn([2, 77, d])
    let appearance = generator.randn([2, 16, d])
    let conditioningFrames = generator.rand([8, 3, 256, 256]) * 2 - 1
    say(String(format: "lapse: load %.2f s, RSS %.2f GiB, latents %@, context 77 + 16 tokens of %d, 8 conditioning frames 256²",
               Date().timeIntervalSince(loadStart), currentRSS(), "\(latents.shape)", d))
    var withCAM: [Double] = [], without: [Double] = []
    var a = latents, b = latents
    for i in 0..<pairs {
        var start = Date()
        a = try denoiser.predictNoise(latents: latents, timestep: 500, text: text, appearance: appearance,
                                      conditioningFrames: conditioningFrames)
        withCAM.append(Date().timeIntervalSince(start))
        start = Date()
        b = try plain(latents, timestep: 500, context: text)
        without.append(Date().timeIntervalSince(start))
        say(String(format: "pair %d: StreamingT2V step %.3f s, plain UNet3D step %.3f s, overhead %+.1f%% (peak RSS %.2f GiB)",
                   i + 1, withCAM[i], without[i], 100 * (withCAM[i] / without[i] - 1), peakRSS()))
    }
    let ratios = zip(withCAM, without).map { $0 / $1 }.sorted()
    let median = { (x: [Double]) in x.sorted()[x.count / 2] }
    let finite = a.scalars.allSatisfy { $0.isFinite } && b.scalars.allSatisfy { $0.isFinite }
    say(String(format: "median over %d pairs: StreamingT2V %.3f s, plain %.3f s, CAM + APM overhead %.3f s per step (%+.1f%%, median ratio %.3f); outputs %@ finite",
               pairs, median(withCAM), median(without), median(withCAM) - median(without),
               100 * (ratios[ratios.count / 2] - 1), ratios[ratios.count / 2], "\(a.shape)", finite ? "all" : "NOT all"))
}

func runVid2Vid() throws {
    guard args.count == 4 else { fail("usage: UNetBenchmark vid2vid <generator.safetensors> <io.safetensors>", code: 2) }
    let machine = restartWithBestOpenBLASCore()
    say("lapse: \(machine.summary)")
    let loadStart = Date()
    let model = try Vid2VidUNet(weights: try Weights.load(args[2]))
    let io = try Weights.load(args[3])
    let latents = try io.tensor("latents"), positive = try io.tensor("positive"), negative = try io.tensor("negative")
    let t = try io.tensor("t").scalars[0]
    say(String(format: "lapse: load %.2f s, RSS %.2f GiB, latents %@, timestep %.0f", Date().timeIntervalSince(loadStart),
               currentRSS(), "\(latents.shape)", t))
    // One untimed positive pass, as PyTorch gets: the first touch of the mapped weights, and the output to compare.
    let warmStart = Date()
    let out = try model(latents, timestep: t, context: positive)
    say(String(format: "lapse: warm-up pass %.1f s", Date().timeIntervalSince(warmStart)))
    if io.contains("eps") {
        let a = out.scalars, b = try io.tensor("eps").scalars
        var maxDiff: Float = 0, maxRef: Float = 0
        for i in a.indices { maxDiff = max(maxDiff, abs(a[i] - b[i])); maxRef = max(maxRef, abs(b[i])) }
        say(String(format: "lapse: agreement vs torch (positive pass) max|Δ| %.3e (%.3e of max|out|)", maxDiff, maxDiff / maxRef))
    }
    say("ready")
    while let line = readLine() {
        guard line == "run" else { continue }
        let start = Date()
        _ = try model(latents, timestep: t, context: positive)
        let middle = Date()
        _ = try model(latents, timestep: t, context: negative)
        let end = Date()
        say(String(format: "time %.4f %.4f %.4f", end.timeIntervalSince(start), middle.timeIntervalSince(start), end.timeIntervalSince(middle)))
    }
    say(String(format: "lapse: peak RSS %.2f GiB", peakRSS()))
}

do {
    if args.count > 1, args[1] == "machine" {
        say("lapse: \(restartWithBestOpenBLASCore().summary)")
    } else if args.count > 1, args[1] == "vid2vid" {
        try runVid2Vid()
    } else if args.count > 1, args[1] == "streamingt2v" {
        try runStreamingT2V()
    } else if args.count > 1, args[1] == "motion" {
        try runMotion()
    } else if args.count > 1, args[1] == "unet3d" {
        try runUNet3D()
    } else {
        try runSpatial()
    }
} catch {
    fail(error.localizedDescription, code: 1)
}
