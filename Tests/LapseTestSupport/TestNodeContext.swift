import Foundation
import LapseGraph
import Synchronization

/// A `NodeContext` for running nodes directly in tests: records progress reports and log lines, and can be
/// cancelled on demand.
public final class TestNodeContext: NodeContext, @unchecked Sendable {
    /// One `progress` call.
    public struct ProgressReport: Sendable, Equatable {
        public var step: Int
        public var total: Int
        public var unit: String
    }

    public let nodeID: String
    public let nodeType: String
    private let state = Mutex<(progress: [ProgressReport], logs: [String], cancelled: Bool)>(([], [], false))

    /// The work folder a resumable node may use (`--cache-dir` gives one in real runs).
    public let workDirectory: URL?

    public init(nodeID: String = "test", nodeType: String = "Test", workDirectory: URL? = nil) {
        self.nodeID = nodeID
        self.nodeType = nodeType
        self.workDirectory = workDirectory
    }

    public func progress(step: Int, total: Int, unit: String) {
        state.withLock { $0.progress.append(ProgressReport(step: step, total: total, unit: unit)) }
    }

    public var isCancelled: Bool { state.withLock { $0.cancelled } }

    public func log(_ message: String) { state.withLock { $0.logs.append(message) } }

    /// Requests cancellation; later `checkCancellation()` calls throw.
    public func cancel() { state.withLock { $0.cancelled = true } }

    /// Progress reports so far, oldest first.
    public var progressReports: [ProgressReport] { state.withLock { $0.progress } }

    /// Log lines so far, oldest first.
    public var logs: [String] { state.withLock { $0.logs } }
}
