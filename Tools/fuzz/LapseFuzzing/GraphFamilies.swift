import APISRPlugin
import DiffusionPlugin
import Foundation
import LapseGraph
import MagicTimePlugin
import MediaPlugin
import TensorIOPlugin

extension FuzzFamilies {
    /// Graph documents, node parameters and cache entries.
    static var graphFamilies: [FuzzFamily] { [graph, params, cache] }

    /// Every built-in node type and the debug nodes, as `lapse` registers them.
    static let registry: NodeRegistry = {
        let registry = NodeRegistry()
        for plugin: any NodePlugin.Type in [MediaPlugin.self, TensorIOPlugin.self, APISRPlugin.self, DiffusionPlugin.self,
                                             MagicTimePlugin.self] {
            try! plugin.register(into: registry)
        }
        try! DebugNodes.register(into: registry)
        return registry
    }()

    static let graphDictionary = ["{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "null", "true", "-", "1e999",
                                  "\"nodes\"", "\"version\"", "\"type\"", "\"inputs\"", "\"params\"", "\"path\"",
                                  "\"LoadImage\"", "\"SaveImage\"", "\"Resize\"", "\"Crop\"", "\"Pad\"", "\"FrameRange\"",
                                  "\"Upscale\"", "\"Sample\"", "\"src.frames\"", "\"%d\"", "[[[[[[[[", "{\"a\":"]

