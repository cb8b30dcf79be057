import Foundation

/// The type of a node port, as schemas, validation and `lapse nodes` see it: a name and the Swift type its values have.
///
/// Value types (`Int`, `Float`, `Bool`, `String`) may be given as a literal in a graph's `params` or linked; data
/// types (`Frames`, `UpscaleModel`, `UNet`, …) must be linked. A data type is declared once, as a `DataType`, which
/// ties the name to its Swift type; `NodeRegistry.register` refuses a second Swift type under a name already in use.
public struct PortType: Hashable, Sendable, CustomStringConvertible {
    /// The name shown in schemas and error messages, e.g. `Frames`.
    public let name: String
    /// True for literal-capable value types.
    public let isValue: Bool
    /// The Swift type of the values on this port, e.g. `DiffusionPlugin.UNetValue` (`Swift.Double` for `Float`).
    public let swiftTypeName: String
    private let swiftType: ObjectIdentifier
    /// Whether an object is of the Swift type (`is`, so a subclass or a conforming type passes).
    private let admits: @Sendable (Any) -> Bool

    fileprivate init<T>(name: String, isValue: Bool, swiftType: T.Type) {
        self.name = name
        self.isValue = isValue
        swiftTypeName = String(reflecting: T.self)
        self.swiftType = ObjectIdentifier(T.self)
        admits = { $0 is T }
    }

    /// The port type of a data type, e.g. `PortType(.frames)`.
    public init<T>(_ dataType: DataType<T>) { self = dataType.portType }

    public static let int = PortType(name: "Int", isValue: true, swiftType: Int.self)
    public static let float = PortType(name: "Float", isValue: true, swiftType: Double.self)
    public static let bool = PortType(name: "Bool", isValue: true, swiftType: Bool.self)
    public static let string = PortType(name: "String", isValue: true, swiftType: String.self)

    /// True when both carry the same Swift type under the same name (what registration holds every use of a name to).
    public static func == (lhs: PortType, rhs: PortType) -> Bool {
        lhs.name == rhs.name && lhs.isValue == rhs.isValue && lhs.swiftType == rhs.swiftType
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(swiftType)
    }

    public var description: String { name }

    /// Why `value` cannot travel on this port, or `nil` when it can. A `Float` port takes an `Int` too, as links do.
    func mismatch(_ value: Value) -> String? {
        switch value {
        case .object(let object):
            if !isValue, admits(object) { return nil }
            return String(reflecting: type(of: object))
        case .int: return self == .int || self == .float ? nil : "Int"
        case .float: return self == .float ? nil : "Float"
        case .bool: return self == .bool ? nil : "Bool"
        case .string: return self == .string ? nil : "String"
        }
    }

    /// How a mismatch names what the port expects: the port-type name, with the Swift type for data types.
    var expectation: String { isValue ? name : "\(name) (\(swiftTypeName))" }
}

/// A data port type tied to the Swift type of its values: declared once per type, used in schemas
/// (`InputSpec("unet", .unet)`) and by the typed accessors (`try inputs.get("unet", .unet)` is a `UNetValue`;
/// `outputs.set("unet", .unet, value)` takes only one).
///
///     extension DataType where Object == UNetValue {
///         public static var unet: DataType<UNetValue> { DataType("UNet") }
///     }
public struct DataType<Object: Sendable>: Sendable {
    /// The type-erased port type schemas list.
    public let portType: PortType

    /// Declares the data type `name` (as schemas and graphs show it) for values of type `Object`.
    public init(_ name: String) { portType = PortType(name: name, isValue: false, swiftType: Object.self) }

    /// The name shown in schemas, e.g. `UNet`.
    public var name: String { portType.name }
}

extension DataType where Object == Frames {
    /// A stream of images or video frames (see `Frames`).
    public static var frames: DataType<Frames> { DataType("Frames") }
}

/// A value flowing between nodes or given as a parameter.
public enum Value: @unchecked Sendable {
    case int(Int)
    case float(Double)
    case bool(Bool)
    case string(String)
    /// A data value (frames, tensors, a model, …): set with `NodeOutputs.set`, read with `NodeInputs.get`, which
    /// tie it to its port's `DataType`; the executor checks what a node produced against its declared outputs.
    case object(any Sendable)
}

