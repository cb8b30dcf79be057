import Foundation
import LapseTensor
import Testing

/// Every op and option against PyTorch results from Tools/fixtures/tensor_ops.py.
@Suite("Op parity with PyTorch")
struct OpParityTests {
    /// Ops computed elementwise (or pure data movement) must match to 1e-5; reductions over many terms to 1e-4.
    static let elementwiseOps: Set<String> = [
        "add", "sub", "mul", "div", "addScalar", "subScalar", "mulScalar", "divScalar", "scalarSub", "scalarDiv",
        "exp", "sqrt", "tanh", "clamp", "relu", "leakyReLU", "silu", "gelu", "geluTanh", "quickGELU", "sigmoid",
        "activate", "prelu", "pixelShuffle", "pixelUnshuffle", "pad", "roll", "concat", "split", "chunk", "permute",
        "transpose", "slice",
    ]

    @Test func fixturesPresent() {
        #expect(OpFixtures.cases.count > 150, "ops fixtures missing: run Tools/fixtures/tensor_ops.py")
    }

    @Test(arguments: OpFixtures.cases)
    func parity(_ c: OpCase) throws {
        let results = try Self.run(c)
        try #require(results.count == c.outputs.count, "\(c.name): \(results.count) outputs, expected \(c.outputs.count)")
        let tolerance: Float = Self.elementwiseOps.contains(c.op) ? 1e-5 : 1e-4
        for (got, want) in zip(results, c.outputs) {
            #expect(got.shape == want.shape, "\(c.name): shape \(got.shape) vs \(want.shape)")
            guard got.shape == want.shape else { continue }
            let err = relativeError(got, want)
            #expect(err <= tolerance, "\(c.name): relative error \(err) > \(tolerance)")
        }
    }

    /// The figures behind the closing notes: the worst relative error of each tolerance class over every case.
    @Test func worstErrorsStayWithinTolerance() throws {
        var worst: [Bool: (error: Float, name: String)] = [true: (0, ""), false: (0, "")]
        for c in OpFixtures.cases {
            let elementwise = Self.elementwiseOps.contains(c.op)
            for (got, want) in zip(try Self.run(c), c.outputs) where got.shape == want.shape {
                let err = relativeError(got, want)
                if err > worst[elementwise]!.error { worst[elementwise] = (err, c.name) }
            }
        }
        print("op parity over \(OpFixtures.cases.count) cases: worst elementwise/data-movement \(worst[true]!.error) "
              + "(\(worst[true]!.name)), worst conv/norm/attention/reduction \(worst[false]!.error) (\(worst[false]!.name))")
        #expect(worst[true]!.error <= 1e-5)
        #expect(worst[false]!.error <= 1e-4)
    }

    struct MissingInput: Error, CustomStringConvertible {
        let name: String
        var description: String { "fixture input \(name) missing" }
    }

    static func activation(_ name: String?, slope: Float) -> Activation? {
        switch name {
        case "relu": return .relu
        case "leakyReLU": return .leakyReLU(slope)
        case "silu": return .silu
        case "gelu": return .gelu
        case "geluTanh": return .geluTanh
        case "quickGELU": return .quickGELU
        case "sigmoid": return .sigmoid
        default: return nil
        }
    }

    static func paddingMode(_ name: String?) -> PaddingMode {
        switch name { case "reflect": return .reflect; case "replicate": return .replicate; default: return .zeros }
    }