    /// The ready graphs of `graphs/` and a few small ones, as seeds.
    static func graphSeeds() -> [Data] {
        var seeds: [Data] = [
            Data(#"{"version": 1, "nodes": {"a": {"type": "DebugInt", "params": {"value": 3}}, "b": {"type": "DebugInt", "inputs": {"in": "a"}, "params": {"value": 4}}, "w": {"type": "DebugWriteText", "inputs": {"value": "b"}, "params": {"path": "out.txt", "lines": 2}}}}"#.utf8),
            Data(#"{"version": 1, "nodes": {"f": {"type": "DebugFrames", "params": {"count": 3}}, "r": {"type": "Resize", "inputs": {"frames": "f"}, "params": {"width": 8, "height": 0}}, "c": {"type": "Crop", "inputs": {"frames": "r"}, "params": {"x": 1, "y": 1, "width": 4, "height": 4}}, "s": {"type": "DebugFrameSink", "inputs": {"frames": "c"}}}}"#.utf8),
        ]
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../graphs")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path))?.sorted() ?? [] where name.hasSuffix(".json") {
            if let data = FileManager.default.contents(atPath: folder.appendingPathComponent(name).path) { seeds.append(data) }
        }
        return seeds
    }

    /// Parsing and validation of graph documents (nothing runs).
    static let graph = FuzzFamily(
        name: "graph", summary: "graph JSON documents: parsing, overrides and validation against every built-in node",
        dictionary: graphDictionary, seeds: { graphSeeds() },
        run: { input, scratch in
            let validator = GraphValidator(registry: registry, baseDirectory: URL(fileURLWithPath: scratch), checkInputFiles: true)
            if case .failure(let failure) = validator.validate(data: input, name: "fuzz.json") {
                throw failure
            }
        })

    /// Graphs of cheap nodes with mutated parameters, validated and, when valid, run on a small image inside the
    /// scratch folder (crop/pad/resize arithmetic, frame ranges, savers' path patterns).
    static let params = FuzzFamily(
        name: "params", summary: "cheap graphs with mutated parameters, validated and run on a 24×16 image",
        dictionary: ["-1", "0", "9223372036854775807", "-9223372036854775808", "4294967296", "32768", "1e18", "%d",
                     "%999999999d", "%05d", "\\u0000", "\"\"", "true", "null"],
        seeds: {
            let load = #""src": {"type": "DebugFrames", "params": {"count": 2, "width": 24, "height": 16}}"#
            let save = #""out": {"type": "SaveImage", "inputs": {"frames": "x"}, "params": {"path": "SCRATCH/out_%03d.png"}}"#
            return [
                #""x": {"type": "Crop", "inputs": {"frames": "src"}, "params": {"x": 2, "y": 3, "width": 10, "height": 8}}"#,
                #""x": {"type": "Pad", "inputs": {"frames": "src"}, "params": {"left": 2, "top": 3, "right": 4, "bottom": 1}}"#,
                #""x": {"type": "Resize", "inputs": {"frames": "src"}, "params": {"width": 48, "height": 0}}"#,
                #""x": {"type": "FrameRange", "inputs": {"frames": "src"}, "params": {"start": 1, "count": 1}}"#,
            ].map { Data(#"{"version": 1, "nodes": {\#(load), \#($0), \#(save)}}"#.utf8) }
        },
        run: { input, scratch in
            let text = String(decoding: input, as: UTF8.self).replacingOccurrences(of: "SCRATCH", with: scratch)
            let validator = GraphValidator(registry: registry, baseDirectory: URL(fileURLWithPath: scratch))
            let validated: ValidatedGraph
            switch validator.validate(data: Data(text.utf8), name: "fuzz.json") {
            case .success(let graph): validated = graph
            case .failure(let failure): throw failure
            }
            // A mutated path could name any file on the machine (or, relative, one in the current folder): run only
            // graphs whose every free-form string is empty or an absolute path inside scratch.
            for node in validated.nodes.values {
                // The synthetic source's length is not under test; a billion frames would only be slow.
                if node.type == "DebugFrames", case .int(let count)? = node.literals["count"], count > 4 { return }
                for (name, value) in node.literals {
                    guard case .string(let s) = value, !s.isEmpty else { continue }
                    if node.schema.inputs.first(where: { $0.name == name })?.allowed?.contains(s) == true { continue }
                    guard s.hasPrefix(scratch + "/"), !s.contains("/..") else { return }
                }
            }
            let registry = FuzzFamilies.registry
            _ = try Executor(registry: registry, options: ExecutionOptions(maxConcurrency: 1)).run(validated)
        })

    /// Entries of `--cache-dir`, as a later run reads them back (checksum, key, value decoding).
    static let cache = FuzzFamily(
        name: "cache", summary: "--cache-dir entries: header, checksum, key and value decoding",
        dictionary: ["lapse-cache-v3 ", "\"kind\"", "\"int\"", "\"float\"", "\"bits\"", "\"object\"", "\"tag\"", "\"data\""],
        seeds: {
            let dir = NSTemporaryDirectory() + "lapse-fuzz-cache-seed-\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let cache = ResultCache(directory: URL(fileURLWithPath: dir))
            let key = String(repeating: "ab", count: 32)
            try cache.store(NodeOutputs(["i": .int(-3), "f": .float(0.25), "b": .bool(true), "s": .string("x\u{1B}y")]),
                            for: key, nodeType: "Fuzz")
            guard let entry = cache.fileURL(for: key) else { throw CacheEntryRefused(path: dir, reason: "the seed entry has no file") }
            return [try Data(contentsOf: entry)]
        },
        run: { input, scratch in
            let key = String(repeating: "ab", count: 32)
            let cache = ResultCache(directory: URL(fileURLWithPath: scratch + "/cache"))
            guard let entry = cache.fileURL(for: key) else { return }
            try FileManager.default.createDirectory(at: entry.deletingLastPathComponent(), withIntermediateDirectories: true)
            try input.write(to: entry)
            switch cache.lookup(key, registry: registry) {
            case .hit, .miss: return
            case .corrupt(let path, let reason): throw CacheEntryRefused(path: path, reason: reason)
            }
        })
}

/// A cache entry the cache refused, as the fuzz target reports it.
struct CacheEntryRefused: LocalizedError {
    let path: String
    let reason: String
    var errorDescription: String? { "\(path): \(reason)" }
}