/// One input port (or parameter) of a node type.
public struct InputSpec: Sendable {
    public var name: String
    public var type: PortType
    /// Value used when the graph gives none; `nil` with `optional == false` makes the input required.
    public var defaultValue: Value?
    /// An input that may be left unconnected with no default.
    public var optional: Bool
    /// Inclusive bounds for `Int` and `Float` values.
    public var min: Double?
    public var max: Double?
    /// Allowed values for an enumerated `String` input, or for an `Int` input as decimal strings (`["8", "16"]`).
    public var allowed: [String]?
    /// Values of an input-file parameter that name no file (Sample's `scheduler_config` `auto`): validation does not
    /// look for them on disk and batch runs do not make them absolute.
    public var keywords: [String]
    /// One line shown by `lapse nodes TYPE`.
    public var doc: String

    public init(_ name: String, _ type: PortType, default defaultValue: Value? = nil, optional: Bool = false,
                min: Double? = nil, max: Double? = nil, allowed: [String]? = nil, keywords: [String] = [], doc: String = "") {
        self.name = name
        self.type = type
        self.defaultValue = defaultValue
        self.optional = optional
        self.min = min
        self.max = max
        self.allowed = allowed
        self.keywords = keywords
        self.doc = doc
    }

    /// A data input, which graphs link (it takes no literal, so no default or bounds).
    public init<T>(_ name: String, _ type: DataType<T>, optional: Bool = false, doc: String = "") {
        self.init(name, type.portType, optional: optional, doc: doc)
    }

    /// Whether `value` of this input-file parameter is a path (not empty, not one of `keywords`).
    public func namesFile(_ value: String) -> Bool { !value.isEmpty && !keywords.contains(value) }

    /// True when a graph must provide this input.
    public var isRequired: Bool { defaultValue == nil && !optional }
}

/// One output port of a node type.
public struct OutputSpec: Sendable {
    public var name: String
    public var type: PortType
    /// An output the node may leave empty in a run (`NodeOutputs.leaveEmpty`), e.g. a loader's component whose file
    /// param was left empty: the graph still validates and runs, and only a node that reads it fails, with the reason.
    public var optional: Bool
    public var doc: String

    public init(_ name: String, _ type: PortType, optional: Bool = false, doc: String = "") {
        self.name = name
        self.type = type
        self.optional = optional
        self.doc = doc
    }

    /// A data output.
    public init<T>(_ name: String, _ type: DataType<T>, optional: Bool = false, doc: String = "") {
        self.init(name, type.portType, optional: optional, doc: doc)
    }
}

/// What a node type declares about itself: everything validation and `lapse nodes` need.
public struct NodeSchema: Sendable {
    /// The type name used in graphs, e.g. `Upscale`.
    public var type: String
    /// Grouping for `lapse nodes`, e.g. `image/upscaling`.
    public var category: String
    /// One-line summary.
    public var summary: String
    public var inputs: [InputSpec]
    public var outputs: [OutputSpec]
    /// Output nodes (savers) are the roots execution starts from.
    public var isOutput: Bool
    /// Names of `String` inputs that are paths to files that must exist before the graph runs.
    public var inputFileParams: [String]
    /// Names of `String` inputs that are paths this node writes.
    public var outputFileParams: [String]
    /// Checks that relate several parameters (ranges and allowed values are declared per input), run by validation
    /// on the literal parameters, defaults included, so a bad combination is refused before anything runs.
    public var checkParameters: ParameterCheck?

    /// A cross-parameter check: the problems it finds, each with the parameter to blame.
    public typealias ParameterCheck = @Sendable (_ params: [String: Value]) -> [ParameterProblem]

    public init(type: String, category: String, summary: String, inputs: [InputSpec] = [], outputs: [OutputSpec] = [],
                isOutput: Bool = false, inputFileParams: [String] = [], outputFileParams: [String] = [],
                checkParameters: ParameterCheck? = nil) {
        self.type = type
        self.category = category
        self.summary = summary
        self.inputs = inputs
        self.outputs = outputs
        self.isOutput = isOutput
        self.inputFileParams = inputFileParams
        self.outputFileParams = outputFileParams
        self.checkParameters = checkParameters
    }
}

/// One problem a `NodeSchema.checkParameters` check found.
public struct ParameterProblem: Sendable, Equatable {
    /// The parameter the message is about.
    public var parameter: String
    /// What is wrong and how to fix it.
    public var message: String

