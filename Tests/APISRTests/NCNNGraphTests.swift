import Foundation
import Testing
import APISRPlugin
import LapseWeights

/// The ncnn conversion runs Lapse's own network, so it must verify the graph as written: edited copies of the real
/// Real-ESRGAN `.param` files (same `.bin`) that compute something else must be refused, naming the layer.
@Suite("ncnn graph verification")
struct NCNNGraphTests {
    /// Copies a real model pair into a fresh folder with its `.param` text edited; returns the `.param` path.
    func edited(_ model: String, _ edit: (inout [String]) throws -> Void) throws -> String {
        let param = try APISRFixtures.realModel("\(model).param")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lapse-ncnn-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var lines = try String(contentsOfFile: param, encoding: .utf8).components(separatedBy: "\n")
        try edit(&lines)
        try lines.joined(separator: "\n").write(toFile: dir + "/m.param", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: (param as NSString).deletingPathExtension + ".bin", toPath: dir + "/m.bin")
        return dir + "/m.param"
    }

    /// Replaces the fields of the layer named `name` (type, name, counts, blobs, params as in the file).
    func replace(_ lines: inout [String], layer name: String, with transform: ([String]) -> [String]) throws {
        let index = try #require(lines.firstIndex { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.map(String.init) == name })
        lines[index] = transform(lines[index].split(separator: " ", omittingEmptySubsequences: true).map(String.init)).joined(separator: " ")
    }

    func expectRefused(_ path: String, naming layer: String, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try UpscaleModelLoader.load(path: path)
            Issue.record("\(path) loaded", sourceLocation: sourceLocation)
        } catch {
            let message = error.localizedDescription
            #expect(message.contains(path), "\(message)", sourceLocation: sourceLocation)
            #expect(message.contains(layer) && message.contains(text), "\(message)", sourceLocation: sourceLocation)
        }
    }

    @Test("the real files load unchanged")
    func realFilesLoad() throws {
        for model in ["realesrgan-x4plus-anime", "realesr-animevideov3-x2", "realesr-animevideov3-x3", "realesr-animevideov3-x4"] {
            _ = try UpscaleModelLoader.load(path: try edited(model) { _ in })
        }
    }

    @Test("a BinaryOp that is not add is refused", arguments: ["0=2", "0=1", "0=9", "1=1 2=3.0"])
    func binaryOpCode(params: String) throws {
        let path = try edited("realesr-animevideov3-x4") { try replace(&$0, layer: "Add_38") { $0 + params.split(separator: " ").map(String.init) } }
        expectRefused(path, naming: "Add_38", "BinaryOp")
    }

    @Test("a group count or another parameter the converter does not know is refused")
    func groupCount() throws {
        let path = try edited("realesr-animevideov3-x4") { try replace(&$0, layer: "Conv_2") { $0 + ["7=2"] } }
        expectRefused(path, naming: "Conv_2", "parameter 7=2 is not one the converter understands")
        let stride = try edited("realesr-animevideov3-x4") { try replace(&$0, layer: "Conv_4") { $0 + ["3=2"] } }
        expectRefused(stride, naming: "Conv_4", "parameter 3=2 must be 1")
    }

    @Test("a layer reading another blob than the stock graph is refused")
    func rewiredInput() throws {
        // Conv_4 reads PReLU_1's output instead of PReLU_3's: PReLU_3's output is left unread.
        let path = try edited("realesr-animevideov3-x4") { try replace(&$0, layer: "Conv_4") { f in f.map { $0 == "59" ? "56" : $0 } } }
        expectRefused(path, naming: "Conv_4", "which layer")
    }

    @Test("a blob cycle is refused")
    func cycle() throws {
        // Conv_2 reads the output of Conv_4, which (through PReLU_3) reads Conv_2's output.
        let path = try edited("realesr-animevideov3-x4") { try replace(&$0, layer: "Conv_2") { f in f.map { $0 == "56" ? "60" : $0 } } }
        expectRefused(path, naming: "Conv_2", "before any layer writes it")
    }

    @Test("RRDB: a Concat in another order is refused")
    func concatOrder() throws {
        let path = try edited("realesrgan-x4plus-anime") { try replace(&$0, layer: "Concat_3") { f in
            f.map { $0 == "193_splitncnn_6" ? "195_splitncnn_3" : $0 == "195_splitncnn_3" ? "193_splitncnn_6" : $0 } } }
        expectRefused(path, naming: "Concat_3", "in that order")
    }

    @Test("RRDB: a residual with other coefficients or another operand is refused")
    func residuals() throws {
        let coefficients = try edited("realesrgan-x4plus-anime") { try replace(&$0, layer: "Add_16") { f in
            f.map { $0.hasPrefix("-23301=") ? "-23301=2,5.000000e-01,1.000000e+00" : $0 } } }
        expectRefused(coefficients, naming: "Add_16", "coefficients")
        // The first block's residual adds the trunk's first features instead of the block input (swap two split outputs).
        let operand = try edited("realesrgan-x4plus-anime") { lines in
            try replace(&lines, layer: "Add_16") { f in f.map { $0 == "193_splitncnn_2" ? "193_splitncnn_1" : $0 } }
            try replace(&lines, layer: "Add_51") { f in f.map { $0 == "193_splitncnn_1" ? "193_splitncnn_2" : $0 } }
        }
        _ = try UpscaleModelLoader.load(path: operand)  // the same blob either way: both outputs of one Split
        let wrong = try edited("realesrgan-x4plus-anime") { lines in
            // Add_51 (the end of the first RRDB block) adds the second block's input instead of the first's.
            try replace(&lines, layer: "Add_51") { f in f.map { $0 == "193_splitncnn_1" ? "209_splitncnn_0" : $0 } }
            try replace(&lines, layer: "Add_32") { f in f.map { $0 == "209_splitncnn_0" ? "193_splitncnn_1" : $0 } }
        }
        expectRefused(wrong, naming: "Concat_28", "rdb2's input")
    }

    @Test("a layer type the networks do not have is refused")
    func unknownType() throws {
        // Same weights in the .bin, but a depthwise convolution computes something else.
        let path = try edited("realesr-animevideov3-x4") { try replace(&$0, layer: "Conv_2") { f in ["ConvolutionDepthWise"] + f.dropFirst() + ["7=1"] } }
        expectRefused(path, naming: "Conv_2", "no ConvolutionDepthWise layers")
    }
}
