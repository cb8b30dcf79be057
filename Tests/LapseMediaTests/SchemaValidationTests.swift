import Foundation
import LapseGraph
import MediaPlugin
import Testing

/// Media node schemas as the validator applies them, before anything runs.
@Suite("Media schemas in validation")
struct SchemaValidationTests {
    @Test("SaveImage.bit_depth accepts only 8 or 16")
    func bitDepthAllowedValues() throws {
        let registry = NodeRegistry()
        try MediaPlugin.register(into: registry)
        func diagnostics(_ depth: Int) -> [String] {
            let text = #"{"version": 1, "nodes": {"g": {"type": "LoadImage", "params": {"path": "in.png"}}, "# +
                #""out": {"type": "SaveImage", "inputs": {"frames": "g"}, "params": {"path": "x.png", "bit_depth": \#(depth)}}}}"#
            switch GraphValidator(registry: registry, checkInputFiles: false).validate(data: Data(text.utf8)) {
            case .success: return []
            case .failure(let failure): return failure.diagnostics.map(\.description)
            }
        }
        #expect(diagnostics(12) == ["error: nodes.out.params.bit_depth: value 12 is not allowed; allowed: 8, 16"])
        #expect(diagnostics(16).isEmpty)
    }
}
