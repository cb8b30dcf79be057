import LapseNN
import LapseTensor
import LapseWeights

/// RRDB's and SRVGG's wording: every failure is `UpscaleModelError.malformed` naming the architecture.
struct UpscaleWeightWording: WeightErrorWording {
    let architecture: String

    func missing(_ name: String, in weights: Weights) -> any Error {
        UpscaleModelError.malformed(architecture: architecture, reason: "missing tensor \"\(name)\"")
    }

    func wrongShape(_ name: String, expected: [Int], actual: [Int]) -> any Error {
        UpscaleModelError.malformed(architecture: architecture, reason: "\"\(name)\" has shape \(actual), expected \(expected)")
    }
}

/// GRL's and DAT's wording: `TransformerUpscalerError.missingKey` / `.badShape`.
struct TransformerWeightWording: WeightErrorWording {
    let architecture: String

    func missing(_ name: String, in weights: Weights) -> any Error {
        TransformerUpscalerError.missingKey(architecture: architecture, key: name)
    }

    func wrongShape(_ name: String, expected: [Int], actual: [Int]) -> any Error {
        TransformerUpscalerError.badShape(architecture: architecture, key: name, expected: expected, actual: actual)
    }
}

extension WeightReader {
    /// A reader over an unwrapped state dict of a convolutional upscaler (RRDB, SRVGG); the weights' origin is the
    /// architecture's name, which `inferredConv` puts in its errors.
    init(stateDict: [String: Tensor], architecture: String) {
        self.init(Weights(stateDict, origin: architecture), wording: UpscaleWeightWording(architecture: architecture))
    }

    /// A reader over an unwrapped state dict of a transformer upscaler (GRL, DAT).
    init(stateDict: [String: Tensor], transformer architecture: String) {
        self.init(Weights(stateDict, origin: architecture), wording: TransformerWeightWording(architecture: architecture))
    }

    /// A square-kernel "same" convolution `prefix + "weight"` / optional `prefix + "bias"` whose sizes the file
    /// decides: nil dimensions are taken from it, given ones are checked (the convolutional upscalers infer every
    /// hyper-parameter this way).
    func inferredConv(_ prefix: String, out: Int? = nil, in inChannels: Int? = nil, kernel: Int? = 3) throws -> Conv2DLayer {
        let module = String(prefix.dropLast())
        let w = try tensor(prefix + "weight")
        func shapeError(_ key: String, _ shape: [Int], _ expected: String) -> any Error {
            UpscaleModelError.malformed(architecture: weights.origin,
                                        reason: "\"\(key)\" has shape \(shape), expected \(expected)")
        }
        guard w.rank == 4, w.shape[2] == w.shape[3], w.shape[2] % 2 == 1 else {
            throw shapeError(prefix + "weight", w.shape, "a square odd conv kernel")
        }
        if let out, w.shape[0] != out { throw shapeError(module, w.shape, "\(out) output channels") }
        if let inChannels, w.shape[1] != inChannels { throw shapeError(module, w.shape, "\(inChannels) input channels") }
        if let kernel, w.shape[2] != kernel { throw shapeError(module, w.shape, "a \(kernel)×\(kernel) kernel") }
        let bias = try optional(prefix + "bias", [w.shape[0]])
        return Conv2DLayer(weight: w, bias: bias)
    }
}
