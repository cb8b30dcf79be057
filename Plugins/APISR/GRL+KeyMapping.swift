import Foundation
import LapseTensor

/// Why a GRL or DAT state dict could not be turned into a network.
public enum TransformerUpscalerError: LocalizedError, Sendable, Equatable {
    /// A key the architecture needs is absent.
    case missingKey(architecture: String, key: String)
    /// A tensor exists but its shape does not fit the inferred hyper-parameters.
    case badShape(architecture: String, key: String, expected: [Int], actual: [Int])
    /// The state dict is a variant of the architecture this port does not implement.
    case unsupported(architecture: String, detail: String)
    /// `forward` was given something other than `[1, 3, H, W]`.
    case badInput(architecture: String, shape: [Int])

    /// A sentence naming the architecture and the key, shape or input at fault.
    public var errorDescription: String? {
        switch self {
        case let .missingKey(arch, key):
            return "\(arch) state dict: missing key '\(key)'"
        case let .badShape(arch, key, expected, actual):
            return "\(arch) state dict: '\(key)' has shape \(actual), expected \(expected)"
        case let .unsupported(arch, detail):
            return "\(arch) state dict: unsupported variant (\(detail))"
        case let .badInput(arch, shape):
            return "\(arch) forward: expected an input of shape [1, 3, H, W], got \(shape)"
        }
    }
}

/// Typed access to an unwrapped state dict, so every lookup failure names the key and the architecture.
struct TransformerStateDict {
    let architecture: String
    let dict: [String: Tensor]

    func has(_ key: String) -> Bool { dict[key] != nil }

    func tensor(_ key: String) throws -> Tensor {
        guard let t = dict[key] else { throw TransformerUpscalerError.missingKey(architecture: architecture, key: key) }
        return t
    }

    /// The tensor under `key`, checked against `shape` (PyTorch layout).
    func tensor(_ key: String, shape: [Int]) throws -> Tensor {
        let t = try tensor(key)
        guard t.shape == shape else {
            throw TransformerUpscalerError.badShape(architecture: architecture, key: key, expected: shape, actual: t.shape)
        }
        return t
    }

    /// The tensor under `key` if present, checked against `shape`.
    func optional(_ key: String, shape: [Int]) throws -> Tensor? {
        guard has(key) else { return nil }
        return try tensor(key, shape: shape)
    }

    func shape(_ key: String) throws -> [Int] { try tensor(key).shape }

    /// Number of consecutive children `prefix.0.`, `prefix.1.`, … (PyTorch ModuleList length).
    func sequenceLength(_ prefix: String) -> Int {
        let marker = prefix + "."
        var indices = Set<Int>()
        for key in dict.keys where key.hasPrefix(marker) {
            let rest = key.dropFirst(marker.count)
            if let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]) { indices.insert(i) }
        }
        var n = 0
        while indices.contains(n) { n += 1 }
        return n
    }

    /// A linear layer `[out, in]` (+ optional bias `[out]`).
    func linear(_ prefix: String, in inFeatures: Int, out outFeatures: Int, bias: Bool = true) throws -> TLinear {
        let w = try tensor(prefix + ".weight", shape: [outFeatures, inFeatures])
        let b = bias ? try tensor(prefix + ".bias", shape: [outFeatures]) : try optional(prefix + ".bias", shape: [outFeatures])
        return TLinear(weight: w, bias: b)
    }

    /// A convolution `[out, in/groups, k, k]` with bias.
    func conv(_ prefix: String, in inChannels: Int, out outChannels: Int, kernel: Int, groups: Int = 1) throws -> TConv {
        let w = try tensor(prefix + ".weight", shape: [outChannels, inChannels / groups, kernel, kernel])
        let b = try tensor(prefix + ".bias", shape: [outChannels])
        return TConv(weight: w, bias: b, padding: kernel / 2, groups: groups)
    }

    /// A LayerNorm / affine vector pair `weight`, `bias` of length `dim`.
    func norm(_ prefix: String, dim: Int) throws -> TNorm {
        TNorm(weight: try tensor(prefix + ".weight", shape: [dim]), bias: try tensor(prefix + ".bias", shape: [dim]))
    }

    /// An inference-mode BatchNorm2d.
    func batchNorm(_ prefix: String, dim: Int) throws -> TBatchNorm {
        TBatchNorm(mean: try tensor(prefix + ".running_mean", shape: [dim]),
                         variance: try tensor(prefix + ".running_var", shape: [dim]),
                         weight: try tensor(prefix + ".weight", shape: [dim]),
                         bias: try tensor(prefix + ".bias", shape: [dim]))
    }
}

/// `y = x Wᵀ + b` over the last dimension.
struct TLinear: Sendable {
    let weight: Tensor
    let bias: Tensor?
    func callAsFunction(_ x: Tensor) -> Tensor { linear(x, weight: weight, bias: bias) }
}

/// A 2-D convolution with "same" padding.
struct TConv: Sendable {
    let weight: Tensor
    let bias: Tensor
    let padding: Int
    let groups: Int
    func callAsFunction(_ x: Tensor, activation: Activation? = nil) -> Tensor {
        conv2d(x, weight: weight, bias: bias, padding: padding, groups: groups, activation: activation)
    }
}