    public init(parameter: String, message: String) {
        self.parameter = parameter
        self.message = message
    }
}

/// A processor node type. Adding a node is one type conforming to this protocol plus one `register` line.
public protocol Node: Sendable {
    /// The node type's declaration.
    static var schema: NodeSchema { get }
    /// Creates an instance; one instance runs once per graph node execution.
    init()
    /// Computes the outputs from resolved inputs. Long work reports progress and checks cancellation via `context`.
    func run(_ inputs: NodeInputs, context: NodeContext) throws -> NodeOutputs
}

/// Errors a node raises about its own inputs; the runtime adds the node id and type.
public enum NodeError: LocalizedError, Sendable {
    case missingInput(String)
    case wrongInputType(port: String, expected: String, actual: String)
    /// The input is linked to an optional output its producer left empty in this run.
    case emptyInput(port: String, source: EmptyOutput)
    case invalidValue(port: String, reason: String)
    /// The node put a value of another type on a declared output (caught by the executor).
    case wrongOutputType(port: String, expected: String, actual: String)
    /// The node left a declared output empty that is not optional (caught by the executor).
    case missingOutput(String)
    case failed(String)

    public var errorDescription: String? {
        switch self {
        case .missingInput(let port): "input \"\(port)\" was not provided"
        case .wrongInputType(let port, let expected, let actual): "input \"\(port)\" is \(actual), expected \(expected)"
        case .emptyInput(let port, let source):
            "input \"\(port)\": node \"\(source.nodeID)\" left its output \"\(source.output)\" empty: \(source.reason)"
        case .invalidValue(let port, let reason): "\(port): \(reason)"
        case .wrongOutputType(let port, let expected, let actual):
            "declared output \"\(port)\" is \(expected), but the node produced \(actual) (a bug in the node)"
        case .missingOutput(let port):
            "declared output \"\(port)\" was not produced (only outputs declared optional may be left empty)"
        case .failed(let message): message
        }
    }
}

/// An optional output left empty upstream, as the node linked to it sees it: reading the input fails with this.
public struct EmptyOutput: Sendable, Equatable {
    /// The graph node that left it empty.
    public var nodeID: String
    /// Its output port.
    public var output: String
    /// Why, and how to get a value (the param to set, the input to link).
    public var reason: String

    /// `reason` `nil` when the producer gave none (or its result came from a `--cache-dir` entry, which keeps values only).
    public init(nodeID: String, output: String, reason: String?) {
        self.nodeID = nodeID
        self.output = output
        self.reason = reason ?? "it produced no value in this run"
    }
}

/// Resolved inputs of one node execution: literals, defaults and upstream outputs by port name.
public struct NodeInputs: Sendable {
    public private(set) var values: [String: Value]
    /// Inputs linked to optional outputs their producers left empty; reading one fails naming the producer.
    public private(set) var empty: [String: EmptyOutput]

    public init(_ values: [String: Value], empty: [String: EmptyOutput] = [:]) {
        self.values = values
        self.empty = empty
    }

    /// True when the port has a value (given, linked or defaulted), or is linked to an output left empty (reading it
    /// then fails with the reason, rather than the node taking it for unlinked).
    public func has(_ port: String) -> Bool { values[port] != nil || empty[port] != nil }

    public func int(_ port: String) throws -> Int {
        switch try value(port) {
        case .int(let v): return v
        case .float(let v) where v.rounded() == v: return Int(v)
        default: throw NodeError.wrongInputType(port: port, expected: "Int", actual: describe(port))
        }
    }

    public func float(_ port: String) throws -> Double {
        switch try value(port) {
        case .float(let v): return v
        case .int(let v): return Double(v)
        default: throw NodeError.wrongInputType(port: port, expected: "Float", actual: describe(port))
        }
    }

    public func bool(_ port: String) throws -> Bool {
        guard case .bool(let v) = try value(port) else {
            throw NodeError.wrongInputType(port: port, expected: "Bool", actual: describe(port))
        }
        return v
    }

    public func string(_ port: String) throws -> String {
        guard case .string(let v) = try value(port) else {
            throw NodeError.wrongInputType(port: port, expected: "String", actual: describe(port))
        }
        return v
    }

