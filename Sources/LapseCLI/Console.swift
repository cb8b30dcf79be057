import Foundation
import Synchronization

/// Where the CLI writes: the real stdout/stderr, or buffers when tests run commands in-process.
public protocol Console: Sendable {
    func out(_ text: String)
    func err(_ text: String)
    /// True when stderr is a terminal, so a redrawn progress line makes sense.
    var isTerminal: Bool { get }
}

/// The process's standard output and error.
public struct StandardConsole: Console {
    public init() {}
    public func out(_ text: String) { Self.writeAll(STDOUT_FILENO, text) }
    public func err(_ text: String) { Self.writeAll(STDERR_FILENO, text) }
    public var isTerminal: Bool { isatty(STDERR_FILENO) != 0 }

    /// Unbuffered, so progress lines and events appear at once and nothing is lost on `exit`.
    private static func writeAll(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 { if errno == EINTR { continue } else { return } }
            offset += n
        }
    }
}

/// Collects output in memory; what tests inspect.
public final class CapturedConsole: Console {
    private let buffers = Mutex<(out: String, err: String)>(("", ""))
    public let isTerminal: Bool

    public init(isTerminal: Bool = false) { self.isTerminal = isTerminal }

    public func out(_ text: String) { buffers.withLock { $0.out += text } }
    public func err(_ text: String) { buffers.withLock { $0.err += text } }

    /// Everything written to standard output.
    public var standardOutput: String { buffers.withLock { $0.out } }
    /// Everything written to standard error.
    public var standardError: String { buffers.withLock { $0.err } }
}
