import APISRPlugin
import DiffusionPlugin
import Foundation
import LapseGraph
import LapseTestSupport
import MediaPlugin
import StreamingT2VPlugin
import Testing

/// The ready StreamingT2V graphs, run on the seeded tiny model set: in process, and as a `lapse` process that is
/// killed mid-way and resumed.
@Suite("StreamingT2V graphs", .serialized)
struct StreamingT2VGraphTests {
    static let repoRoot = StreamingT2VFixtures.repoRoot

    static func registry() throws -> NodeRegistry {
        let registry = NodeRegistry()
        for plugin: any NodePlugin.Type in [MediaPlugin.self, APISRPlugin.self, DiffusionPlugin.self, StreamingT2VPlugin.self] {
            try plugin.register(into: registry)
        }
        return registry
    }

    /// `--set` overrides that point the preview graph at the tiny files and shrink the work: 32² frames, 2 steps.
    static func overrides(output: String, length: Int) throws -> [String] {
        let files = try TinyStreamingT2V.files()
        let openCLIP = URL(fileURLWithPath: files.base).deletingLastPathComponent().appendingPathComponent("open_clip.json").path
        _ = try TinyStreamingT2V.load()  // writes open_clip.json
        return ["base.path=\(files.base)", "st2v.path=\(files.checkpoint)", "st2v.base=\(files.base)",
                "st2v.image_encoder_config=\(openCLIP)", "latent.width=32", "latent.height=32", "stage1.steps=2",
                "extend.length=\(length)", "extend.steps=2", "save.path=\(output)"]
    }

    /// The frames of a video file, read by the LoadVideo node with its defaults.
    static func decode(_ path: String) throws -> [Frame] {
        let entry = try #require(try registry().entry(for: "LoadVideo"))
        var values: [String: Value] = [:]
        for spec in entry.schema.inputs { values[spec.name] = spec.defaultValue }
        values["path"] = .string(path)
        let video = try entry.nodeType.init().run(NodeInputs(values), context: TestNodeContext())
        guard case .object(let object)? = video.values["frames"], let frames = object as? Frames else {
            throw NodeError.failed("\(path) did not load")
        }
        return try frames.collect()
    }

    @Test func graphsValidateWithTheirDefaults() throws {
        let registry = try Self.registry()
        for graph in ["streamingt2v-preview.json", "streamingt2v-preview-then-upscale.json", "streamingt2v.json",
                      "streamingt2v-then-upscale.json"] {
            let data = try Data(contentsOf: Self.repoRoot.appendingPathComponent("graphs/\(graph)"))
            let result = GraphValidator(registry: registry, baseDirectory: Self.repoRoot, checkInputFiles: false)
                .validate(data: data, name: graph)
            if case .failure(let failure) = result { Issue.record("\(graph): \(failure)") }
        }
        // Without the downloads, each missing model file points to the list of them.
        let data = try Data(contentsOf: Self.repoRoot.appendingPathComponent("graphs/streamingt2v-preview.json"))
        let missing = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("no-models-\(UUID().uuidString)")
        guard case .failure(let failure) = GraphValidator(registry: registry, baseDirectory: missing)
            .validate(data: data, name: "streamingt2v-preview.json") else {
            Issue.record("missing model files passed validation"); return
        }
        let lines = failure.diagnostics.map(\.description)
        #expect(lines.count == 3 && lines.allSatisfy { $0.contains("input file not found") && $0.contains("docs/models.md") }, "\(lines)")
    }

