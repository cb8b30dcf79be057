import Foundation
import LapseGraph
import LapseTestSupport

/// Validates graph text against the synthetic registry; returns the graph or the diagnostics.
func check(_ text: String, registry: NodeRegistry = SyntheticNodes.registry(),
           overrides: [ParamOverride] = []) -> Result<ValidatedGraph, ValidationFailure> {
    GraphValidator(registry: registry).validate(data: Data(text.utf8), name: "g.json", overrides: overrides)
}

/// The printed diagnostics of an invalid graph (empty when valid).
func errors(_ text: String, registry: NodeRegistry = SyntheticNodes.registry()) -> [String] {
    switch check(text, registry: registry) {
    case .success: []
    case .failure(let failure): failure.diagnostics.map(\.description)
    }
}

/// A graph document with the given nodes JSON.
func graph(_ nodes: String) -> String { #"{"version": 1, "nodes": {"# + nodes + "}}" }

/// A unique group name isolating one test's synthetic node state.
func uniqueGroup() -> String { "g" + UUID().uuidString.prefix(8) }

func runGraph(_ text: String, options: ExecutionOptions = ExecutionOptions()) throws -> RunSummary {
    let validated = try check(text).get()
    return try Executor(registry: SyntheticNodes.registry(), options: options).run(validated)
}
