import Foundation
import LapseGraph
import LapseTestSupport
import Testing

/// `--cache-dir` across separate `lapse` processes, counting which nodes each run executes from its `--events json`
/// stream: a tiny seeded SRVGG (the APISR fixture) upscales a crop of a sample image twice in a row.
@Suite("lapse run --cache-dir across processes")
struct DiskCacheTests {
    /// src → crop → up (×2) → up2 (×2) → save; `up2Tile` changes only up2's key.
    static func graph(output: String, up2Tile: Int) -> String {
        let image = Paths.repoRoot.appendingPathComponent("samples/chelsea.png").path
        let model = Paths.repoRoot.appendingPathComponent("Tests/APISRTests/Fixtures/srvgg_x2.pth").path
        return #"""
        {"version": 1, "nodes": {
          "src": {"type": "LoadImage", "params": {"path": "\#(image)"}},
          "crop": {"type": "Crop", "inputs": {"frames": "src"}, "params": {"x": 100, "y": 60, "width": 48, "height": 40}},
          "model": {"type": "LoadUpscaleModel", "params": {"path": "\#(model)"}},
          "up": {"type": "Upscale", "inputs": {"model": "model", "frames": "crop"}},
          "up2": {"type": "Upscale", "inputs": {"model": "model", "frames": "up"}, "params": {"tile": \#(up2Tile)}},
          "save": {"type": "SaveImage", "inputs": {"frames": "up2"}, "params": {"path": "\#(output)"}}
        }}
        """#
    }

    /// What one `lapse run --events json` process did.
    struct Run {
        var code: Int32
        var started: Set<String> = []
        var cached: Set<String> = []
        var logs: [String] = []
        var stderr: String
    }

    /// Runs the built `lapse` in its own process.
    static func lapse(_ graph: String, cache: URL, in dir: URL) throws -> Run {
        let path = try writeGraph(graph, in: dir)
        let process = Process()
        process.executableURL = Paths.products.appendingPathComponent("lapse")
        process.arguments = ["run", path, "--cache-dir", cache.path, "--events", "json"]
        process.currentDirectoryURL = dir
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        var run = Run(code: process.terminationStatus, stderr: stderr)
        func string(_ value: JSONValue?) -> String? { if case .string(let s)? = value?.kind { s } else { nil } }
        for line in String(decoding: stdout, as: UTF8.self).split(separator: "\n") {
            let event = try JSONParser.parse(String(line))
            switch string(event["event"]) {
            case "nodeStarted": run.started.insert(string(event["node"]) ?? "")
            case "nodeFinished": if case .bool(true)? = event["cached"]?.kind { run.cached.insert(string(event["node"]) ?? "") }
            case "log": run.logs.append(string(event["message"]) ?? "")
            default: break
            }
        }
        return run
    }

    /// The entry files under the cache folder.
    static func entries(_ cache: URL) -> Set<String> {
        let walker = FileManager.default.enumerator(atPath: cache.path)
        var found: Set<String> = []
        while let relative = walker?.nextObject() as? String {
            if relative.hasSuffix(".lapse") { found.insert(relative) }
        }
        return found
    }

    @Test func secondRunDoesNoModelWorkAndOneParamReRunsItsDownstream() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = dir.appendingPathComponent("cache")
        let out = dir.appendingPathComponent("out.png")

        let first = try Self.lapse(Self.graph(output: out.path, up2Tile: 0), cache: cache, in: dir)
        #expect(first.code == 0, "\(first.stderr)")
        #expect(first.started == ["src", "crop", "model", "up", "up2", "save"])
        let firstImage = try Data(contentsOf: out)
        let written = Self.entries(cache)
        #expect(written.count == 2, "the two upscalers' frames; loaders, crop and saver write none: \(written)")

        // A new process, same graph: only the saver runs; its upstream comes from the cache, no model is loaded.
        try FileManager.default.removeItem(at: out)
        let second = try Self.lapse(Self.graph(output: out.path, up2Tile: 0), cache: cache, in: dir)
        #expect(second.code == 0, "\(second.stderr)")
        #expect(second.started == ["save"], "\(second.started)")
        #expect(second.cached == ["src", "crop", "model", "up", "up2"])
        #expect(try Data(contentsOf: out) == firstImage, "the cached frames are exact")

        // One parameter of up2 changed: up2 runs again (with the model it needs) on up's cached frames.
        let third = try Self.lapse(Self.graph(output: out.path, up2Tile: 32), cache: cache, in: dir)
        #expect(third.code == 0, "\(third.stderr)")
        #expect(third.started == ["model", "up2", "save"], "\(third.started)")
        let thirdImage = try Data(contentsOf: out)
        let added = Self.entries(cache).subtracting(written)
        #expect(added.count == 1, "\(added)")

        // Damage that new entry: it is reported, removed and recomputed, never used.
        let entry = cache.appendingPathComponent(try #require(added.first))
        var bytes = try Data(contentsOf: entry)
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: entry)
        let fourth = try Self.lapse(Self.graph(output: out.path, up2Tile: 32), cache: cache, in: dir)
        #expect(fourth.code == 0, "\(fourth.stderr)")
        #expect(fourth.started == ["model", "up2", "save"], "\(fourth.started)")
        #expect(fourth.logs.contains { $0.contains("ignored the cache entry") && $0.contains(entry.lastPathComponent) && $0.contains("checksum mismatch") },
                "\(fourth.logs)")
        #expect(try Data(contentsOf: out) == thirdImage)
        #expect(Self.entries(cache).contains(added.first!), "written again")
        let fifth = try Self.lapse(Self.graph(output: out.path, up2Tile: 32), cache: cache, in: dir)
        #expect(fifth.started == ["save"] && !fifth.logs.contains { $0.contains("cache") }, "\(fifth.started) \(fifth.logs)")
    }
}
