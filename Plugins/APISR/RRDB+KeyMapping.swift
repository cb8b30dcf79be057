import Foundation
import LapseNN
import LapseTensor

extension RRDBNetwork {
    /// True for the RRDBNet key layouts: Real-ESRGAN/APISR (`conv_first`, `body.N.rdbK.convJ`), old ESRGAN
    /// (`model.0`, `model.1.sub.N.RDBK.convJ.0`) and BSRGAN/RealSR (`RRDB_trunk.N.RDBK.convJ`).
    public static func canLoad(_ keys: Set<String>) -> Bool {
        (keys.contains("conv_first.weight") && keys.contains("body.0.rdb1.conv1.weight"))
            || (keys.contains("model.0.weight") && keys.contains("model.1.sub.0.RDB1.conv1.0.weight"))
            || (keys.contains("conv_first.weight") && keys.contains("RRDB_trunk.0.RDB1.conv1.weight"))
    }

    /// Builds the network from a state dict in any supported layout, inferring every hyper-parameter from shapes.
    public init(stateDict: [String: Tensor]) throws {
        let r = WeightReader(stateDict: try Self.canonicalized(stateDict), architecture: "RRDB")
        let first = try r.inferredConv("conv_first.")
        let features = first.outChannels
        let blockIndices = r.indices(under: "body")
        guard !blockIndices.isEmpty, blockIndices == Array(0..<blockIndices.count) else {
            throw UpscaleModelError.malformed(architecture: "RRDB",
                                              reason: "RRDB blocks must be numbered 0…N-1, found \(blockIndices)")
        }
        let growth = try r.tensor("body.0.rdb1.conv1.weight").shape[0]
        var blocks: [[[Conv2DLayer]]] = []
        for b in blockIndices {
            var rdbs: [[Conv2DLayer]] = []
            for k in 1...3 {
                var convs: [Conv2DLayer] = []
                for j in 1...5 {
                    convs.append(try r.inferredConv("body.\(b).rdb\(k).conv\(j).", out: j == 5 ? features : growth,
                                            in: features + (j - 1) * growth))
                }
                rdbs.append(convs)
            }
            blocks.append(rdbs)
        }
        let body = try r.inferredConv("conv_body.", out: features, in: features)
        var ups: [Conv2DLayer] = []
        while r.contains("conv_up\(ups.count + 1).weight") {
            ups.append(try r.inferredConv("conv_up\(ups.count + 1).", out: features, in: features))
        }
        let hr = try r.inferredConv("conv_hr.", out: features, in: features)
        let last = try r.inferredConv("conv_last.", in: features)
        let imageChannels = last.outChannels
        // Pixel-unshuffle shows as conv_first taking channels·f² inputs (APISR 2x: 12 = 3·2²).
        let ratio = first.inChannels / max(imageChannels, 1)
        let unshuffle: Int
        switch (first.inChannels % max(imageChannels, 1), ratio) {
        case (0, 1): unshuffle = 1
        case (0, 4): unshuffle = 2
        case (0, 16): unshuffle = 4
        default:
            throw UpscaleModelError.malformed(
                architecture: "RRDB", reason: "conv_first takes \(first.inChannels) channels for a \(imageChannels)-channel "
                    + "output; expected \(imageChannels), \(imageChannels * 4) or \(imageChannels * 16) (pixel-unshuffle)")
        }
        guard (1 << ups.count) >= unshuffle, (1 << ups.count) % unshuffle == 0 else {
            throw UpscaleModelError.malformed(
                architecture: "RRDB", reason: "\(ups.count) upsampling stages cannot undo a pixel-unshuffle of \(unshuffle)")
        }
        configuration = Configuration(features: features, blocks: blocks.count, growth: growth,
                                      upsampleStages: ups.count, unshuffle: unshuffle, imageChannels: imageChannels)
        convFirst = first
        self.blocks = blocks
        convBody = body
        upsampleConvs = ups
        convHR = hr
        convLast = last
    }

    /// Renames any supported layout to the Real-ESRGAN names (`conv_first`, `body.N.rdbK.convJ`, `conv_body`,
    /// `conv_upK`, `conv_hr`, `conv_last`).
    static func canonicalized(_ sd: [String: Tensor]) throws -> [String: Tensor] {
        if sd.keys.contains(where: { $0.contains(".conv1x1.") }) {
            throw UpscaleModelError.malformed(architecture: "RRDB",
                                              reason: "ESRGAN+ weights (RDB conv1x1 branches) are not supported")
        }
        if sd["conv_first.weight"] != nil, sd["body.0.rdb1.conv1.weight"] != nil { return sd }
        var out: [String: Tensor] = [:]
        if sd["RRDB_trunk.0.RDB1.conv1.weight"] != nil {
            // BSRGAN / RealSR naming of the same modules.
            for (key, value) in sd {
                var k = key
                if k.hasPrefix("RRDB_trunk.") {
                    k = "body." + k.dropFirst("RRDB_trunk.".count).replacingOccurrences(of: ".RDB", with: ".rdb")
                } else if k.hasPrefix("trunk_conv.") {
                    k = "conv_body." + k.dropFirst("trunk_conv.".count)
                } else if k.hasPrefix("upconv") {
                    k = "conv_up" + k.dropFirst("upconv".count)
                } else if k.hasPrefix("HRconv.") {
                    k = "conv_hr." + k.dropFirst("HRconv.".count)
                }
                out[k] = value
            }
            return out
        }
        // Old ESRGAN: a Sequential `model`: 0 conv_first, 1 shortcut(sub: N RRDBs + conv_body), then upsample
        // convs (each followed by an activation module), the HR conv, an activation, and the last conv.
        let reader = WeightReader(stateDict: sd, architecture: "RRDB")
        let subIndices = reader.indices(under: "model.1.sub")
        let bodyIndex = subIndices.filter { sd["model.1.sub.\($0).weight"] != nil }.max()
        guard let bodyIndex else {
            throw UpscaleModelError.malformed(architecture: "RRDB",
                                              reason: "old-layout weights without the trunk conv model.1.sub.N.weight")
        }
        let top = reader.indices(under: "model").filter { $0 >= 2 && sd["model.\($0).weight"] != nil }
        guard top.count >= 2 else {
            throw UpscaleModelError.malformed(architecture: "RRDB",
                                              reason: "old-layout weights need at least the HR and last convs after model.1")
        }
        var rename: [String: String] = ["model.0": "conv_first", "model.1.sub.\(bodyIndex)": "conv_body",
                                         "model.\(top[top.count - 2])": "conv_hr", "model.\(top[top.count - 1])": "conv_last"]
        for (i, index) in top.dropLast(2).enumerated() { rename["model.\(index)"] = "conv_up\(i + 1)" }
        for (key, value) in sd {
            let suffix: String
            if key.hasSuffix(".weight") { suffix = "weight" } else if key.hasSuffix(".bias") { suffix = "bias" } else { continue }
            let module = String(key.dropLast(suffix.count + 1))
            if let name = rename[module] {
                out["\(name).\(suffix)"] = value
                continue
            }
            // model.1.sub.N.RDBk.convj.0 → body.N.rdbk.convj
            let parts = module.split(separator: ".")
            if parts.count == 7, parts[0] == "model", parts[1] == "1", parts[2] == "sub", let n = Int(parts[3]),
               parts[4].hasPrefix("RDB"), parts[5].hasPrefix("conv"), parts[6] == "0" {
                out["body.\(n).rdb\(parts[4].dropFirst(3)).\(parts[5]).\(suffix)"] = value
            }
        }
        return out
    }
}
