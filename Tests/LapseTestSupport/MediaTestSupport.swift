import Foundation
import LapseGraph
import LapseTensor

/// Helpers for tests that use real media and the `ffmpeg` program as a reference.
public enum MediaTestSupport {
    /// The repository root, found from a test file's `#filePath`.
    public static func repoRoot(from filePath: String) -> URL {
        var url = URL(fileURLWithPath: filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        return url
    }

    /// A fetched sample file; fails with instructions when scripts/fetch-assets.sh has not run.
    public static func sample(_ name: String, filePath: String = #filePath) throws -> String {
        let path = repoRoot(from: filePath).appendingPathComponent("samples/\(name)").path
        guard FileManager.default.fileExists(atPath: path) else {
            throw TestAssetError(message: "missing \(path): run scripts/fetch-assets.sh to fetch the sample media")
        }
        return path
    }

    /// Runs a program and returns its standard output; throws with its standard error when it fails.
    @discardableResult
    public static func run(_ program: String, _ arguments: [String]) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [program] + arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read before waiting so a large output cannot fill the pipe and stall the child.
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestAssetError(message: "\(program) \(arguments.joined(separator: " ")) failed: "
                                 + String(decoding: errors.suffix(800), as: UTF8.self))
        }
        return data
    }

    /// Runs `ffmpeg -hide_banner -loglevel error -y ARGS`.
    @discardableResult
    public static func ffmpeg(_ arguments: [String]) throws -> Data {
        try run("ffmpeg", ["-hide_banner", "-loglevel", "error", "-nostdin", "-y"] + arguments)
    }

    /// Validates and runs a graph given as JSON text against `registry`; a validation failure is thrown as
    /// `ValidationFailure`, a node's failure as `NodeExecutionError` (whose message names the node).
    public static func runGraph(_ json: String, registry: NodeRegistry, checkInputFiles: Bool = false) throws {
        switch GraphValidator(registry: registry, checkInputFiles: checkInputFiles).validate(data: Data(json.utf8)) {
        case .failure(let failure): throw failure
        case .success(let graph): _ = try Executor(registry: registry).run(graph)
        }
    }

    /// The message of the error `body` throws, or nil when it succeeds.
    public static func errorMessage(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch {
            return error.localizedDescription
        }
    }

    /// A named pipe at `path` (made with mkfifo), for tests that inputs and outputs never open one.
    public static func makeFIFO(_ path: String) throws {
        guard mkfifo(path, 0o644) == 0 else {
            throw TestAssetError(message: "mkfifo \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// A JSON string literal for `s` (quotes, backslashes and control characters escaped).
    public static func json(_ s: String) -> String { JSONValue.quote(s) }

    /// Quantises a frame to interleaved 8-bit values (round to nearest), for comparing with raw ffmpeg output.
    public static func bytes8(_ frame: Frame) -> [UInt8] {
        let c = frame.channels, h = frame.height, w = frame.width, plane = h * w
        let v = frame.image.scalars
        var out = [UInt8](repeating: 0, count: plane * c)
        for i in 0..<plane {
            for k in 0..<c { out[i * c + k] = UInt8(max(0, min(255, (v[k * plane + i] * 255).rounded()))) }
        }
        return out
    }

    /// Peak signal-to-noise ratio in dB between two same-shaped images in [0, 1].
    public static func psnr(_ a: Tensor, _ b: Tensor) -> Double {
        let x = a.scalars, y = b.scalars
        precondition(x.count == y.count)
        var mse = 0.0
        for i in 0..<x.count { let d = Double(x[i] - y[i]); mse += d * d }
        mse /= Double(x.count)
        return mse == 0 ? .infinity : 10 * log10(1 / mse)
    }
}

/// A test precondition that is not met (missing asset, failing reference tool).
public struct TestAssetError: LocalizedError {
    public let message: String
    public init(message: String) { self.message = message }
    public var errorDescription: String? { message }
}
