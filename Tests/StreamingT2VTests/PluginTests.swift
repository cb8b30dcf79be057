import LapseGraph
import StreamingT2VPlugin
import Testing

@Suite("StreamingT2V plugin")
struct StreamingT2VPluginTests {
    @Test func registersItsNodesUnderItsName() throws {
        let registry = NodeRegistry()
        try StreamingT2VPlugin.register(into: registry)
        #expect(registry.all.allSatisfy { $0.source == StreamingT2VPlugin.name })
    }
}