/// LayerNorm over the last dimension (eps 1e-5, PyTorch's default).
struct TNorm: Sendable {
    let weight: Tensor
    let bias: Tensor
    func callAsFunction(_ x: Tensor) -> Tensor { layerNorm(x, weight: weight, bias: bias) }
}

/// BatchNorm2d with running statistics (inference).
struct TBatchNorm: Sendable {
    let mean: Tensor
    let variance: Tensor
    let weight: Tensor
    let bias: Tensor
    func callAsFunction(_ x: Tensor) -> Tensor {
        batchNorm(x, mean: mean, variance: variance, weight: weight, bias: bias)
    }
}

extension GRLNetwork {
    /// Hyper-parameters of a GRL generator, read from a state dict.
    struct Config: Sendable, Equatable {
        var embedDim: Int
        var depths: [Int]
        var headsWindow: [Int]
        var headsStripe: [Int]
        var mlpHidden: Int
        var windowSize: Int
        var stripeSize: [Int]
        var anchorDownFactor: Int
        var reconstructionFeatures: Int
        var inChannels: Int
        var outChannels: Int
    }

    /// Infers the configuration; what the state dict cannot say comes from APISR's released "tiny2" config
    /// (window 8, stripes 8×8, anchor down-factor 2, no stripe shift).
    static func inferConfig(_ r: TransformerStateDict) throws -> Config {
        let first = try r.shape("conv_first.weight")
        guard first.count == 4 else {
            throw TransformerUpscalerError.badShape(architecture: "GRL", key: "conv_first.weight", expected: [-1, 3, 3, 3], actual: first)
        }
        let embed = first[0]
        let stages = r.sequenceLength("layers")
        guard stages > 0 else { throw TransformerUpscalerError.missingKey(architecture: "GRL", key: "layers.0.blocks.0.attn.qkv.body.weight") }
        var depths: [Int] = [], hw: [Int] = [], hs: [Int] = []
        for i in 0..<stages {
            let d = r.sequenceLength("layers.\(i).blocks")
            guard d > 0 else { throw TransformerUpscalerError.missingKey(architecture: "GRL", key: "layers.\(i).blocks.0.attn.qkv.body.weight") }
            depths.append(d)
            hw.append(try r.shape("layers.\(i).blocks.0.attn.window_attn.attn_transform.logit_scale")[0])
            hs.append(try r.shape("layers.\(i).blocks.0.attn.stripe_attn.attn_transform1.logit_scale")[0])
        }
        guard r.has("layers.0.blocks.0.attn.qkv.body.weight") else {
            throw TransformerUpscalerError.unsupported(architecture: "GRL", detail: "only the linear qkv projection is implemented")
        }
        guard r.has("layers.0.blocks.0.attn.anchor.body.0.reduction.weight"), r.sequenceLength("layers.0.blocks.0.attn.anchor.body") == 1 else {
            throw TransformerUpscalerError.unsupported(architecture: "GRL", detail: "only the one-stage avgpool anchor projection is implemented")
        }
        if r.has("layers.0.blocks.0.conv.cab.0.weight") {
            throw TransformerUpscalerError.unsupported(architecture: "GRL", detail: "local_connection (CAB) blocks")
        }
        guard r.has("conv_up1.weight"), r.has("conv_before_upsample.0.weight") else {
            throw TransformerUpscalerError.unsupported(architecture: "GRL", detail: "only the 'nearest+conv' ×4 upsampler of APISR is implemented")
        }
        let afterBody = try r.shape("conv_after_body.weight")
        guard afterBody.count == 4, afterBody[2] == 3 else {
            throw TransformerUpscalerError.unsupported(architecture: "GRL", detail: "only conv_type '1conv' is implemented")
        }
        let hidden = try r.shape("layers.0.blocks.0.mlp.fc1.weight")[0]

        var window = 8, stripe = [8, 8], downFactor = 2
        // The release carries its size-dependent tables; their shapes pin the size-independent settings.
        if let tw = r.dict["table_w"], tw.rank == 4 { window = (tw.shape[1] + 1) / 2 }
        if let idx = r.dict["index_sh_a2w"], idx.rank == 2, let ts = r.dict["table_sh"], ts.rank == 4 {
            let ratio = Double(max(idx.shape[0], idx.shape[1])) / Double(max(1, min(idx.shape[0], idx.shape[1])))
            downFactor = Int(ratio.squareRoot().rounded())
            // table side = s + s / df - 1
            func invert(_ side: Int) -> Int { Int((Double(side + 1) / (1 + 1 / Double(downFactor))).rounded()) }
            stripe = [invert(ts.shape[1]), invert(ts.shape[2])]
        }
        let feats = try r.shape("conv_before_upsample.0.weight")[0]
        let outCh = try r.shape("conv_last.weight")[0]
        return Config(embedDim: embed, depths: depths, headsWindow: hw, headsStripe: hs, mlpHidden: hidden,
                      windowSize: window, stripeSize: stripe, anchorDownFactor: downFactor,
                      reconstructionFeatures: feats, inChannels: first[1], outChannels: outCh)
    }
}
