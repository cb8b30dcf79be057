import APISRPlugin
import Foundation
import LapseCLI
import LapseGraph
import LapseServer
import LapseTestSupport
import MediaPlugin
import Testing

@Suite("lapse serve: end to end")
struct ServerEndToEndTests {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A workspace holding the ready upscale graph, the real Real-ESRGAN animevideov3 ×4 weights and the astronaut
    /// photograph (all fetched by scripts/fetch-assets.sh), copied so jobs write nothing into the checkout.
    static func upscaleWorkspace() throws -> URL {
        let fm = FileManager.default
        let workspace = try TestSupport.makeTemporaryDirectory()
        for file in ["graphs/upscale-image.json", "models/realesrgan/realesr-animevideov3-x4.param",
                     "models/realesrgan/realesr-animevideov3-x4.bin", "samples/astronaut.png"] {
            let source = repoRoot.appendingPathComponent(file)
            try #require(fm.fileExists(atPath: source.path), "\(source.path) is missing: run scripts/fetch-assets.sh")
            let target = workspace.appendingPathComponent(file)
            try fm.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try fm.copyItem(at: source, to: target)
        }
        return workspace
    }

    @Test("the ready upscale graph runs as a job over HTTP and its ×4 PNG is fetched")
    func upscaleImage() async throws {
        let registry = try LapseCLI.registry(plugins: [MediaPlugin.self, APISRPlugin.self])
        let server = try await TestServer.start(registry: registry, workspace: try Self.upscaleWorkspace())
        defer { Task { await server.stop() } }

        // The page's picker lists the ready graph and serves its text.
        #expect(try await server.request("GET", "/graphs").json?["graphs"]?.arrayValue?.compactMap(\.stringValue) == ["upscale-image.json"])
        let graph = try await server.request("GET", "/graphs/upscale-image.json")
        #expect(graph.status == 200)

        let started = Date()
        let id = try await server.submit(#"{"graph": \#(graph.text), "set": ["up.tile=256"]}"#)
        let job = try await server.waitForEnd(id, timeout: 600)
        #expect(job["state"]?.stringValue == "done", "\(job.jsonText)")
        print("serve e2e: upscale-image.json job took \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        let up = job["nodes"]?.arrayValue?.first { $0["id"]?.stringValue == "up" }
        #expect(up?["state"]?.stringValue == "done")
        // Its last progress report (tiles, then frames) is complete.
        #expect((up?["total"]?.intValue ?? 0) >= 1 && up?["step"]?.intValue == up?["total"]?.intValue)

        let outputs = job["outputs"]?.arrayValue ?? []
        #expect(outputs.compactMap { $0["name"]?.stringValue } == ["out/astronaut_x4.png"])
        let png = try await server.request("GET", "/jobs/\(id)/outputs/out/astronaut_x4.png")
        #expect(png.status == 200)
        #expect(png.headers["content-type"] == "image/png")
        // PNG signature, then IHDR: width and height big-endian at bytes 16…23; the astronaut is 512×512.
        let bytes = [UInt8](png.body)
        try #require(bytes.count > 24)
        #expect(Array(bytes[0..<8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let width = bytes[16..<20].reduce(0) { $0 << 8 | Int($1) }, height = bytes[20..<24].reduce(0) { $0 << 8 | Int($1) }
        #expect(width == 2048 && height == 2048)
        // The bytes served are the file the job wrote, in its own folder.
        let written = try Data(contentsOf: server.workspace.appendingPathComponent("jobs/\(id)/out/astronaut_x4.png"))
        #expect(written == png.body)
        #expect(!FileManager.default.fileExists(atPath: server.workspace.appendingPathComponent("out/astronaut_x4.png").path))
    }
}

@Suite("lapse serve: the command")
struct ServeCommandTests {
    @Test("lapse serve refuses a non-loopback address without a token, naming the fix")
    func refusesWithoutToken() {
        let console = CapturedConsole()
        let env = CLIEnvironment(console: console, makeRegistry: { SyntheticNodes.registry() }, environment: [:])
        let status = LapseCLI.run(["serve", "--host", "0.0.0.0", "--port", "0"], environment: env)
        #expect(status == ExitStatus.usage)
        #expect(console.standardError.contains("refusing to listen on 0.0.0.0 without a token"))
        #expect(console.standardError.contains("LAPSE_TOKEN"))
    }

    @Test("lapse serve on a port in use exits 1 with the system's reason")
    func portInUse() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let console = CapturedConsole()
        let env = CLIEnvironment(console: console, makeRegistry: { SyntheticNodes.registry() }, environment: [:],
                                 currentDirectory: server.workspace)
        let port = server.port
        let status = try await TestSupport.offPool { LapseCLI.run(["serve", "--port", String(port)], environment: env) }
        #expect(status == ExitStatus.runtimeError)
        #expect(console.standardError.contains("cannot serve on 127.0.0.1:\(port)") && console.standardError.contains("in use"),
                "\(console.standardError)")
    }

