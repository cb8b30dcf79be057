import Foundation
import LapseTensor
import Testing

/// One PyTorch reference case from `Fixtures/ops.json`.
struct OpCase: Sendable, CustomTestStringConvertible {
    let name: String
    let op: String
    let params: [String: JSONValue]
    let inputs: [String: Tensor]
    let outputs: [Tensor]
    var testDescription: String { name }
}

/// A minimal typed view of decoded JSON parameter values.
enum JSONValue: Sendable {
    case number(Double), bool(Bool), string(String), array([JSONValue]), null

    init(_ any: Any) {
        switch any {
        case let b as Bool where type(of: any) == type(of: NSNumber(value: true)): self = .bool(b)
        case let n as NSNumber: self = .number(n.doubleValue)
        case let s as String: self = .string(s)
        case let a as [Any]: self = .array(a.map(JSONValue.init))
        default: self = .null
        }
    }

    var double: Double? { if case .number(let v) = self { return v }; return nil }
    var int: Int? { double.map { Int($0) } }
    var float: Float? { double.map { Float($0) } }
    var bool: Bool? {
        switch self { case .bool(let b): return b; case .number(let n): return n != 0; default: return nil }
    }
    var string: String? { if case .string(let s) = self { return s }; return nil }
    var ints: [Int]? { if case .array(let a) = self { return a.compactMap(\.int) }; return nil }
}

/// Loads the fixture files once; a missing fixture is a test failure with a pointer to the generator script.
enum OpFixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    static let cases: [OpCase] = {
        do { return try load() } catch {
            print("LapseTensorTests: cannot load fixtures (\(error)); regenerate with Tools/fixtures/tensor_ops.py")
            return []
        }
    }()

    static func load() throws -> [OpCase] {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("ops.json")))
        let blob = try Data(contentsOf: directory.appendingPathComponent("ops.bin"))
        let floats: [Float] = blob.withUnsafeBytes { raw in
            Array(raw.bindMemory(to: Float.self)).map { Float(bitPattern: $0.bitPattern.littleEndian) }
        }
        func tensor(_ entry: Any) -> Tensor {
            let dict = entry as! [String: Any]
            let shape = (dict["shape"] as! [NSNumber]).map(\.intValue)
            let offset = (dict["offset"] as! NSNumber).intValue
            let count = Tensor.elementCount(shape)
            return Tensor(shape: shape, data: Array(floats[offset..<(offset + count)]))
        }
        let list = (json as! [String: Any])["cases"] as! [[String: Any]]
        return list.map { c in
            OpCase(name: c["name"] as! String, op: c["op"] as! String,
                   params: (c["params"] as! [String: Any]).mapValues(JSONValue.init),
                   inputs: (c["inputs"] as! [String: Any]).mapValues(tensor),
                   outputs: (c["outputs"] as! [Any]).map(tensor))
        }
    }
}

/// Largest absolute difference divided by the largest reference magnitude (the parity metric of the task).
func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.count == b.count)
    var diff: Float = 0, scale: Float = 0
    let x = a.scalars, y = b.scalars
    for i in 0..<x.count {
        let d = abs(x[i] - y[i])
        if d.isNaN || x[i].isNaN != y[i].isNaN { return .infinity }
        diff = max(diff, d); scale = max(scale, abs(y[i]))
    }
    return diff / max(scale, 1e-12)
}
