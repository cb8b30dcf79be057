import Foundation
import Testing
import LapseGraph
import LapseTestSupport

/// A model-like data value and a second Swift type that tries to travel under the same port-type name.
struct TestModel: Sendable { let size: Int }
struct OtherModel: Sendable {}

extension DataType where Object == TestModel {
    static var testModel: DataType<TestModel> { DataType("TestModel") }
}

/// Makes a `TestModel`, or leaves its optional output empty when `empty` is set.
struct MakeModel: Node {
    static let schema = NodeSchema(
        type: "MakeModel", category: "test", summary: "A model, or nothing.",
        inputs: [InputSpec("size", .int, default: .int(3)), InputSpec("empty", .bool, default: .bool(false))],
        outputs: [OutputSpec("model", .testModel, optional: true)])
    init() {}
    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        var outputs = NodeOutputs()
        if try inputs.bool("empty") {
            outputs.leaveEmpty("model", reason: "MakeModel was told to make none; set its empty param to false")
        } else {
            outputs.set("model", .testModel, TestModel(size: try inputs.int("size")))
        }
        return outputs
    }
}

/// Reads a `TestModel` and hands its size on.
struct ModelSize: Node {
    static let schema = NodeSchema(
        type: "ModelSize", category: "test", summary: "The model's size.",
        inputs: [InputSpec("model", .testModel)], outputs: [OutputSpec("value", .int)])
    init() {}
    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        NodeOutputs(["value": .int(try inputs.get("model", .testModel).size)])
    }
}

/// A buggy plugin node: declares a `TestModel` output and puts another Swift type on it.
struct WrongModel: Node {
    static let schema = NodeSchema(type: "WrongModel", category: "test", summary: "Emits the wrong type.",
                                   outputs: [OutputSpec("model", .testModel)])
    init() {}
    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs {
        NodeOutputs(["model": .object(OtherModel())])
    }
}

/// A node that leaves a required output empty.
struct ForgetfulModel: Node {
    static let schema = NodeSchema(type: "ForgetfulModel", category: "test", summary: "Emits nothing.",
                                   outputs: [OutputSpec("model", .testModel)])
    init() {}
    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs { NodeOutputs() }
}

/// A plugin node declaring the name `TestModel` for another Swift type.
struct ClashingModel: Node {
    static let schema = NodeSchema(type: "ClashingModel", category: "test", summary: "Reuses a port-type name.",
                                   inputs: [InputSpec("model", DataType<OtherModel>("TestModel"))])
    init() {}
    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs { .none }
}

/// A plugin node naming a data type after a value type.
struct DataNamedInt: Node {
    static let schema = NodeSchema(type: "DataNamedInt", category: "test", summary: "A data type called Int.",
                                   outputs: [OutputSpec("value", DataType<OtherModel>("Int"))])
    init() {}
    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs { .none }
}

@Suite struct TypedPortTests {
    /// The synthetic nodes plus the model nodes above.
    static func registry() throws -> NodeRegistry {
        let registry = SyntheticNodes.registry()
        for node: any Node.Type in [MakeModel.self, ModelSize.self, WrongModel.self, ForgetfulModel.self] {
            try registry.register(node, source: "TypedPortTests")
        }
        return registry
    }

    /// Runs `nodes` (graph JSON members) ending in a `TestOutput` of group `g`; the error message, or nil.
    static func runMessage(_ nodes: String) throws -> String? {
        let registry = try registry()
        let validated = try GraphValidator(registry: registry)
            .validate(data: Data(graph(nodes).utf8), name: "g.json").get()
        do {
            _ = try Executor(registry: registry).run(validated)
            return nil
        } catch {
            return error.localizedDescription
        }
    }

