// swift-tools-version: 6.0
import Foundation
import PackageDescription

/// Lapse: generative-video and upscaling pipelines declared as JSON node graphs, run on the CPU.
///
/// Layers: `Sources/` is the core (graph runtime, tensor engine, weight formats, media I/O, CLI) and knows no
/// model; each node family under `Plugins/` registers its nodes through the same public API an external plugin uses.
// Release builds of the numeric modules: -Ounchecked, whole-module optimisation, and no -target-cpu. The hot loops
// are in CLapseKernels, compiled for the generic, AVX2+FMA and AVX-512 levels and picked at load time (KernelDispatch),
// so one binary runs at full speed on any x86-64 CPU.
let optimized: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]
/// Parsers of untrusted files keep Swift's bounds and overflow checks (-O, not -Ounchecked), with the same
/// whole-module optimisation: measured on 200 MB files, that loads as fast as the unchecked build.
let checked: [SwiftSetting] = [.unsafeFlags(["-wmo"], .when(configuration: .release))]

let package = Package(
    name: "Lapse",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lapse", targets: ["lapse"]),
        .library(name: "LapseGraph", targets: ["LapseGraph"]),
        // What an external plugin package links (Examples/SharpenPlugin, docs/writing-nodes.md). Dynamic so that the
        // plugin leaves these modules' symbols undefined; loaded into `lapse`, they bind to the copy the executable
        // exports (LapseGraph's --export-dynamic), so both sides share one set of types.
        .library(name: "LapsePluginAPI", type: .dynamic, targets: ["LapseGraph", "LapseTensor", "LapseSupport"]),
        // Test helpers for a plugin's own tests (TestNodeContext, synthetic frames, seeded weights).
        .library(name: "LapseTestSupport", targets: ["LapseTestSupport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `lapse serve` (Sources/LapseServer) only; HummingbirdTesting is not used (it would add BoringSSL to the build).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        // WebSocket events (`GET /jobs/{id}/events`); its client (tests only) adds swift-nio-ssl's BoringSSL to test builds.
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", exact: "2.8.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // MARK: - System libraries
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CFFmpeg", path: "Sources/CFFmpeg",
                       pkgConfig: "libavformat libavcodec libavfilter libswscale libavutil",
                       providers: [.apt(["libavformat-dev", "libavcodec-dev", "libavfilter-dev", "libswscale-dev", "libavutil-dev"])]),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),
        // zlib, already a dependency of libpng: gzip decompression with an output cap (the CLIP vocabulary).
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // MARK: - Core
        // What every layer needs and nothing else: atomic output files, the input-file rule, text helpers.
        .target(name: "LapseSupport"),
        // Lapse's own hot loops in C, compiled for the generic, AVX2 and AVX-512 levels and chosen at load time.
        .target(name: "CLapseKernels", cSettings: [.unsafeFlags(["-O3"], .when(configuration: .release))]),
        .target(name: "LapseTensor", dependencies: ["COpenBLAS", "CLapseKernels", "LapseSupport"], swiftSettings: optimized),
        // The parsers of untrusted files keep Swift's bounds and overflow checks (no -Ounchecked): they are the last
        // line of defence against a hostile checkpoint.
        .target(name: "LapseWeights", dependencies: ["LapseTensor", "LapseSupport"], swiftSettings: checked),
        // Exported dynamically so plugin libraries bind to the host's single copy of LapseGraph/LapseTensor types.
        .target(name: "LapseGraph", dependencies: ["LapseTensor", "LapseSupport"],
                linkerSettings: [.unsafeFlags(["-Xlinker", "--export-dynamic"], .when(platforms: [.linux]))]),
        // The layers every model family builds on (Linear, Conv2d, norms, attention projections) and the weight reader
        // that checks names and shapes in each family's own error words.
        .target(name: "LapseNN", dependencies: ["LapseTensor", "LapseWeights"], swiftSettings: optimized),
        .target(name: "CMediaHelpers", dependencies: ["CPNG", "CFFmpeg"],
                linkerSettings: [.linkedLibrary("png16"), .linkedLibrary("avutil")]),
        .target(name: "LapseMedia", dependencies: ["LapseSupport", "LapseTensor", "CFFmpeg", "CPNG", "CMediaHelpers"],
                swiftSettings: optimized),
        // The HTTP job server behind `lapse serve`: jobs, queue, workspace confinement; knows no model.
        .target(name: "LapseServer", dependencies: ["LapseGraph", .product(name: "Hummingbird", package: "hummingbird"),
                                                   .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                                                   .product(name: "Logging", package: "swift-log")]),
        .target(name: "LapseCLI", dependencies: [
            "LapseGraph",
            "LapseServer",
            "LapseTensor",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "lapse", dependencies: ["LapseCLI", "LapseGraph", "MediaPlugin", "TensorIOPlugin", "APISRPlugin", "DiffusionPlugin", "MagicTimePlugin", "StreamingT2VPlugin"]),

        // MARK: - Plugins (node families)
        .target(name: "MediaPlugin", dependencies: ["LapseGraph", "LapseMedia", "LapseTensor"], path: "Plugins/Media"),
        .target(name: "TensorIOPlugin", dependencies: ["LapseGraph", "LapseWeights", "LapseTensor"], path: "Plugins/TensorIO"),
        .target(name: "APISRPlugin", dependencies: ["LapseGraph", "LapseNN", "LapseWeights", "LapseTensor"], path: "Plugins/APISR",
                swiftSettings: optimized),
        .target(name: "DiffusionPlugin", dependencies: ["LapseGraph", "LapseNN", "LapseSupport", "LapseWeights", "LapseTensor", "CZlib"], path: "Plugins/Diffusion",
                swiftSettings: optimized),
        .target(name: "MagicTimePlugin", dependencies: ["DiffusionPlugin", "LapseGraph", "LapseWeights"], path: "Plugins/MagicTime"),
        .target(name: "StreamingT2VPlugin", dependencies: ["DiffusionPlugin", "LapseGraph", "LapseMedia", "LapseNN", "LapseWeights", "LapseTensor"],
                path: "Plugins/StreamingT2V", swiftSettings: optimized),

        // MARK: - Benchmarks (not tested; run by Benchmarks/apisr/grl_dat.sh)
        .executableTarget(name: "MediaBenchmark", dependencies: ["LapseMedia", "LapseGraph"],
                          path: "Benchmarks/media/MediaBenchmark", swiftSettings: optimized),
        .executableTarget(name: "GRLBenchmark", dependencies: ["APISRPlugin", "LapseWeights", "LapseTensor"],
                          path: "Benchmarks/apisr/GRLBenchmark", swiftSettings: optimized),
        .executableTarget(name: "UpscaleBenchmark", dependencies: ["APISRPlugin", "LapseTensor"],
                          path: "Benchmarks/apisr/UpscaleBenchmark", swiftSettings: optimized),
        .executableTarget(name: "UNetBenchmark", dependencies: ["DiffusionPlugin", "StreamingT2VPlugin", "LapseWeights", "LapseTensor"],
                          path: "Benchmarks/diffusion/UNetBenchmark", swiftSettings: optimized),

        // MARK: - Fuzzing (Tools/fuzz: the families, the lapse-fuzz driver; FuzzSmokeTests runs a short pass in CI)
        .target(name: "LapseFuzzing", dependencies: ["LapseSupport", "LapseWeights", "LapseTensor", "LapseGraph", "LapseMedia",
                                                     "MediaPlugin", "TensorIOPlugin", "APISRPlugin", "DiffusionPlugin",
                                                     "MagicTimePlugin"],
                path: "Tools/fuzz/LapseFuzzing"),
        .executableTarget(name: "lapse-fuzz", dependencies: ["LapseFuzzing"], path: "Tools/fuzz/lapse-fuzz"),

        // MARK: - Tests
        .target(name: "LapseTestSupport", dependencies: ["LapseGraph", "LapseTensor", "LapseWeights"], path: "Tests/LapseTestSupport"),
        .testTarget(name: "LapseGraphTests", dependencies: ["LapseGraph", "LapseTestSupport"]),
        .testTarget(name: "LapseTensorTests", dependencies: ["LapseTensor", "LapseTestSupport"], resources: [.copy("Fixtures")]),
        // Tensor-engine benchmark (run through Benchmarks/tensor/bench.py, which times PyTorch in the same run).
        .executableTarget(name: "TensorBenchmarks", dependencies: ["LapseTensor", "COpenBLAS"], path: "Benchmarks/tensor",
                          exclude: ["bench.py", "levels.py"], swiftSettings: optimized),
        .testTarget(name: "LapseWeightsTests", dependencies: ["LapseWeights", "LapseTensor", "LapseGraph", "TensorIOPlugin", "LapseTestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "LapseMediaTests", dependencies: ["LapseMedia", "MediaPlugin", "LapseGraph", "LapseTestSupport"]),
        .testTarget(name: "APISRTests", dependencies: ["APISRPlugin", "LapseWeights", "LapseTensor", "LapseGraph", "LapseTestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "DiffusionTests", dependencies: ["DiffusionPlugin", "MagicTimePlugin", "MediaPlugin", "APISRPlugin", "LapseWeights", "LapseTensor", "LapseGraph", "LapseTestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "StreamingT2VTests", dependencies: ["StreamingT2VPlugin", "DiffusionPlugin", "MediaPlugin", "APISRPlugin", "LapseWeights", "LapseTensor", "LapseGraph", "LapseTestSupport", "lapse"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "FuzzSmokeTests", dependencies: ["LapseFuzzing"]),
        .testTarget(name: "LapseServerTests", dependencies: ["LapseServer", "LapseCLI", "LapseGraph", "LapseTestSupport",
                                                            "MediaPlugin", "APISRPlugin",
                                                            .product(name: "HummingbirdWSClient", package: "hummingbird-websocket")]),
        .testTarget(name: "LapseCLITests", dependencies: ["LapseCLI", "LapseGraph", "LapseTestSupport", "lapse"]),
    ]
)