    /// The data value on a port, of its data type's Swift type: `try inputs.get("unet", .unet)` is a `UNetValue`.
    public func get<T>(_ port: String, _ type: DataType<T>) throws -> T {
        guard case .object(let any) = try value(port), let typed = any as? T else {
            throw NodeError.wrongInputType(port: port, expected: type.portType.expectation, actual: describe(port))
        }
        return typed
    }

    /// The frame stream on a `Frames` port.
    public func frames(_ port: String) throws -> Frames { try get(port, .frames) }

    /// The value on a port; an input linked to an empty output fails here with the producer's reason.
    public func value(_ port: String) throws -> Value {
        if let v = values[port] { return v }
        if let source = empty[port] { throw NodeError.emptyInput(port: port, source: source) }
        throw NodeError.missingInput(port)
    }

    private func describe(_ port: String) -> String {
        switch values[port] {
        case .int: "Int"
        case .float: "Float"
        case .bool: "Bool"
        case .string: "String"
        case .object(let o): String(describing: type(of: o))
        case nil: "missing"
        }
    }
}

/// Outputs of one node execution by port name.
public struct NodeOutputs: Sendable {
    public var values: [String: Value]
    /// Why each optional output left empty is empty (`leaveEmpty`), for the error of a node that reads it.
    public private(set) var emptyReasons: [String: String] = [:]

    /// Value outputs (`["value": .int(3)]`); data outputs go through `set` so their Swift type is checked.
    public init(_ values: [String: Value] = [:]) { self.values = values }

    /// A node's one data output: `NodeOutputs("frames", .frames, stream)`.
    public init<T>(_ port: String, _ type: DataType<T>, _ value: T) {
        values = [port: .object(value)]
    }

    /// Puts a data value on an output; `value` must be of the data type's Swift type.
    public mutating func set<T>(_ port: String, _ type: DataType<T>, _ value: T) {
        values[port] = .object(value)
        emptyReasons[port] = nil
    }

    /// Leaves an output declared `optional` empty; a node that reads it fails with `reason`, which should say how to
    /// get a value (the param to set, the input to link).
    public mutating func leaveEmpty(_ port: String, reason: String) {
        values[port] = nil
        emptyReasons[port] = reason
    }

    /// Outputs of a node with no outputs (a saver).
    public static let none = NodeOutputs()
}

extension NodeSchema {
    /// Why `outputs` do not match the declared outputs: a required one missing, or a value not of its port's type
    /// (a plugin's bug, caught here once rather than by every reader). Undeclared extra values are ignored.
    func outputProblem(_ outputs: NodeOutputs) -> NodeError? {
        for spec in self.outputs {
            guard let value = outputs.values[spec.name] else {
                if spec.optional { continue }
                return .missingOutput(spec.name)
            }
            if let actual = spec.type.mismatch(value) {
                return .wrongOutputType(port: spec.name, expected: spec.type.expectation, actual: actual)
            }
        }
        return nil
    }
}

/// Thrown by `NodeContext.checkCancellation()` once the run was cancelled (Ctrl-C).
public struct CancellationError: LocalizedError, Sendable {
    public init() {}
    public var errorDescription: String? { "cancelled" }
}

/// What a running node may ask of the runtime: progress, cancellation, logging.
///
/// Contexts are handed to `Node.run` and may be captured by lazily evaluated `Frames` sources, which report
/// progress while a downstream node pulls frames.
public protocol NodeContext: Sendable {
    /// The graph node id being executed.
    var nodeID: String { get }
    /// The node's type name.
    var nodeType: String { get }
    /// Reports `step` of `total` (total 0 when unknown). `unit` names what is counted (`step`, `tile`, `frame`).
    func progress(step: Int, total: Int, unit: String)
    /// True once cancellation was requested.
    var isCancelled: Bool { get }
    /// Throws `CancellationError` once cancellation was requested; call between steps.
    func checkCancellation() throws
    /// A message for the log (shown unless `--quiet`).
    func log(_ message: String)
    /// A folder private to this execution of this node (its cache key: same inputs and params, same folder) where a
    /// long-running node may keep its finished work so a re-run after a crash resumes; `nil` unless the run has a
    /// cache directory (`--cache-dir`).
    var workDirectory: URL? { get }
}

extension NodeContext {
    public var workDirectory: URL? { nil }

    public func progress(step: Int, total: Int) { progress(step: step, total: total, unit: "step") }

    public func checkCancellation() throws {
        if isCancelled { throw CancellationError() }
    }
}