    /// Maps a fixture case onto the public API.
    static func run(_ c: OpCase) throws -> [Tensor] {
        func input(_ key: String) throws -> Tensor {
            guard let t = c.inputs[key] else { throw MissingInput(name: key) }
            return t
        }
        let p = c.params
        func int(_ k: String, _ d: Int = 0) -> Int { p[k]?.int ?? d }
        func float(_ k: String) -> Float? { p[k]?.float }
        func bool(_ k: String) -> Bool { p[k]?.bool ?? false }
        switch c.op {
        case "add": return [try input("a") + input("b")]
        case "sub": return [try input("a") - input("b")]
        case "mul": return [try input("a") * input("b")]
        case "div": return [try input("a") / input("b")]
        case "addScalar": return [try input("x") + float("s")!]
        case "subScalar": return [try input("x") - float("s")!]
        case "mulScalar": return [try input("x") * float("s")!]
        case "divScalar": return [try input("x") / float("s")!]
        case "scalarSub": return [try float("s")! - input("x")]
        case "scalarDiv": return [try float("s")! / input("x")]
        case "exp": return [exp(try input("x"))]
        case "sqrt": return [sqrt(try input("x"))]
        case "tanh": return [tanh(try input("x"))]
        case "clamp": return [clamp(try input("x"), min: float("min"), max: float("max"))]
        case "relu": return [relu(try input("x"))]
        case "leakyReLU": return [leakyReLU(try input("x"), slope: float("slope")!)]
        case "silu": return [silu(try input("x"))]
        case "gelu": return [gelu(try input("x"))]
        case "geluTanh": return [gelu(try input("x"), approximateTanh: true)]
        case "quickGELU": return [quickGELU(try input("x"))]
        case "sigmoid": return [sigmoid(try input("x"))]
        case "activate":
            return [activate(try input("x"), activation(p["activation"]?.string, slope: float("slope") ?? 0)!)]
        case "prelu": return [prelu(try input("x"), weight: try input("w"))]
        case "matmul":
            return [matmul(try input("a"), try input("b"), transposeA: bool("transposeA"), transposeB: bool("transposeB"))]
        case "linear": return [linear(try input("x"), weight: try input("w"), bias: c.inputs["b"])]
        case "conv2d":
            return [conv2d(try input("x"), weight: try input("w"), bias: c.inputs["b"], stride: int("stride", 1),
                           padding: int("padding"), dilation: int("dilation", 1), groups: int("groups", 1),
                           paddingMode: paddingMode(p["mode"]?.string),
                           activation: activation(p["activation"]?.string, slope: float("slope") ?? 0))]
        case "conv1d":
            return [conv1d(try input("x"), weight: try input("w"), bias: c.inputs["b"], stride: int("stride", 1),
                           padding: int("padding"), dilation: int("dilation", 1), groups: int("groups", 1))]
        case "conv3d":
            return [conv3d(try input("x"), weight: try input("w"), bias: c.inputs["b"], stride: p["stride"]!.ints!,
                           padding: p["padding"]!.ints!)]
        case "layerNorm":
            return [layerNorm(try input("x"), weight: c.inputs["w"], bias: c.inputs["b"], eps: float("eps")!)]
        case "groupNorm":
            return [groupNorm(try input("x"), groups: int("groups"), weight: c.inputs["w"], bias: c.inputs["b"],
                              eps: float("eps")!)]
        case "batchNorm":
            return [batchNorm(try input("x"), mean: try input("m"), variance: try input("v"), weight: c.inputs["w"],
                              bias: c.inputs["b"], eps: float("eps")!)]
        case "softmax": return [softmax(try input("x"), axis: int("axis"))]
        case "attention":
            return [attention(query: try input("q"), key: try input("k"), value: try input("v"), mask: c.inputs["mask"],
                              scale: float("scale"))]
        case "cosineAttention":
            let q = try input("q"), k = try input("k"), v = try input("v"), ls = try input("ls")
            if let maxLogit = float("maxLogit") {
                return [cosineAttention(query: q, key: k, value: v, logitScale: ls, maxLogit: maxLogit, mask: c.inputs["mask"])]
            }
            return [cosineAttention(query: q, key: k, value: v, logitScale: ls, mask: c.inputs["mask"])]
        case "pixelShuffle": return [pixelShuffle(try input("x"), factor: int("factor"))]
        case "pixelUnshuffle": return [pixelUnshuffle(try input("x"), factor: int("factor"))]
        case "resize":
            let mode: ResizeMode = switch p["mode"]?.string { case "nearest": .nearest; case "bicubic": .bicubic; default: .bilinear }
            return [resize(try input("x"), height: int("height"), width: int("width"), mode: mode,
                           alignCorners: bool("alignCorners"), antialias: bool("antialias"))]
        case "pad":
            return [pad(try input("x"), left: int("left"), right: int("right"), top: int("top"), bottom: int("bottom"),
                        mode: paddingMode(p["mode"]?.string), value: float("value") ?? 0)]
        case "roll": return [roll(try input("x"), shifts: p["shifts"]!.ints!, axes: p["axes"]!.ints!)]
        case "avgPool2d":
            return [avgPool2d(try input("x"), kernel: int("kernel"), stride: p["stride"]?.int, padding: int("padding"))]
        case "adaptiveAvgPool2d": return [adaptiveAvgPool2d(try input("x"), height: int("height"), width: int("width"))]
        case "concat":
            let xs = try (0..<c.inputs.count).map { try input("x\($0)") }
            return [concat(xs, axis: int("axis"))]
        case "split": return split(try input("x"), sizes: p["sizes"]!.ints!, axis: int("axis"))
        case "chunk": return chunk(try input("x"), int("count"), axis: int("axis"))
        case "permute": return [permute(try input("x"), p["axes"]!.ints!)]
        case "transpose": return [transpose(try input("x"), int("a"), int("b"))]
        case "slice":
            return [slice(try input("x"), axis: int("axis"), start: int("start"), end: int("end"), step: int("step", 1))]
        case "mean": return [mean(try input("x"), axes: p["axes"]!.ints!, keepDims: bool("keepDims"))]
        case "sum": return [sum(try input("x"), axes: p["axes"]!.ints!, keepDims: bool("keepDims"))]
        case "timestepEmbedding":
            return [timestepEmbedding(try input("t").scalars, dim: int("dim"), flipSinToCos: bool("flip"),
                                      downscaleFreqShift: float("shift")!)]
        default:
            Issue.record("unknown op \(c.op) in fixture \(c.name)")
            return []
        }
    }
}

/// The optional Winograd 3×3 path against the same PyTorch conv fixtures (both algorithms are correct, so toggling
/// the process-wide switch cannot break tests running concurrently).
@Suite("Winograd convolution")
struct WinogradTests {
    @Test func matchesTorch() throws {
        let cases = OpFixtures.cases.filter { $0.op == "conv2d" }
        #expect(cases.count > 10)
        let previous = ConvolutionTuning.winograd, previousTiles = ConvolutionTuning.winogradMinimumTiles
        ConvolutionTuning.winograd = true
        ConvolutionTuning.winogradMinimumTiles = 1  // the fixtures are small; take Winograd wherever it can run
        defer { ConvolutionTuning.winograd = previous; ConvolutionTuning.winogradMinimumTiles = previousTiles }
        for c in cases {
            let got = try OpParityTests.run(c)[0]
            #expect(got.shape == c.outputs[0].shape, "\(c.name)")
            let err = relativeError(got, c.outputs[0])
            #expect(err <= 1e-4, "\(c.name) (winograd): relative error \(err)")
        }
    }
}
