import Foundation
import LapseTensor
import LapseWeights
import Testing

@Suite("Weights collection")
struct WeightsTests {
    var weights: Weights {
        Weights(["body.0.conv.weight": Tensor(zeros: [4, 3, 3, 3]), "body.0.conv.bias": Tensor(zeros: [4]),
                 "head.weight": Tensor(shape: [2], data: [1, 2])], origin: "model.safetensors")
    }

    @Test func requireChecksShapesAndSuggestsNames() throws {
        #expect(try weights.require("head.weight", shape: [2]).scalars == [1, 2])
        #expect(throws: WeightsError.shapeMismatch(file: "model.safetensors", name: "head.weight", expected: [3], actual: [2])) {
            try weights.require("head.weight", shape: [3])
        }
        do {
            _ = try weights.require("body.0.cnv.weight")
            Issue.record("expected missingTensor")
        } catch WeightsError.missingTensor(let file, let name, let suggestions) {
            #expect(file == "model.safetensors" && name == "body.0.cnv.weight")
            #expect(suggestions.first == "body.0.conv.weight")
        }
    }

    @Test func strippingScopingRenaming() throws {
        let w = weights
        #expect(Set(w.stripping(prefix: "body.0.").keys) == ["conv.weight", "conv.bias", "head.weight"])
        #expect(Set(w.scoped("body.0.").keys) == ["conv.weight", "conv.bias"])
        let renamed = w.renamed([.substring(".conv.", ".convolution."), .exact("head.weight", "tail.weight"), .prefix("body.", "trunk.")])
        #expect(Set(renamed.keys) == ["trunk.0.convolution.weight", "trunk.0.convolution.bias", "tail.weight"])
        #expect(renamed.shape(of: "tail.weight") == [2])
        var m = w
        m["extra"] = Tensor(zeros: [1])
        m["head.weight"] = nil
        #expect(m.count == 3 && m.contains("extra") && !m.contains("head.weight"))
    }

    /// Parts scoped out of one state dict add back together under their prefixes, the later part winning a clash.
    @Test func addingReassemblesScopedParts() throws {
        let w = weights
        let body = w.scoped("body.0."), head = w.scoped("head.")
        let joined = Weights(origin: "parts").adding(body, prefix: "body.0.").adding(head, prefix: "head.")
        #expect(Set(joined.keys) == Set(w.keys))
        #expect(joined.shape(of: "body.0.conv.weight") == w.shape(of: "body.0.conv.weight"))
        let clash = joined.adding(Weights(["head.weight": Tensor(zeros: [7])]))
        #expect(clash.count == joined.count && clash.shape(of: "head.weight") == [7])
    }

    @Test func strictReportListsMissingUnexpectedAndCloseMatches() throws {
        let expected: [String: [Int]?] = ["body.0.convolution.weight": [4, 3, 3, 3], "body.0.conv.bias": [5], "head.weight": nil]
        let report = weights.report(expected: expected)
        #expect(report.missing == ["body.0.convolution.weight"])
        #expect(report.unexpected == ["body.0.conv.weight"])
        #expect(report.closeMatches["body.0.convolution.weight"] == ["body.0.conv.weight"])
        #expect(report.shapeMismatches == [.init(name: "body.0.conv.bias", expected: [5], actual: [4])])
        #expect(!report.isClean)
        #expect(throws: WeightsError.keyMismatch(file: "model.safetensors", report: report)) { try weights.checkStrict(expected: expected) }
        let text = WeightsError.keyMismatch(file: "model.safetensors", report: report).errorDescription ?? ""
        #expect(text.contains("missing 1 key(s): body.0.convolution.weight") && text.contains("did you mean body.0.conv.weight?"))
        try weights.checkStrict(expected: ["body.0.conv.weight": [4, 3, 3, 3], "body.0.conv.bias": [4], "head.weight": [2]])
    }

    @Test func lazyCollectionOverACheckpoint() throws {
        let w = try Weights.load(Paths.fixture("plain.pth"))
        #expect(w.origin == Paths.fixture("plain.pth"))
        #expect(w.shape(of: "conv.weight") == [3, 2, 3, 3])
        #expect(try w.require("conv.weight", shape: [3, 2, 3, 3]).count == 54)
    }
}
