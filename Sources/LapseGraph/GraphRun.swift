import Foundation

// What `lapse run`, `lapse validate` and `lapse serve` share between reading a graph and reporting how its run
// ended, so the command line and the server parse, override, validate and end runs the same way.

extension ParamOverride {
    /// Parses `ID.PARAM=VALUE` texts as `--set` takes them; malformed ones become diagnostics (at `--set TEXT`), so
    /// they are reported together with the graph's own problems.
    public static func parseAll(_ texts: [String]) -> (overrides: [ParamOverride], diagnostics: [Diagnostic]) {
        var overrides: [ParamOverride] = []
        var diagnostics: [Diagnostic] = []
        for text in texts {
            do {
                overrides.append(try ParamOverride.parse(text))
            } catch {
                diagnostics.append(Diagnostic(path: "--set \(error.text)", message: error.reason))
            }
        }
        return (overrides, diagnostics)
    }
}

extension GraphValidator {
    /// Adjusts a decoded document before validation and reports what it refuses (the server makes file paths
    /// absolute and keeps them inside its workspace).
    public typealias Preparation = @Sendable (GraphDocument) -> (GraphDocument, [Diagnostic])

    /// The whole pipeline of `lapse run` and `lapse validate`: parse the `--set` texts and the graph text, apply the
    /// overrides, `prepare` the document, validate. Every problem is reported at once, malformed overrides first.
    public func validate(data: Data, name: String, overrideTexts: [String],
                         prepare: Preparation? = nil) -> Result<ValidatedGraph, ValidationFailure> {
        let (overrides, overrideProblems) = ParamOverride.parseAll(overrideTexts)
        let json: JSONValue
        do {
            json = try JSONParser.parse(data)
        } catch {
            return .failure(ValidationFailure(diagnostics: overrideProblems + [
                Diagnostic(path: "\(name):\(error.location.line):\(error.location.column)",
                           message: "invalid JSON: \(error.message)", location: error.location),
            ]))
        }
        return validate(json: json, overrides: overrides, preceding: overrideProblems, prepare: prepare)
    }

    /// Decodes parsed graph JSON, applies `overrides`, `prepare`s and validates; `preceding` problems come first.
    public func validate(json: JSONValue, overrides: [ParamOverride], preceding: [Diagnostic] = [],
                         prepare: Preparation? = nil) -> Result<ValidatedGraph, ValidationFailure> {
        let (document, decodeProblems) = GraphDocument.decode(json)
        let (overridden, overrideProblems) = document.applying(overrides)
        var prepared = overridden
        var preparationProblems: [Diagnostic] = []
        // A document that did not decode cleanly is still prepared, so a path problem is reported with the rest.
        if let prepare { (prepared, preparationProblems) = prepare(overridden) }
        return validate(prepared, preceding: preceding + decodeProblems + overrideProblems + preparationProblems)
    }
}

/// How a run ended, for callers that report an outcome rather than catch errors (the server's jobs).
public enum RunOutcome: Sendable {
    case succeeded(RunSummary)
    /// `nodeID` is the failing node when the error names one.
    case failed(nodeID: String?, message: String)
    case cancelled
}

extension Executor {
    /// Runs the graph and reports how it ended. A failure or a cancellation is also sent to `finalEvents` as the
    /// closing `error` event, which is how an `--events json` stream ends when the run did not succeed.
    public func runReportingOutcome(_ graph: ValidatedGraph, finalEvents: (any RunEventSink)? = nil) -> RunOutcome {
        do {
            return .succeeded(try run(graph))
        } catch is CancellationError {
            finalEvents?.handle(.error(nodeID: nil, message: "cancelled"))
            return .cancelled
        } catch {
            let id = (error as? NodeExecutionError)?.nodeID
            finalEvents?.handle(.error(nodeID: id, message: error.localizedDescription))
            return .failed(nodeID: id, message: error.localizedDescription)
        }
    }
}

/// Sends every event to several sinks in order (a job's JSON event log and its per-node progress table).
public struct FanOutEventSink: RunEventSink {
    private let sinks: [any RunEventSink]

    public init(_ sinks: [any RunEventSink]) { self.sinks = sinks }

    public func handle(_ event: RunEvent) {
        for sink in sinks { sink.handle(event) }
    }

    public func runFinished(_ report: RunReport) {
        for sink in sinks { sink.runFinished(report) }
    }
}
