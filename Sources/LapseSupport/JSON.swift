import Foundation

/// A position in a text document, 1-based, for error messages.
public struct TextPosition: Sendable, Hashable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public var description: String { "\(line):\(column)" }
}

/// A parsed JSON value that remembers where it started in the source.
///
/// Graph files are parsed with this instead of `JSONSerialization` because validation messages must point at a line
/// and column, objects must keep their key order (for stable messages) and duplicate keys must be rejected.
public struct JSONValue: Sendable {
    /// The kinds of JSON value.
    public enum Kind: Sendable {
        case null
        case bool(Bool)
        /// A number; `integer` is set when the literal has no fraction or exponent and fits an `Int`.
        case number(Double, integer: Int?)
        case string(String)
        case array([JSONValue])
        /// Members in source order; keys are unique.
        case object([(key: String, value: JSONValue)])
    }

    public var kind: Kind
    public var location: TextPosition

    public init(_ kind: Kind, at location: TextPosition = TextPosition(line: 1, column: 1)) {
        self.kind = kind
        self.location = location
    }

    /// The member named `key` of an object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = kind else { return nil }
        return members.first { $0.key == key }?.value
    }

    /// Short name of the value's JSON type for messages (`string`, `number`, …).
    public var typeName: String {
        switch kind {
        case .null: "null"
        case .bool: "boolean"
        case .number(_, let integer): integer != nil ? "integer" : "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    /// Compact JSON text of the value, with object keys in source order.
    public var jsonText: String {
        switch kind {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d, let integer):
            if let i = integer { return String(i) }
            if d.isFinite, d == d.rounded(), abs(d) < 1e15 { return String(format: "%.1f", d) }
            return "\(d)"
        case .string(let s): return JSONValue.quote(s)
        case .array(let items): return JSONValue.arrayText(items.map(\.jsonText))
        case .object(let members): return JSONValue.objectText(members.map { ($0.key, $0.value.jsonText) })
        }
    }

    /// Compact JSON text of an object from its keys and its values' JSON text, in order: for writers whose values
    /// need a fixed form (`JSONLinesRenderer`'s six-decimal seconds) rather than `jsonText`'s.
    public static func objectText(_ members: [(key: String, text: String)]) -> String {
        "{" + members.map { quote($0.key) + ":" + $0.text }.joined(separator: ",") + "}"
    }

    /// Compact JSON text of an array from its elements' JSON text.
    public static func arrayText(_ elements: [String]) -> String { "[" + elements.joined(separator: ",") + "]" }

    /// A JSON string literal for `s`.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// A JSON syntax error with the position where parsing stopped.
public struct JSONSyntaxError: LocalizedError, Sendable {
    public var message: String
    public var location: TextPosition

    public var errorDescription: String? { "invalid JSON at line \(location.line), column \(location.column): \(message)" }
}

/// A strict RFC 8259 JSON parser over UTF-8 bytes that tracks line and column.
public struct JSONParser {
    /// Deeper nesting than this is refused, so hostile input cannot overflow the stack.
    public static let maximumDepth = 256

    private let bytes: [UInt8]
    /// Accept Python's `NaN`, `Infinity` and `-Infinity` (what `json.dumps` writes for non-finite floats).
    private var allowsNonFinite = false
    private var index = 0
    private var line = 1
    private var lineStart = 0

    private init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Parses one JSON document; trailing non-whitespace is an error.
    public static func parse(_ data: Data) throws(JSONSyntaxError) -> JSONValue {
        try parse(bytes: Array(data))
    }

    /// Parses one JSON document from a string.
    public static func parse(_ text: String) throws(JSONSyntaxError) -> JSONValue {
        try parse(bytes: Array(text.utf8))
    }

    /// Parses one JSON document that may also hold Python's non-finite number literals (`NaN`, `Infinity`,
    /// `-Infinity`), as configuration files written by Python's `json` module (diffusers, transformers) do.
    public static func parse(_ data: Data, allowingNonFiniteNumbers: Bool) throws(JSONSyntaxError) -> JSONValue {
        try parse(bytes: Array(data), allowsNonFinite: allowingNonFiniteNumbers)
    }

    private static func parse(bytes: [UInt8], allowsNonFinite: Bool = false) throws(JSONSyntaxError) -> JSONValue {
        var parser = JSONParser(bytes)
        parser.allowsNonFinite = allowsNonFinite
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { parser.index = 3; parser.lineStart = 3 }
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        if parser.index < bytes.count { throw parser.error("unexpected \(parser.describeCurrent()) after the document") }
        return value
    }

    private var location: TextPosition { TextPosition(line: line, column: index - lineStart + 1) }

    private func error(_ message: String, at location: TextPosition? = nil) -> JSONSyntaxError {
        JSONSyntaxError(message: message, location: location ?? self.location)
    }

    private func describeCurrent() -> String {
        guard index < bytes.count else { return "end of input" }
        let b = bytes[index]
        if b >= 0x21 && b < 0x7F { return "'\(Character(UnicodeScalar(b)))'" }
        return String(format: "byte 0x%02X", b)
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0D: index += 1
            case 0x0A: index += 1; line += 1; lineStart = index
            default: return
            }
        }
    }

    private mutating func parseValue(depth: Int) throws(JSONSyntaxError) -> JSONValue {
        guard index < bytes.count else { throw error("unexpected end of input, expected a value") }
        let start = location
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1, start: start)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1, start: start)
        case UInt8(ascii: "\""): return JSONValue(.string(try parseString()), at: start)
        case UInt8(ascii: "t"): try expectWord("true"); return JSONValue(.bool(true), at: start)
        case UInt8(ascii: "f"): try expectWord("false"); return JSONValue(.bool(false), at: start)
        case UInt8(ascii: "n"): try expectWord("null"); return JSONValue(.null, at: start)
        case UInt8(ascii: "N") where allowsNonFinite: try expectWord("NaN"); return JSONValue(.number(.nan, integer: nil), at: start)
        case UInt8(ascii: "I") where allowsNonFinite:
            try expectWord("Infinity"); return JSONValue(.number(.infinity, integer: nil), at: start)
        case UInt8(ascii: "-") where allowsNonFinite && index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "I"):
            index += 1
            try expectWord("Infinity"); return JSONValue(.number(-.infinity, integer: nil), at: start)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber(start: start)
        default: throw error("unexpected \(describeCurrent()), expected a value")
        }
    }

    private mutating func expectWord(_ word: String) throws(JSONSyntaxError) {
        let start = location
        for expected in word.utf8 {
            guard index < bytes.count, bytes[index] == expected else {
                throw error("invalid literal, expected '\(word)'", at: start)
            }
            index += 1
        }
    }

    private mutating func parseObject(depth: Int, start: TextPosition) throws(JSONSyntaxError) -> JSONValue {
        if depth > JSONParser.maximumDepth { throw error("nesting deeper than \(JSONParser.maximumDepth) levels") }
        index += 1
        var members: [(key: String, value: JSONValue)] = []
        var seen: [String: TextPosition] = [:]
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return JSONValue(.object(members), at: start)
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                throw error("unexpected \(describeCurrent()), expected a string key")
            }
            let keyLocation = location
            let key = try parseString()
            if let first = seen[key] {
                throw error("duplicate key \"\(key)\" (first at line \(first.line), column \(first.column))", at: keyLocation)
            }
            seen[key] = keyLocation
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
                throw error("unexpected \(describeCurrent()), expected ':' after key \"\(key)\"")
            }
            index += 1
            skipWhitespace()
            members.append((key, try parseValue(depth: depth)))
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input, expected ',' or '}'") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "}") { index += 1; return JSONValue(.object(members), at: start) }
            throw error("unexpected \(describeCurrent()), expected ',' or '}'")
        }
    }

    private mutating func parseArray(depth: Int, start: TextPosition) throws(JSONSyntaxError) -> JSONValue {
        if depth > JSONParser.maximumDepth { throw error("nesting deeper than \(JSONParser.maximumDepth) levels") }
        index += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return JSONValue(.array(items), at: start)
        }
        while true {
            skipWhitespace()
            items.append(try parseValue(depth: depth))
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input, expected ',' or ']'") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "]") { index += 1; return JSONValue(.array(items), at: start) }
            throw error("unexpected \(describeCurrent()), expected ',' or ']'")
        }
    }

    private mutating func parseString() throws(JSONSyntaxError) -> String {
        index += 1
        var out: [UInt8] = []
        while true {
            guard index < bytes.count else { throw error("unterminated string") }
            let b = bytes[index]
            switch b {
            case UInt8(ascii: "\""):
                index += 1
                guard let s = String(validating: out, as: UTF8.self) else { throw error("string is not valid UTF-8") }
                return s
            case UInt8(ascii: "\\"):
                index += 1
                guard index < bytes.count else { throw error("unterminated string") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try parseHex4()
                    if (0xD800..<0xDC00).contains(code) {
                        guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                            throw error("unpaired UTF-16 surrogate in \\u escape")
                        }
                        index += 2
                        let low = try parseHex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw error("invalid UTF-16 surrogate pair") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(code) {
                        throw error("unpaired UTF-16 surrogate in \\u escape")
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw error("invalid \\u escape") }
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                default:
                    index -= 1
                    throw error("invalid escape '\\\(Character(UnicodeScalar(escape)))' in string")
                }
            case 0x00..<0x20:
                throw error(b == 0x0A ? "unterminated string (newline inside a string)" : "control character in string")
            default:
                out.append(b)
                index += 1
            }
        }
    }

    private mutating func parseHex4() throws(JSONSyntaxError) -> UInt32 {
        var code: UInt32 = 0
        for _ in 0..<4 {
            guard index < bytes.count else { throw error("unterminated \\u escape") }
            let b = bytes[index]
            let digit: UInt32
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(b - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(b - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(b - UInt8(ascii: "A") + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            code = code * 16 + digit
            index += 1
        }
        return code
    }

    private mutating func parseNumber(start: TextPosition) throws(JSONSyntaxError) -> JSONValue {
        let first = index
        func isDigit(_ i: Int) -> Bool { i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 }
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard isDigit(index) else { throw error("invalid number: expected a digit") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
            if isDigit(index) { throw error("invalid number: leading zero") }
        } else {
            while isDigit(index) { index += 1 }
        }
        var isInteger = true
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            guard isDigit(index) else { throw error("invalid number: expected a digit after '.'") }
            while isDigit(index) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard isDigit(index) else { throw error("invalid number: expected a digit in the exponent") }
            while isDigit(index) { index += 1 }
        }
        let text = String(decoding: bytes[first..<index], as: UTF8.self)
        guard let double = Double(text), double.isFinite else { throw error("number \(text) is out of range", at: start) }
        return JSONValue(.number(double, integer: isInteger ? Int(text) : nil), at: start)
    }
}