    @Test("lapse serve listens, answers with LAPSE_TOKEN required, and stops on cancellation")
    func servesAndStops() async throws {
        let workspace = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: workspace) }
        let console = CapturedConsole()
        let token = CancellationToken()
        let env = CLIEnvironment(console: console, makeRegistry: { SyntheticNodes.registry() }, cancellation: token,
                                 environment: ["LAPSE_TOKEN": "tok"], currentDirectory: workspace)
        let exit = ExitBox()
        Thread.detachNewThread { exit.set(LapseCLI.run(["serve", "--port", "0", "--max-jobs", "2"], environment: env)) }
        let deadline = Date().addingTimeInterval(30)  // the later waits count from here, as before
        let bound = try await TestServer.listeningPort(printedTo: console)
        #expect(console.standardOutput.contains("2 jobs at a time, token required"))
        #expect(try await HTTPTestClient.request(port: bound, method: "GET", path: "/jobs").status == 401)
        let jobs = try await HTTPTestClient.request(port: bound, method: "GET", path: "/jobs", headers: ["Authorization": "Bearer tok"])
        #expect(jobs.status == 200)
        token.cancel()
        while exit.value == nil, Date() < deadline.addingTimeInterval(30) { try await Task.sleep(for: .milliseconds(20)) }
        #expect(exit.value == ExitStatus.success)
    }
}


@Suite("lapse serve: models kept between jobs")
struct ModelCacheServeTests {
    @Test("a second job on the same checkpoint does not load it again; a changed file or parameter does")
    func secondJobReusesModel() async throws {
        let registry = try LapseCLI.registry(plugins: [MediaPlugin.self, APISRPlugin.self])
        let workspace = try ServerEndToEndTests.upscaleWorkspace()
        let server = try await TestServer.start(registry: registry, workspace: workspace) {
            $0.modelMemoryBytes = max(ModelCache.shared.budgetBytes, 64 << 20)
        }
        defer { Task { await server.stop() } }
        let model = server.workspace.appendingPathComponent("models/realesrgan/realesr-animevideov3-x4.param").path
        // A small crop keeps each job short: the model load is what is counted.
        let graph = """
        {"version": 1, "nodes": {
          "src": {"type": "LoadImage", "params": {"path": "samples/astronaut.png"}},
          "small": {"type": "Resize", "inputs": {"frames": "src"}, "params": {"width": 32, "height": 32}},
          "model": {"type": "LoadUpscaleModel", "params": {"path": "models/realesrgan/realesr-animevideov3-x4.param"}},
          "up": {"type": "Upscale", "inputs": {"model": "model", "frames": "small"}},
          "out": {"type": "SaveImage", "inputs": {"frames": "up"}, "params": {"path": "small_x4.png"}}
        }}
        """
        #expect(ModelCache.shared.loadCount(file: model) == 0)
        let first = try await server.submit(graph)
        #expect(try await server.waitForEnd(first)["state"]?.stringValue == "done")
        #expect(ModelCache.shared.loadCount(file: model) == 1)
        let second = try await server.submit(graph)
        #expect(try await server.waitForEnd(second)["state"]?.stringValue == "done")
        #expect(ModelCache.shared.loadCount(file: model) == 1, "the second job loaded the checkpoint again")
        // Same pixels from the kept model.
        let a = try await server.request("GET", "/jobs/\(first)/outputs/small_x4.png").body
        let b = try await server.request("GET", "/jobs/\(second)/outputs/small_x4.png").body
        #expect(a == b && a.count > 100)
        // Another parameter is another entry.
        let srvgg = try await server.submit(#"{"graph": \#(graph), "set": ["model.arch=srvgg"]}"#)
        #expect(try await server.waitForEnd(srvgg)["state"]?.stringValue == "done")
        #expect(ModelCache.shared.loadCount(file: model) == 2)
        // A rewritten file (new modification time) is loaded afresh.
        let bin = model.replacingOccurrences(of: ".param", with: ".bin")
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(5)], ofItemAtPath: bin)
        let third = try await server.submit(graph)
        #expect(try await server.waitForEnd(third)["state"]?.stringValue == "done")
        #expect(ModelCache.shared.loadCount(file: model) == 3)
    }
}

@Suite("ModelCache")
struct ModelCacheTests {
    @Test("LRU within the budget; concurrent requests load once; a zero budget caches nothing")
    func lru() throws {
        let folder = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let files = (0..<3).map { folder.appendingPathComponent("m\($0).bin").path }
        for file in files { try Data(count: 1000).write(to: URL(fileURLWithPath: file)) }
        let cache = ModelCache(budgetBytes: 2500)
        let loads = LoadCounter()
        func get(_ i: Int) throws -> Int { try cache.value(kind: "test", files: [files[i]]) { loads.add(); return i } }
        #expect(try get(0) == 0 && get(1) == 1 && get(0) == 0)
        #expect(loads.count == 2)
        _ = try get(2)  // 3,000 bytes > 2,500: the least recently used (1) goes
        #expect(cache.statistics.evictions == 1)
        _ = try get(0)
        #expect(loads.count == 3)
        _ = try get(1)
        #expect(loads.count == 4)

        let shared = ModelCache(budgetBytes: 10_000)
        let slowLoads = LoadCounter()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            _ = try? shared.value(kind: "slow", files: [files[0]]) { slowLoads.add(); usleep(50_000); return 1 }
        }
        #expect(slowLoads.count == 1)
        #expect(shared.statistics.hits == 7)

        let off = ModelCache(budgetBytes: 0)
        _ = try off.value(kind: "x", files: [files[0]]) { 1 }
        _ = try off.value(kind: "x", files: [files[0]]) { 1 }
        #expect(off.statistics.loads == 2 && off.statistics.entries == 0)
    }
}

private final class LoadCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func add() { lock.lock(); value += 1; lock.unlock() }
    var count: Int { lock.lock(); defer { lock.unlock() }; return value }
}
