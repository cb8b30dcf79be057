import LapseNN
import LapseTensor

extension SRVGGNetwork {
    /// True for the `body.N` ModuleList layout with PReLU parameters at odd indices (Real-ESRGAN's released
    /// animevideov3 / general-x4v3 weights).
    public static func canLoad(_ keys: Set<String>) -> Bool {
        keys.contains("body.0.weight") && keys.contains("body.1.weight") && keys.contains("body.2.weight")
            && !keys.contains("body.0.rdb1.conv1.weight")
    }

    /// Builds the network: `body.0` first conv, `body.(2i+1)` PReLU, `body.(2i+2)` convs, the highest index the last
    /// conv producing `out_ch · scale²` channels for the PixelShuffle.
    public init(stateDict: [String: Tensor]) throws {
        let r = WeightReader(stateDict: stateDict, architecture: "SRVGG")
        let indices = r.indices(under: "body")
        guard let highest = indices.last, highest >= 2, highest % 2 == 0, indices == Array(0...highest) else {
            throw UpscaleModelError.malformed(
                architecture: "SRVGG", reason: "body modules must be numbered 0…2n+2 (conv, PReLU, …, conv), found \(indices)")
        }
        let first = try r.inferredConv("body.0.")
        let features = first.outChannels
        var layers = [first]
        var slopes: [Tensor] = []
        for i in stride(from: 1, to: highest, by: 2) {
            let slope = try r.tensor("body.\(i).weight")
            guard slope.shape == [features] || slope.shape == [1] else {
                throw UpscaleModelError.malformed(
                    architecture: "SRVGG", reason: "PReLU \"body.\(i).weight\" has shape \(slope.shape), expected [\(features)]")
            }
            slopes.append(slope)
            layers.append(try r.inferredConv("body.\(i + 1).", out: i + 1 == highest ? nil : features, in: features))
        }
        let last = layers[layers.count - 1]
        let inChannels = first.inChannels
        // The last conv emits out_ch · scale²; releases keep out_ch == in_ch (RGB).
        var upscale = 0
        for s in 1...8 where last.outChannels == inChannels * s * s { upscale = s }
        guard upscale > 0 else {
            throw UpscaleModelError.malformed(
                architecture: "SRVGG",
                reason: "last conv \"body.\(highest)\" has \(last.outChannels) outputs, not \(inChannels)·scale² for any scale 1…8")
        }
        configuration = Configuration(features: features, convs: (highest - 2) / 2, upscale: upscale,
                                      inChannels: inChannels, outChannels: inChannels)
        self.layers = layers
        self.slopes = slopes
    }
}