    /// Prompt → ModelScope stage 1 → StreamExtend → mp4, every node real, on the tiny set.
    @Test func previewGraphRunsEndToEnd() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let output = dir.appendingPathComponent("preview.mp4").path
        let data = try Data(contentsOf: Self.repoRoot.appendingPathComponent("graphs/streamingt2v-preview.json"))
        let overrides = try Self.overrides(output: output, length: 32).map { try ParamOverride.parse($0) }
        let registry = try Self.registry()
        let validated = try GraphValidator(registry: registry, baseDirectory: Self.repoRoot)
            .validate(data: data, name: "streamingt2v-preview.json", overrides: overrides).get()
        let summary = try Executor(registry: registry).run(validated)
        #expect(Set(summary.executed).isSuperset(of: ["stage1", "st2v", "appearance", "extend", "save"]))
        let decoded = try Self.decode(output)
        #expect(decoded.count == 32)
        #expect(decoded.first.map { [$0.width, $0.height] } == [32, 32])
    }

    /// Prompt → stage 1 → StreamExtend → RefineVideo → mp4: `graphs/streamingt2v.json` with every node real, on the
    /// tiny sets of both models (the refiner's canvas shrunk to what its tiny UNet and 2× VAE take).
    @Test func fullGraphRunsEndToEnd() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let output = dir.appendingPathComponent("streamingt2v.mp4").path
        let refiner = try TinyRefiner.files()
        let sets = try Self.overrides(output: output, length: 24) + [
            "v2v.unet=\(refiner.unet)", "v2v.text_encoder=\(refiner.textEncoder)", "v2v.vae=\(refiner.vae)",
            "v2v.config=\(refiner.config)", "refine.width=40", "refine.height=28", "refine.steps=2", "refine.chunk=16",
            "refine.overlap=8", "prompt.text=a tiny red fox",
        ]
        let data = try Data(contentsOf: Self.repoRoot.appendingPathComponent("graphs/streamingt2v.json"))
        let registry = try Self.registry()
        let validated = try GraphValidator(registry: registry, baseDirectory: Self.repoRoot)
            .validate(data: data, name: "streamingt2v.json", overrides: try sets.map { try ParamOverride.parse($0) }).get()
        let summary = try Executor(registry: registry).run(validated)
        #expect(Set(summary.executed).isSuperset(of: ["prompt", "stage1", "extend", "v2v", "refine_text", "refine_prompt", "refine", "save"]))
        let decoded = try Self.decode(output)
        #expect(decoded.count == 24)
        // 32² frames fit the 40×28 canvas as 28², and the bars are cropped off again.
        #expect(decoded.first.map { [$0.width, $0.height] } == [28, 28])
    }

    /// `lapse run … --cache-dir D` killed with SIGKILL after its first finished chunk continues from there when run
    /// again, and writes the same video as a run that was never interrupted.
    @Test func killedRunResumesFromTheLastFinishedChunk() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let lapse = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lapse")
        try #require(FileManager.default.isExecutableFile(atPath: lapse.path), "\(lapse.path) is not built")
        let graph = Self.repoRoot.appendingPathComponent("graphs/streamingt2v-preview.json").path
        let cache = dir.appendingPathComponent("cache")

        // Each run takes a while: it waits on a thread of its own, not on one of the suite's few pool threads.
        @Sendable func run(output: String, cache: URL?, killAfterChunk: Int? = nil) throws -> (Int32, String) {
            let process = Process()
            process.executableURL = lapse
            var arguments = ["run", graph]
            // Lossless, so the decoded pictures are the generated frames (x264's lossy output varies run to run).
            for set in try Self.overrides(output: output, length: 48) + ["save.crf=0"] { arguments += ["--set", set] }
            if let cache { arguments += ["--cache-dir", cache.path] }
            process.arguments = arguments
            let errors = Pipe()
            process.standardError = errors
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            if let killAfterChunk {
                let deadline = Date().addingTimeInterval(300)
                let name = String(format: "chunk-%05d.safetensors", killAfterChunk)
                while process.isRunning, Date() < deadline {
                    let work = cache?.appendingPathComponent("work").path ?? ""
                    let found = (FileManager.default.enumerator(atPath: work)?.allObjects as? [String] ?? []).contains { $0.hasSuffix(name) }
                    if found { kill(process.processIdentifier, SIGKILL); break }
                    usleep(20_000)
                }
            }
            let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return (process.terminationStatus, message)
        }

        let reference = dir.appendingPathComponent("reference.mp4").path
        let (code, message) = try await TestSupport.offPool { try run(output: reference, cache: nil) }
        try #require(code == 0, "uninterrupted run failed: \(message)")

        let resumed = dir.appendingPathComponent("resumed.mp4").path
        let (killed, _) = try await TestSupport.offPool { try run(output: resumed, cache: cache, killAfterChunk: 1) }
        #expect(killed != 0, "the run was not killed mid-way")
        #expect(!FileManager.default.fileExists(atPath: resumed), "a killed run left an output file")
        let (again, againMessage) = try await TestSupport.offPool { try run(output: resumed, cache: cache) }
        try #require(again == 0, "resumed run failed: \(againMessage)")
        #expect(againMessage.contains("chunk 1/4: taken from the work folder"), "\(againMessage)")
        // The containers differ in their creation time only; the encoded pictures must not.
        let (a, b) = (try Self.decode(resumed), try Self.decode(reference))
        #expect(a.count == 48 && a.count == b.count)
        let identical = zip(a, b).allSatisfy { $0.image.scalars.map(\.bitPattern) == $1.image.scalars.map(\.bitPattern) }
        #expect(identical, "the resumed video differs from the uninterrupted one")
    }
}
