import Foundation
import LapseTensor
import Testing

/// kornia 0.7.2's `gaussian_blur2d` and `resize(antialias=True)` (Fixtures/gaussian_blur.json, made by
/// Tools/fixtures/openclip_vision.py).
@Suite struct GaussianBlurTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let entry: [String: JSONValue]
        let input: Tensor
        let output: [Float]
        var testDescription: String {
            let op = entry["op"]?.string ?? "?"
            return op == "blur" ? "blur \(entry["kernel"]?.ints ?? []) \(entry["border"]?.string ?? "")"
                : "resize \(input.shape) → \(entry["size"]?.ints ?? []) \(entry["mode"]?.string ?? "")"
        }
    }

    static let cases: [Case] = {
        guard let data = try? Data(contentsOf: OpFixtures.directory.appendingPathComponent("gaussian_blur.json")),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let rows = json["cases"] as? [[String: Any]] else {
            print("GaussianBlurTests: Fixtures/gaussian_blur.json missing; regenerate with Tools/fixtures/openclip_vision.py")
            return []
        }
        return rows.map { row in
            let shape = (row["shape"] as! [NSNumber]).map(\.intValue)
            let input = (row["input"] as! [NSNumber]).map(\.floatValue)
            return Case(entry: row.mapValues(JSONValue.init), input: Tensor(shape: shape, data: input),
                        output: (row["output"] as! [NSNumber]).map(\.floatValue))
        }
    }()

    @Test func fixtureLoaded() { #expect(Self.cases.count == 9) }

    @Test(arguments: cases)
    func matchesKornia(_ c: Case) throws {
        let out: Tensor
        if c.entry["op"]?.string == "blur" {
            let k = try #require(c.entry["kernel"]?.ints), s = try #require(c.entry["sigma"])
            guard case .array(let sigmas) = s else { Issue.record("sigma is not a list"); return }
            let border: PaddingMode = switch c.entry["border"]?.string {
            case "reflect": .reflect
            case "replicate": .replicate
            default: .zeros
            }
            out = gaussianBlur2d(c.input, kernelHeight: k[0], kernelWidth: k[1], sigmaY: try #require(sigmas[0].float),
                                 sigmaX: try #require(sigmas[1].float), border: border)
            #expect(out.shape == c.input.shape)
        } else {
            let size = try #require(c.entry["size"]?.ints)
            let mode: ResizeMode = c.entry["mode"]?.string == "bicubic" ? .bicubic : .bilinear
            out = gaussianAntialiasedResize(c.input, height: size[0], width: size[1], mode: mode,
                                            alignCorners: try #require(c.entry["align_corners"]?.bool))
            #expect(out.shape == [c.input.shape[0], c.input.shape[1], size[0], size[1]])
        }
        let err = zip(out.scalars, c.output).map { abs($0 - $1) }.max() ?? .infinity
        #expect(err <= 1e-5, "max abs error \(err)")
    }

    /// The reflect border does not repeat the edge: a 3-tap blur of [1, 0, 0] sees 0 on both sides of index 0.
    @Test func reflectBorderSkipsTheEdgePixel() {
        let x = Tensor(shape: [1, 1, 1, 3], data: [1, 0, 0])
        let out = gaussianBlur2d(x, kernelHeight: 1, kernelWidth: 3, sigmaY: 1, sigmaX: 1).scalars
        let side = Float(Foundation.exp(-0.5)), centre = 1 / (1 + 2 * side)
        #expect(abs(out[0] - centre) < 1e-6 && abs(out[1] - side * centre) < 1e-6 && abs(out[2]) < 1e-7)
    }
}
