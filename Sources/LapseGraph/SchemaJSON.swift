import Foundation

/// Machine-readable node schemas: what `lapse nodes --json` prints and `lapse serve` answers on `GET /nodes`.
public enum SchemaJSON {
    /// The schemas as JSON text: `{"version": 1, "nodes": [...]}`, or one schema object when `single`.
    public static func render(_ entries: [NodeRegistry.Entry], single: Bool) -> String {
        let objects = entries.map(schema)
        let root: JSONValue = single ? objects[0] : JSONValue(.object([("version", int(1)), ("nodes", JSONValue(.array(objects)))]))
        return pretty(root, indent: "")
    }

    /// One node type's schema as a JSON object.
    public static func schema(_ entry: NodeRegistry.Entry) -> JSONValue {
        let s = entry.schema
        let inputs: [JSONValue] = s.inputs.map { input in
            var members: [(key: String, value: JSONValue)] = [
                ("name", str(input.name)), ("type", str(input.type.name)), ("kind", str(input.type.isValue ? "value" : "data")),
                ("required", JSONValue(.bool(input.isRequired))),
            ]
            if let value = input.defaultValue, let json = json(value) { members.append(("default", json)) }
            if input.optional { members.append(("optional", JSONValue(.bool(true)))) }
            if let min = input.min { members.append(("min", JSONValue(.number(min, integer: nil)))) }
            if let max = input.max { members.append(("max", JSONValue(.number(max, integer: nil)))) }
            if let allowed = input.allowed { members.append(("allowed", JSONValue(.array(allowed.map(str))))) }
            members.append(("doc", str(input.doc)))
            return JSONValue(.object(members))
        }
        let outputs: [JSONValue] = s.outputs.map { output in
            var members: [(key: String, value: JSONValue)] = [("name", str(output.name)), ("type", str(output.type.name))]
            if output.optional { members.append(("optional", JSONValue(.bool(true)))) }
            members.append(("doc", str(output.doc)))
            return JSONValue(.object(members))
        }
        return JSONValue(.object([
            ("type", str(s.type)), ("category", str(s.category)), ("summary", str(s.summary)), ("source", str(entry.source)),
            ("output", JSONValue(.bool(s.isOutput))),
            ("inputFileParams", JSONValue(.array(s.inputFileParams.map(str)))),
            ("outputFileParams", JSONValue(.array(s.outputFileParams.map(str)))),
            ("inputs", JSONValue(.array(inputs))), ("outputs", JSONValue(.array(outputs))),
        ]))
    }

    static func str(_ s: String) -> JSONValue { JSONValue(.string(s)) }
    static func int(_ i: Int) -> JSONValue { JSONValue(.number(Double(i), integer: i)) }

    /// A value literal as JSON; `nil` for data values.
    public static func json(_ value: Value) -> JSONValue? {
        switch value {
        case .int(let i): int(i)
        case .float(let d): JSONValue(.number(d, integer: nil))
        case .bool(let b): JSONValue(.bool(b))
        case .string(let s): str(s)
        case .object: nil
        }
    }

    /// A value literal as JSON text, `(data)` for data values.
    public static func literal(_ value: Value) -> String { json(value)?.jsonText ?? "(data)" }

    /// A bound or default without a needless `.0`.
    public static func number(_ x: Double) -> String { plainNumber(x) }

    /// Indented JSON text (lists of strings stay on one line).
    public static func pretty(_ value: JSONValue, indent: String) -> String {
        let inner = indent + "  "
        switch value.kind {
        case .array(let items) where !items.isEmpty:
            if items.allSatisfy({ if case .string = $0.kind { true } else { false } }) { return value.jsonText }
            return "[\n" + items.map { inner + pretty($0, indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
        case .object(let members) where !members.isEmpty:
            return "{\n" + members.map { inner + JSONValue.quote($0.key) + ": " + pretty($0.value, indent: inner) }
                .joined(separator: ",\n") + "\n\(indent)}"
        case .number(let d, nil) where d == d.rounded() && abs(d) < 1e15:
            return String(Int(d))
        default:
            return value.jsonText
        }
    }
}
