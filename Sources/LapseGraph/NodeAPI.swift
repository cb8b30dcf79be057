import Foundation

/// The type of a node port.
///
/// Value types (`Int`, `Float`, `Bool`, `String`) may be given as a literal in a graph's `params` or linked; data
/// types (`Frames`, `Tensors`, `UpscaleModel`, …) must be linked. Plugins declare new data types with
/// `PortType(data:)`.
public struct PortType: Hashable, Sendable, CustomStringConvertible {
    /// The name shown in schemas and error messages, e.g. `Frames`.
    public let name: String
    /// True for literal-capable value types.
    public let isValue: Bool

    /// Declares a data type that can only travel over links.
    public init(data name: String) {
        self.name = name
        isValue = false
    }

    private init(value name: String) {
        self.name = name
        isValue = true
    }

    public static let int = PortType(value: "Int")
    public static let float = PortType(value: "Float")
    public static let bool = PortType(value: "Bool")
    public static let string = PortType(value: "String")
    /// A stream of images or video frames (see `Frames`).
    public static let frames = PortType(data: "Frames")
    /// A named collection of tensors.
    public static let tensors = PortType(data: "Tensors")

    public var description: String { name }
}

/// A value flowing between nodes or given as a parameter.
public enum Value: @unchecked Sendable {
    case int(Int)
    case float(Double)
    case bool(Bool)
    case string(String)
    /// A data value (frames, tensors, a model, …); its dynamic type is checked by the accessors of `NodeInputs`.
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

    /// Whether `value` of this input-file parameter is a path (not empty, not one of `keywords`).
    public func namesFile(_ value: String) -> Bool { !value.isEmpty && !keywords.contains(value) }

    /// True when a graph must provide this input.
    public var isRequired: Bool { defaultValue == nil && !optional }
}

/// One output port of a node type.
public struct OutputSpec: Sendable {
    public var name: String
    public var type: PortType
    public var doc: String

    public init(_ name: String, _ type: PortType, doc: String = "") {
        self.name = name
        self.type = type
        self.doc = doc
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
    case invalidValue(port: String, reason: String)
    case failed(String)

    public var errorDescription: String? {
        switch self {
        case .missingInput(let port): "input \"\(port)\" was not provided"
        case .wrongInputType(let port, let expected, let actual): "input \"\(port)\" is \(actual), expected \(expected)"
        case .invalidValue(let port, let reason): "\(port): \(reason)"
        case .failed(let message): message
        }
    }
}

/// What a node puts on a declared output it cannot fill in this run, e.g. a loader's optional component whose
/// file was left empty: the graph still validates and runs, and only a node that reads the value fails, with
/// `reason` (which should say which param to set).
public struct UnavailableOutput: Sendable {
    /// Why the value is missing and how to provide it.
    public let reason: String

    /// An output that fails its readers with `reason`.
    public init(reason: String) { self.reason = reason }
}

/// Resolved inputs of one node execution: literals, defaults and upstream outputs by port name.
public struct NodeInputs: Sendable {
    public private(set) var values: [String: Value]

    public init(_ values: [String: Value]) { self.values = values }

    /// True when the port has a value (given, linked or defaulted).
    public func has(_ port: String) -> Bool { values[port] != nil }

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

    /// A data value of a specific Swift type, e.g. `try inputs.object("model", as: UpscaleModel.self)`.
    ///
    /// An `UnavailableOutput` on the port fails here with its reason, so a node never sees it.
    public func object<T>(_ port: String, as type: T.Type) throws -> T {
        if case .object(let any) = try value(port), let unavailable = any as? UnavailableOutput {
            throw NodeError.invalidValue(port: port, reason: unavailable.reason)
        }
        guard case .object(let any) = try value(port), let typed = any as? T else {
            throw NodeError.wrongInputType(port: port, expected: String(describing: T.self), actual: describe(port))
        }
        return typed
    }

    /// The frame stream on a `Frames` port.
    public func frames(_ port: String) throws -> Frames { try object(port, as: Frames.self) }

    public func value(_ port: String) throws -> Value {
        guard let v = values[port] else { throw NodeError.missingInput(port) }
        return v
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

    public init(_ values: [String: Value] = [:]) { self.values = values }

    /// Outputs of a node with no outputs (a saver).
    public static let none = NodeOutputs()
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
