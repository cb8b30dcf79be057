import Foundation
import LapseGraph
import LapseTestSupport
import Testing

@Suite("Graph validation")
struct ValidationTests {
    @Test func validGraphPasses() throws {
        let g = graph(#""a": {"type": "TestValue", "params": {"value": 2}}, "out": {"type": "TestOutput", "inputs": {"value": "a"}}"#)
        let validated = try check(g).get()
        #expect(validated.outputNodes == ["out"])
        #expect(validated.requiredOrder == ["a", "out"])
    }

    @Test func invalidJSONReportsLineAndColumn() {
        let e = errors("{\n  \"version\": 1,\n  \"nodes\": {,}\n}")
        #expect(e == ["error: g.json:3:13: invalid JSON: unexpected ',', expected a string key"])
        #expect(errors(#"{"version": 1, "version": 1}"#).first?.contains("duplicate key \"version\"") == true)
        #expect(errors("").first?.contains("unexpected end of input") == true)
    }

    @Test func unknownNodeTypeSuggestsClosest() {
        let e = errors(graph(#""a": {"type": "TestVaule"}"#))
        #expect(e.contains(#"error: nodes.a.type: unknown node type "TestVaule" (did you mean "TestValue"?)"#))
    }

    @Test func unknownKeysEverywhereSuggest() {
        let e = errors(#"{"version": 1, "descripton": "x", "nodes": {"a": {"type": "TestValue", "parms": {}}, "out": {"type": "TestOutput", "inputs": {"value": "a"}}}}"#)
        #expect(e.contains(#"error: descripton: unknown key "descripton" (did you mean "description"?)"#))
        #expect(e.contains(#"error: nodes.a.parms: unknown key "parms" (did you mean "params"?)"#))
    }

    @Test func unknownPortAndParam() {
        let e = errors(graph(#""a": {"type": "TestValue", "params": {"valeu": 1}}, "out": {"type": "TestOutput", "inputs": {"vale": "a"}}"#))
        #expect(e.contains(#"error: nodes.a.params.valeu: TestValue has no parameter "valeu" (did you mean "value"?)"#))
        #expect(e.contains(#"error: nodes.out.inputs.vale: TestOutput has no input "vale" (did you mean "value"?)"#))
    }

    @Test func missingRequiredInput() {
        let e = errors(graph(#""s": {"type": "TestAdd"}, "out": {"type": "TestOutput", "inputs": {"value": "s"}}"#))
        #expect(e == [#"error: nodes.s.params.a: missing required input "a" (Int)"#])
        let f = errors(graph(#""out": {"type": "TestFrameSink"}"#))
        #expect(f == [#"error: nodes.out.inputs.frames: missing required input "frames" (Frames)"#])
    }

    @Test func danglingLinkAndMissingOutput() {
        let e = errors(graph(#""model": {"type": "TestValue"}, "out": {"type": "TestOutput", "inputs": {"value": "mdoel"}}"#))
        #expect(e == [#"error: nodes.out.inputs.value: no node "mdoel" (did you mean "model"?)"#])
        let f = errors(graph(#""a": {"type": "TestValue"}, "out": {"type": "TestOutput", "inputs": {"value": "a.valeu"}}"#))
        #expect(f == [#"error: nodes.out.inputs.value: node "a" (TestValue) has no output "valeu" (did you mean "value"?); outputs: value"#])
        let g = errors(graph(#""t": {"type": "TestTwoOutputs"}, "out": {"type": "TestOutput", "inputs": {"value": "t"}}"#))
        #expect(g.first?.contains("has several outputs (first, second); link one as \"t.first\"") == true)
        let h = errors(graph(#""out": {"type": "TestOutput", "inputs": {"value": "bad..link"}}"#))
        #expect(h.first?.contains("invalid link \"bad..link\"") == true)
    }

    @Test func typeMismatchShowsBothTypes() {
        let e = errors(graph(#""f": {"type": "TestFrameGenerator"}, "out": {"type": "TestOutput", "inputs": {"value": "f"}}"#))
        #expect(e == [#"error: nodes.out.inputs.value: type mismatch: "f.frames" is Frames, input "value" of TestOutput expects Int"#])
    }

    @Test func wrongLiteralTypes() {
        let e = errors(graph(#""s": {"type": "TestAdd", "params": {"a": 1.5, "b": "2", "scale": 1, "flag": 1, "mode": 3}}, "out": {"type": "TestOutput", "inputs": {"value": "s"}}"#))
        #expect(e.contains("error: nodes.s.params.a: wrong literal type: expected Int, got number 1.5"))
        #expect(e.contains(#"error: nodes.s.params.b: wrong literal type: expected Int, got string "2""#))
        #expect(e.contains("error: nodes.s.params.flag: wrong literal type: expected Bool, got integer 1"))
        #expect(e.contains("error: nodes.s.params.mode: wrong literal type: expected String, got integer 3"))
        #expect(!e.contains { $0.contains("params.scale") }, "an integer literal is a valid Float")
        #expect(e.count == 4)
    }

    @Test func dataInputGivenAsParam() {
        let e = errors(graph(#""out": {"type": "TestFrameSink", "params": {"frames": "x.png"}}"#))
        #expect(e.first?.contains("\"frames\" is a Frames input; data inputs must be linked") == true)
    }

    @Test func rangeAndAllowedValues() {
        let e = errors(graph(#""s": {"type": "TestAdd", "params": {"a": 1, "scale": 11, "mode": "ad"}}, "v": {"type": "TestValue", "params": {"value": -1001}}, "out": {"type": "TestOutput", "inputs": {"value": "s"}}"#))
        #expect(e.contains("error: nodes.s.params.scale: value 11 is above the maximum 10 (allowed range 0…10)"))
        #expect(e.contains(#"error: nodes.s.params.mode: value "ad" is not allowed (did you mean "add"?); allowed: add, sub"#))
        #expect(e.contains("error: nodes.v.params.value: value -1001 is below the minimum -1000 (allowed range -1000…1000)"))
    }

    @Test func cycleNamesItsNodes() {
        let e = errors(graph(#""a": {"type": "TestAdd", "inputs": {"a": "b"}}, "b": {"type": "TestAdd", "inputs": {"a": "c"}}, "c": {"type": "TestAdd", "inputs": {"a": "a"}}, "out": {"type": "TestOutput", "inputs": {"value": "a"}}"#))
        #expect(e.count == 1)
        #expect(e.first?.hasPrefix("error: nodes.a: cycle: a -> ") == true)
        #expect(["a", "b", "c"].allSatisfy { e.first?.contains($0) == true })
    }

    @Test func graphWithoutOutputNode() {
        let e = errors(graph(#""a": {"type": "TestValue"}"#))
        #expect(e.count == 1)
        #expect(e.first?.hasPrefix("error: nodes: the graph has no output node") == true)
    }

    @Test func missingInputFile() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let present = dir.appendingPathComponent("in.txt")
        try Data("abc".utf8).write(to: present)
        let ok = graph(#""l": {"type": "TestLoad", "params": {"path": "\#(present.path)"}}, "out": {"type": "TestOutput", "inputs": {"value": "l"}}"#)
        #expect(errors(ok).isEmpty)
        let missing = graph(#""l": {"type": "TestLoad", "params": {"path": "\#(dir.path)/nope.txt"}}, "out": {"type": "TestOutput", "inputs": {"value": "l"}}"#)
        #expect(errors(missing) == [#"error: nodes.l.params.path: input file not found: "\#(dir.path)/nope.txt""#])
        let relative = GraphValidator(registry: SyntheticNodes.registry(), baseDirectory: dir)
            .validate(data: Data(graph(#""l": {"type": "TestLoad", "params": {"path": "in.txt"}}, "out": {"type": "TestOutput", "inputs": {"value": "l"}}"#).utf8))
        #expect((try? relative.get()) != nil, "relative paths resolve against the base directory")
    }

    @Test func imageSequencePatternChecksItsFolder() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let pattern = graph(#""l": {"type": "TestLoad", "params": {"path": "\#(dir.path)/f_%05d.png"}}, "out": {"type": "TestOutput", "inputs": {"value": "l"}}"#)
        #expect(errors(pattern).isEmpty, "a frame-number pattern names a sequence, not one file")
        let noFolder = graph(#""l": {"type": "TestLoad", "params": {"path": "\#(dir.path)/gone/f_%d.png"}}, "out": {"type": "TestOutput", "inputs": {"value": "l"}}"#)
        #expect(errors(noFolder).count == 1)
    }

    @Test func reportsAllErrorsAtOnce() {
        let e = errors(#"{"version": 2, "nodes": {"1bad": {}, "a": {"type": "Nope"}, "b": {"type": "TestAdd", "params": {"a": "x"}, "inputs": {"b": "zz"}}, "out": {"type": "TestOutput", "inputs": {"value": "b.sum"}}}}"#)
        #expect(e.count >= 5, "\(e)")
        #expect(e.contains { $0.hasPrefix("error: version: unsupported version 2") })
        #expect(e.contains { $0.contains("invalid node id \"1bad\"") })
    }

    @Test func overridesApplyAndReportUnknownNodes() throws {
        let g = graph(#""a": {"type": "TestValue", "params": {"value": 1}}, "out": {"type": "TestOutput", "inputs": {"value": "a"}}"#)
        let set = try ParamOverride.parse("a.value=7")
        let validated = try check(g, overrides: [set]).get()
        guard case .int(7) = validated.nodes["a"]!.literals["value"] else { Issue.record("override not applied"); return }
        let text = try ParamOverride.parse("a.value=hello")
        guard case .string("hello") = text.value.kind else { Issue.record("non-JSON value should be a string"); return }
        let wrong = check(g, overrides: [try ParamOverride.parse("b.value=1")])
        guard case .failure(let failure) = wrong else { Issue.record("unknown override node accepted"); return }
        #expect(failure.diagnostics.map(\.description) == [#"error: --set b.value: no node "b" (did you mean "a"?)"#])
        #expect(throws: OverrideError.self) { try ParamOverride.parse("novalue") }
    }

    @Test func duplicateRegistrationNamesBothSources() {
        let registry = SyntheticNodes.registry()
        #expect(throws: RegistryError.self) { try registry.register(TestValue.self, source: "/tmp/libOther.so") }
        do {
            try registry.register(TestValue.self, source: "/tmp/libOther.so")
        } catch {
            #expect(error.localizedDescription == #"node type "TestValue" is registered twice: by SyntheticNodes and by /tmp/libOther.so"#)
        }
    }

    @Test func suggestionsAreReasonable() {
        #expect(Suggestions.editDistance("kitten", "sitting") == 3)
        #expect(Suggestions.editDistance("valeu", "value") == 1)
        #expect(Suggestions.closest(to: "loadimage", in: ["LoadImage", "SaveImage"]) == "LoadImage")
        #expect(Suggestions.closest(to: "xyz", in: ["LoadImage"]) == nil)
    }
}