    @Test func typedValuesTravelBetweenNodes() throws {
        let g = uniqueGroup()
        let message = try Self.runMessage(#""m": {"type": "MakeModel", "params": {"size": 7}}, "s": {"type": "ModelSize", "inputs": {"model": "m.model"}}, "out": {"type": "TestOutput", "inputs": {"value": "s"}, "params": {"group": "\#(g)"}}"#)
        #expect(message == nil)
        #expect(SyntheticState.output(g) == 7)
    }

    @Test func registrationRefusesANameReusedForAnotherSwiftType() throws {
        let registry = try Self.registry()
        #expect {
            try registry.register(ClashingModel.self, source: "/plugins/libclash.so")
        } throws: { error in
            guard case .conflictingPortType(let name, let first, _, let second, let use)? = error as? RegistryError else { return false }
            let text = error.localizedDescription
            return name == "TestModel" && first.hasSuffix(".TestModel") && second.hasSuffix(".OtherModel")
                && use.contains("ClashingModel") && use.contains("/plugins/libclash.so")
                && text.contains("MakeModel") && text.contains("own name")
        }
        #expect(registry.entry(for: "ClashingModel") == nil)
        // Through a plugin's registrar: recorded as the plugin's error, the node left out, the others kept.
        let registrar = PluginRegistrar(registry: registry, source: "/plugins/libclash.so")
        registrar.register(ClashingModel.self)
        registrar.register(DataNamedInt.self)
        #expect(registrar.errors.count == 2 && registrar.registered.isEmpty)
        #expect(registrar.errors.last?.localizedDescription.contains("port type \"Int\" is Swift.Int (the graph runtime)") == true)
        #expect(registry.entry(for: "MakeModel") != nil && registry.entry(for: "DataNamedInt") == nil)
    }

    @Test func samePortTypeFromTwoNodesRegisters() throws {
        let registry = NodeRegistry()
        try registry.register(ModelSize.self, source: "a")
        try registry.register(MakeModel.self, source: "b")
        #expect(registry.all.count == 2)
        #expect(PortType(.testModel) == ModelSize.schema.inputs[0].type)
        #expect(PortType(.testModel) != PortType(DataType<OtherModel>("TestModel")))
    }

    @Test func executorRefusesAWrongSwiftTypeOnAnOutput() throws {
        let g = uniqueGroup()
        let message = try Self.runMessage(#""w": {"type": "WrongModel"}, "s": {"type": "ModelSize", "inputs": {"model": "w"}}, "out": {"type": "TestOutput", "inputs": {"value": "s"}, "params": {"group": "\#(g)"}}"#)
        let text = try #require(message)
        #expect(text.hasPrefix(#"node "w" (WrongModel): declared output "model" is TestModel ("#), "\(text)")
        #expect(text.contains(".TestModel)") && text.contains("produced LapseGraphTests.OtherModel"), "\(text)")
        #expect(SyntheticState.output(g) == nil)
    }

    @Test func executorRefusesAMissingRequiredOutput() throws {
        let message = try Self.runMessage(#""f": {"type": "ForgetfulModel"}, "s": {"type": "ModelSize", "inputs": {"model": "f"}}, "out": {"type": "TestOutput", "inputs": {"value": "s"}, "params": {"group": "\#(uniqueGroup())"}}"#)
        #expect(message == #"node "f" (ForgetfulModel): declared output "model" was not produced (only outputs declared optional may be left empty)"#)
    }

    @Test func readingAnEmptyOptionalOutputNamesTheProducerAndWhy() throws {
        let g = uniqueGroup()
        let message = try Self.runMessage(#""m": {"type": "MakeModel", "params": {"empty": true}}, "s": {"type": "ModelSize", "inputs": {"model": "m.model"}}, "out": {"type": "TestOutput", "inputs": {"value": "s"}, "params": {"group": "\#(g)"}}"#)
        #expect(message == #"node "s" (ModelSize): input "model": node "m" left its output "model" empty: MakeModel was told to make none; set its empty param to false"#)
        #expect(SyntheticState.output(g) == nil)
    }

    @Test func typedAccessorsCheckTheSwiftType() throws {
        let inputs = NodeInputs(["model": .object(OtherModel()), "n": .int(2)],
                                empty: ["gone": EmptyOutput(nodeID: "load", output: "model", reason: nil)])
        #expect(inputs.has("gone") && !inputs.has("absent"))
        let wrong = MediaTestSupport.errorMessage { _ = try inputs.get("model", .testModel) }
        #expect(wrong?.hasPrefix(#"input "model" is OtherModel, expected TestModel ("#) == true, "\(wrong ?? "")")
        let empty = MediaTestSupport.errorMessage { _ = try inputs.int("gone") }
        #expect(empty == #"input "gone": node "load" left its output "model" empty: it produced no value in this run"#)
        #expect(MediaTestSupport.errorMessage { _ = try inputs.get("absent", .testModel) } == #"input "absent" was not provided"#)
        var outputs = NodeOutputs()
        outputs.leaveEmpty("model", reason: "none")
        outputs.set("model", .testModel, TestModel(size: 1))
        #expect(outputs.emptyReasons.isEmpty && outputs.values["model"] != nil)
    }
}
