import Foundation
import LapseSupport
import LapseTensor
import LapseWeights

/// Turns the ncnn layer graphs that Real-ESRGAN ships (realesrgan-x4plus(-anime), realesr-animevideov3-x2/x3/x4)
/// back into PyTorch state dicts, so ncnn files go through the same detection and the same networks as `.pth` files.
///
/// Lapse runs its own network, not the ncnn graph, so the graph is verified as written before its weights are
/// used: every layer type and every parameter must be one the converter understands with the value the
/// architecture needs (group-free 3×3 'same' convolutions, BinaryOp add, Eltwise 0.2·x + y, nearest ×2 Interp, …),
/// blobs must be written before they are read (no cycles) and read exactly once (Split fans them out), and the
/// wiring — which blob feeds which layer, the order of every Concat, both operands of every residual add — must be
/// exactly RRDBNet's or SRVGGNetCompact's. Anything else is refused with the layer and what differs.
enum NCNNConversion {
    /// A converted model: a state dict in Real-ESRGAN names, plus an output resize some ncnn exports append
    /// (animevideov3-x2/x3 are the ×4 network followed by a bicubic ×0.5 / ×0.75 Interp).
    struct Converted {
        var stateDict: [String: Tensor]
        var architecture: UpscaleArchitecture
        /// Output resize as a fraction (numerator, denominator), nil when the network output is final.
        var outputResize: (numerator: Int, denominator: Int)?
    }

    /// What a blob holds: the operation that computed it and the nodes it read. Split is resolved away (its
    /// outputs are the node it read), so two blobs hold the same value exactly when they have the same node.
    struct Node {
        enum Op: Equatable {
            case input
            /// A convolution; `leakySlope` is its fused LeakyReLU (nil: none).
            case conv(layer: Int, leakySlope: Float?)
            case prelu(layer: Int)
            case concat
            /// Eltwise sum with one coefficient per input.
            case weightedSum([Float])
            case add
            /// Interp: 1 nearest, 3 bicubic; equal height and width scales.
            case resize(mode: Int, scale: Float)
            case pixelShuffle(Int)
        }
        var op: Op
        var args: [Int]
        var channels: Int
        /// The layer that computed it (for messages).
        var layer: Int
    }

    struct Graph {
        var nodes: [Node]
        var layers: [NCNNLayer]
        var input: Int
        var output: Int

        func node(_ id: Int) -> Node { nodes[id] }
        func describe(_ id: Int) -> String {
            let l = layers[nodes[id].layer]
            return "layer \(TerminalText.quoted(l.name, limit: 80)) (\(l.type))"
        }
    }

    static func convert(_ checkpoint: CheckpointFile, model: NCNNModel) throws -> Converted {
        let file = checkpoint.path
        func fail(_ reason: String) -> UpscaleModelError { .unsupportedNCNN(file: file, reason: reason) }
        // Which architecture the graph claims to be, from its layer types; the walk below then verifies all of it.
        let types = Set(model.layers.map(\.type))
        let rrdb = types.contains("Concat") || types.contains("Eltwise")
        guard rrdb || types.contains("PReLU") || types.contains("PixelShuffle") else {
            let counts = Dictionary(grouping: model.layers, by: \.type).map { "\($0.key) ×\($0.value.count)" }.sorted()
            throw fail("layer types \(counts.joined(separator: ", ")) match neither RRDB (Convolution/Concat/Eltwise) "
                + "nor SRVGGNetCompact (Convolution/PReLU/PixelShuffle)")
        }
        let graph = try build(checkpoint, model: model, fail: fail)
        return rrdb ? try convertRRDB(checkpoint, graph, fail: fail) : try convertSRVGG(checkpoint, graph, fail: fail)
    }

    // MARK: - Reading the graph as written

    /// Walks the layers in file order, checking each one's parameters and inputs, and returns the node graph.
    static func build(_ checkpoint: CheckpointFile, model: NCNNModel, fail: (String) -> UpscaleModelError) throws -> Graph {
        var nodes: [Node] = []
        var producer: [String: Int] = [:]
        var writer: [String: String] = [:]
        var reader: [String: String] = [:]
        var input: Int?
        for (index, layer) in model.layers.enumerated() {
            let name = "layer \(TerminalText.quoted(layer.name, limit: 80)) (\(layer.type))"
            func bad(_ reason: String) -> UpscaleModelError { fail("\(name): \(reason)") }
            func arity(_ inputs: ClosedRange<Int>, _ outputs: ClosedRange<Int>) throws {
                guard inputs.contains(layer.inputs.count), outputs.contains(layer.outputs.count) else {
                    throw bad("has \(layer.inputs.count) inputs and \(layer.outputs.count) outputs; expected \(text(inputs)) and \(text(outputs))")
                }
            }
            /// Only these parameter ids, each passing its check (absent parameters take ncnn's default).
            func params(_ allowed: [Int: (value: (NCNNParam) -> Bool, meaning: String)]) throws {
                for id in layer.params.keys.sorted() {
                    guard let rule = allowed[id] else {
                        throw bad("parameter \(id)=\(show(layer.params[id]!)) is not one the converter understands for \(layer.type)")
                    }
                    guard rule.value(layer.params[id]!) else {
                        throw bad("parameter \(id)=\(show(layer.params[id]!)) must be \(rule.meaning)")
                    }
                }
            }
            func int(_ expected: Int) -> (value: (NCNNParam) -> Bool, meaning: String) {
                ({ $0 == .int(expected) || $0 == .float(Float(expected)) }, "\(expected)")
            }
            // Inputs: written by an earlier layer (so no cycles) and read by no other layer.
            var args: [Int] = []
            for blob in layer.inputs {
                guard let id = producer[blob] else {
                    throw bad("reads blob \(TerminalText.quoted(blob, limit: 80)) before any layer writes it (a cycle, or layers out of order)")
                }
                if let other = reader[blob] {
                    throw bad("reads blob \(TerminalText.quoted(blob, limit: 80)), which layer \(TerminalText.quoted(other, limit: 80)) reads too; ncnn shares a blob only through Split")
                }
                reader[blob] = layer.name
                args.append(id)
            }
            let channels = args.map { nodes[$0].channels }
            var node: Node?
            switch layer.type {
            case "Input":
                try arity(0...0, 1...1)
                try params([0: ({ ($0.int ?? 0) > 0 }, "a positive width"), 1: ({ ($0.int ?? 0) > 0 }, "a positive height"),
                            2: int(3)])
                guard input == nil else { throw bad("a second Input layer; the networks take one image") }
                node = Node(op: .input, args: [], channels: 3, layer: index)
                input = nodes.count
            case "Split":
                try arity(1...1, 1...64)
                try params([:])
            case "Convolution":
                try arity(1...1, 1...1)
                let k = layer.int(1)
                let same: (NCNNParam) -> Bool = { $0.int == k / 2 }
                try params([0: ({ ($0.int ?? 0) > 0 }, "a positive output count"),
                            1: ({ [1, 3, 5, 7].contains($0.int ?? 0) }, "an odd kernel size of at most 7"),
                            11: ({ $0.int == k }, "the kernel width \(k) (square kernels)"),
                            2: int(1), 12: int(1), 3: int(1), 13: int(1),
                            4: (same, "\(k / 2) ('same' padding)"), 14: (same, "\(k / 2) ('same' padding)"),
                            15: (same, "\(k / 2) ('same' padding)"), 16: (same, "\(k / 2) ('same' padding)"),
                            5: int(1), 6: ({ ($0.int ?? 0) > 0 }, "the weight count"), 8: int(0),
                            9: ({ $0 == .int(0) || $0 == .int(2) }, "0 (none) or 2 (LeakyReLU)"),
                            10: ({ $0.array.count == 1 && layer.int(9) == 2 }, "one slope, with 9=2 (LeakyReLU)"),
                            18: ({ $0.float == 0 }, "0"), 19: int(0)])
                guard layer.params[5] != nil else { throw bad("has no bias (5=1); Real-ESRGAN convolutions have one") }
                guard let shape = checkpoint.shape(of: layer.name + ".weight"), shape.count == 4 else {
                    throw bad("has no weights in the .bin")
                }
                guard shape[1] == channels[0] else {
                    throw bad("its weights take \(shape[1]) input channels but its input blob has \(channels[0])")
                }
                let slope: Float? = layer.int(9) == 2 ? (layer.params[10]?.array.first ?? 0) : nil
                node = Node(op: .conv(layer: index, leakySlope: slope), args: args, channels: shape[0], layer: index)
            case "PReLU":
                try arity(1...1, 1...1)
                try params([0: ({ $0.int == channels[0] }, "the channel count \(channels[0]) (one slope per channel)")])
                guard layer.params[0] != nil else { throw bad("has no slope count (0=)") }
                node = Node(op: .prelu(layer: index), args: args, channels: channels[0], layer: index)
            case "Concat":
                try arity(2...64, 1...1)
                try params([0: int(0)])
                node = Node(op: .concat, args: args, channels: channels.reduce(0, +), layer: index)
            case "Eltwise":
                try arity(2...2, 1...1)
                try params([0: int(1), 1: ({ $0.array.count == 2 }, "two coefficients")])
                guard layer.params[0] == .int(1), let coefficients = layer.params[1]?.array else {
                    throw bad("must be a weighted sum (0=1 with two coefficients)")
                }
                guard channels[0] == channels[1] else { throw bad("adds blobs of \(channels[0]) and \(channels[1]) channels") }
                node = Node(op: .weightedSum(coefficients), args: args, channels: channels[0], layer: index)
            case "BinaryOp":
                try arity(2...2, 1...1)
                // Operation 0 is add (ncnn's default); subtraction, multiplication, … would compute another network.
                try params([0: (int(0).value, "0 (add); the networks only add"), 1: int(0)])
                guard channels[0] == channels[1] else { throw bad("adds blobs of \(channels[0]) and \(channels[1]) channels") }
                node = Node(op: .add, args: args, channels: channels[0], layer: index)
            case "Interp":
                try arity(1...1, 1...1)
                let scale = layer.float(1, default: 1)
                try params([0: ({ $0 == .int(1) || $0 == .int(3) }, "1 (nearest) or 3 (bicubic)"),
                            1: ({ ($0.float ?? 0) > 0 }, "a positive scale"),
                            2: ({ $0.float == scale }, "the height scale \(scale)"),
                            3: int(0), 4: int(0), 5: int(0), 6: int(0)])
                node = Node(op: .resize(mode: layer.int(0), scale: scale), args: args, channels: channels[0], layer: index)
            case "PixelShuffle":
                try arity(1...1, 1...1)
                let r = layer.int(0, default: 1)
                try params([0: ({ ($0.int ?? 0) >= 1 && ($0.int ?? 0) <= 8 }, "a factor from 1 to 8"), 1: int(0)])
                guard channels[0] % (r * r) == 0 else { throw bad("\(channels[0]) channels do not shuffle by \(r)×\(r)") }
                node = Node(op: .pixelShuffle(r), args: args, channels: channels[0] / (r * r), layer: index)
            default:
                throw bad("Real-ESRGAN graphs have no \(layer.type) layers; the converter cannot run it")
            }
            let id: Int
            if let node {
                nodes.append(node)
                id = nodes.count - 1
            } else {
                id = args[0]  // Split: every output is its input
            }
            for blob in layer.outputs {
                if let other = writer[blob] {
                    throw bad("writes blob \(TerminalText.quoted(blob, limit: 80)), which layer \(TerminalText.quoted(other, limit: 80)) writes too")
                }
                writer[blob] = layer.name
                producer[blob] = id
            }
        }
        guard let input else { throw fail("the graph has no Input layer") }
        // Every blob but the final output is read: a blob nobody reads is a layer the output does not depend on.
        let unread = model.layers.flatMap { l in l.outputs.filter { reader[$0] == nil }.map { (l.name, $0) } }
        guard unread.count == 1, let output = producer[unread[0].1] else {
            if unread.isEmpty { throw fail("every blob is read by a layer, so the graph has no output") }
            let list = unread.prefix(5).map { "\(TerminalText.quoted($0.1, limit: 60)) of layer \(TerminalText.quoted($0.0, limit: 60))" }
            throw fail("\(unread.count) blobs are never read (\(list.joined(separator: ", "))); the graph must end in one output")
        }
        return Graph(nodes: nodes, layers: model.layers, input: input, output: output)
    }

    private static func text(_ range: ClosedRange<Int>) -> String {
        range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound)–\(range.upperBound)"
    }

    private static func show(_ p: NCNNParam) -> String {
        switch p {
        case .int(let v): "\(v)"
        case .float(let f): "\(f)"
        case .array(let a): "[" + a.prefix(8).map { "\($0)" }.joined(separator: ",") + (a.count > 8 ? ",…]" : "]")
        }
    }

    // MARK: - Matching an architecture

    /// A convolution node: its layer and input. `slope` nil requires no activation, a value a LeakyReLU of it.
    private static func conv(_ g: Graph, _ id: Int, slope: Float?, role: String,
                             fail: (String) -> UpscaleModelError) throws -> (layer: NCNNLayer, input: Int) {
        guard case .conv(let layer, let actual) = g.node(id).op else {
            throw fail("\(g.describe(id)) is where \(role) (a convolution) should be")
        }
        switch (slope, actual) {
        case (nil, nil): break
        case (let want?, let have?) where abs(want - have) < 1e-6: break
        default:
            throw fail("\(g.describe(id)) as \(role) should \(slope.map { "end in LeakyReLU \($0)" } ?? "have no activation")")
        }
        return (g.layers[layer], g.node(id).args[0])
    }

    /// The operands of a residual `0.2·scaled + identity` (an Eltwise with those coefficients, in either order).
    private static func residual(_ g: Graph, _ id: Int, role: String, fail: (String) -> UpscaleModelError) throws -> (scaled: Int, identity: Int) {
        guard case .weightedSum(let c) = g.node(id).op, c.count == 2 else {
            throw fail("\(g.describe(id)) is where \(role) (the residual sum 0.2·x + y) should be")
        }
        let args = g.node(id).args
        if abs(c[0] - 0.2) < 1e-6, abs(c[1] - 1) < 1e-6 { return (args[0], args[1]) }
        if abs(c[1] - 0.2) < 1e-6, abs(c[0] - 1) < 1e-6 { return (args[1], args[0]) }
        throw fail("\(g.describe(id)) as \(role) has coefficients \(c); RRDBNet's residuals are 0.2·x + y")
    }

    private static func weights(_ checkpoint: CheckpointFile, _ layer: NCNNLayer, into dict: inout [String: Tensor], as name: String) throws {
        dict[name + ".weight"] = try checkpoint.tensor(layer.name + ".weight")
        dict[name + ".bias"] = try checkpoint.tensor(layer.name + ".bias")
    }

    /// RRDBNet: conv_first → RRDB blocks → conv_body, plus the first features → (nearest ×2 → conv_up, LeakyReLU)
    /// per stage → conv_hr (LeakyReLU) → conv_last. Walked back from the output.
    private static func convertRRDB(_ checkpoint: CheckpointFile, _ g: Graph, fail: (String) -> UpscaleModelError) throws -> Converted {
        var dict: [String: Tensor] = [:]
        let last = try conv(g, g.output, slope: nil, role: "conv_last", fail: fail)
        let hr = try conv(g, last.input, slope: 0.2, role: "conv_hr", fail: fail)
        var ups: [NCNNLayer] = []
        var at = hr.input
        while case .conv = g.node(at).op {
            let up = try conv(g, at, slope: 0.2, role: "conv_up", fail: fail)
            guard case .resize(1, 2) = g.node(up.input).op else {
                throw fail("\(g.describe(up.input)) should be the nearest ×2 Interp before \(TerminalText.quoted(up.layer.name, limit: 80))")
            }
            ups.append(up.layer)
            at = g.node(up.input).args[0]
            guard ups.count <= 4 else { throw fail("more than 4 upsampling stages") }
        }
        guard !ups.isEmpty else { throw fail("\(g.describe(at)) should be an upsampling convolution (conv_up)") }
        guard case .add = g.node(at).op else {
            throw fail("\(g.describe(at)) should be the BinaryOp add of the first features and conv_body")
        }
        // feat + conv_body(trunk): conv_first reads the image, conv_body the trunk.
        let operands = g.node(at).args
        let firstSide = operands.firstIndex { id in
            if case .conv = g.node(id).op { return g.node(id).args[0] == g.input } else { return false }
        }
        guard let firstSide else { throw fail("\(g.describe(at)) should add conv_first's output (a convolution of the input image)") }
        let first = try conv(g, operands[firstSide], slope: nil, role: "conv_first", fail: fail)
        let feat = operands[firstSide]
        let body = try conv(g, operands[1 - firstSide], slope: nil, role: "conv_body", fail: fail)
        // The trunk: RRDB blocks from conv_body's input back to the first features.
        var blocks: [[NCNNLayer]] = []
        var trunk = body.input
        while trunk != feat {
            let (scaled, x) = try residual(g, trunk, role: "the end of an RRDB block", fail: fail)
            var rdbs: [[NCNNLayer]] = []
            var out = scaled
            for k in (1...3).reversed() {
                let (convs, rdbInput) = try rdb(g, out, role: "rdb\(k)", fail: fail)
                rdbs.insert(convs, at: 0)
                out = rdbInput
            }
            guard out == x else {
                throw fail("\(g.describe(trunk)) adds a blob other than its block's input to the block's output")
            }
            blocks.insert(rdbs.flatMap { $0 }, at: 0)
            trunk = x
            guard blocks.count <= 1000 else { throw fail("more than 1000 RRDB blocks") }
        }
        guard !blocks.isEmpty else { throw fail("the graph has no RRDB blocks") }
        try weights(checkpoint, first.layer, into: &dict, as: "conv_first")
        for (b, layers) in blocks.enumerated() {
            for (i, layer) in layers.enumerated() {
                try weights(checkpoint, layer, into: &dict, as: "body.\(b).rdb\(i / 5 + 1).conv\(i % 5 + 1)")
            }
        }
        try weights(checkpoint, body.layer, into: &dict, as: "conv_body")
        for (u, layer) in ups.reversed().enumerated() { try weights(checkpoint, layer, into: &dict, as: "conv_up\(u + 1)") }
        try weights(checkpoint, hr.layer, into: &dict, as: "conv_hr")
        try weights(checkpoint, last.layer, into: &dict, as: "conv_last")
        return Converted(stateDict: dict, architecture: .rrdb, outputResize: nil)
    }

    /// One residual dense block ending at `out`: x → conv1..conv4 (LeakyReLU 0.2), each reading the Concat of x and
    /// every earlier output in order, → conv5 of all five → 0.2·conv5 + x. Returns its five convolutions and x.
    private static func rdb(_ g: Graph, _ out: Int, role: String, fail: (String) -> UpscaleModelError) throws -> ([NCNNLayer], Int) {
        let (scaled, x) = try residual(g, out, role: "the end of \(role)", fail: fail)
        let c5 = try conv(g, scaled, slope: nil, role: "\(role).conv5", fail: fail)
        let cat = g.node(c5.input)
        guard case .concat = cat.op, cat.args.count == 5, cat.args[0] == x else {
            throw fail("\(g.describe(c5.input)) should be the Concat of \(role)'s input and its four convolutions, in that order")
        }
        var layers: [NCNNLayer] = []
        for j in 1...4 {
            let c = try conv(g, cat.args[j], slope: 0.2, role: "\(role).conv\(j)", fail: fail)
            if j == 1 {
                guard c.input == x else { throw fail("\(TerminalText.quoted(c.layer.name, limit: 80)) as \(role).conv1 should read \(role)'s input") }
            } else {
                let inner = g.node(c.input)
                guard case .concat = inner.op, inner.args == Array(cat.args[0..<j]) else {
                    throw fail("\(g.describe(c.input)) should be the Concat of \(role)'s input and conv1…conv\(j - 1), in that order")
                }
            }
            layers.append(c.layer)
        }
        return (layers + [c5.layer], x)
    }

    /// SRVGGNetCompact: conv → PReLU pairs from the image, a last conv, PixelShuffle ×r, plus a nearest ×r resize of
    /// the image; optionally a bicubic resize of the sum (animevideov3-x2/x3).
    private static func convertSRVGG(_ checkpoint: CheckpointFile, _ g: Graph, fail: (String) -> UpscaleModelError) throws -> Converted {
        var resize: (numerator: Int, denominator: Int)?
        var sum = g.output
        if case .resize(let mode, let s) = g.node(sum).op {
            guard mode == 3 else { throw fail("\(g.describe(sum)) as the output resize is not bicubic") }
            guard let fraction = [(1, 2), (3, 4), (1, 4), (3, 2), (1, 1)].first(where: { abs(Float($0.0) / Float($0.1) - s) < 1e-6 }) else {
                throw fail("\(g.describe(sum)) resizes by ×\(s), which gives no whole output scale")
            }
            resize = fraction
            sum = g.node(sum).args[0]
        }
        guard case .add = g.node(sum).op else { throw fail("\(g.describe(sum)) should be the BinaryOp add of the network and the upsampled image") }
        let operands = g.node(sum).args
        guard let shuffleSide = operands.firstIndex(where: { if case .pixelShuffle = g.node($0).op { true } else { false } }),
              case .pixelShuffle(let factor) = g.node(operands[shuffleSide]).op else {
            throw fail("\(g.describe(sum)) should add a PixelShuffle output")
        }
        let base = operands[1 - shuffleSide]
        guard case .resize(1, let s) = g.node(base).op, s == Float(factor), g.node(base).args[0] == g.input else {
            throw fail("\(g.describe(base)) should be the nearest ×\(factor) Interp of the input image")
        }
        if let r = resize, (factor * r.numerator) % r.denominator != 0 {
            throw fail("output resize ×\(r.numerator)/\(r.denominator) after a ×\(factor) network does not give a whole scale")
        }
        let last = try conv(g, g.node(operands[shuffleSide]).args[0], slope: nil, role: "the last convolution", fail: fail)
        var pairs: [(conv: NCNNLayer, prelu: NCNNLayer)] = []
        var at = last.input
        while true {
            guard case .prelu(let p) = g.node(at).op else { throw fail("\(g.describe(at)) should be a PReLU after a body convolution") }
            let c = try conv(g, g.node(at).args[0], slope: nil, role: "a body convolution", fail: fail)
            pairs.insert((c.layer, g.layers[p]), at: 0)
            if c.input == g.input { break }
            at = c.input
            guard pairs.count <= 1000 else { throw fail("more than 1000 body convolutions") }
        }
        var dict: [String: Tensor] = [:]
        for (i, pair) in pairs.enumerated() {
            try weights(checkpoint, pair.conv, into: &dict, as: "body.\(2 * i)")
            dict["body.\(2 * i + 1).weight"] = try checkpoint.tensor(pair.prelu.name + ".weight")
        }
        try weights(checkpoint, last.layer, into: &dict, as: "body.\(2 * pairs.count)")
        return Converted(stateDict: dict, architecture: .srvgg, outputResize: resize)
    }
}

/// A network followed by a bicubic resize of its output (ncnn exports of animevideov3-x2/x3: the ×4 network, then
/// ×0.5 / ×0.75). The resize matches ncnn's Interp (A = −0.75, half-pixel centres, no antialiasing), which is
/// PyTorch's `interpolate(mode="bicubic", align_corners=False)`.
public struct ResizedOutputNetwork: UpscaleNetwork {
    public let base: any UpscaleNetwork
    /// Output size = base output size · numerator / denominator.
    public let numerator: Int
    public let denominator: Int

    public init(base: any UpscaleNetwork, numerator: Int, denominator: Int) {
        precondition((base.scale * numerator) % denominator == 0, "resize must keep a whole scale")
        self.base = base
        self.numerator = numerator
        self.denominator = denominator
    }

    public var architecture: String { base.architecture }
    public var scale: Int { base.scale * numerator / denominator }
    public var sizeMultiple: Int { base.sizeMultiple }
    public var minimumTile: Int { base.minimumTile }
    public var bytesPerInputPixel: Int { base.bytesPerInputPixel + base.scale * base.scale * 3 * 4 * 2 }

    public func forward(_ input: Tensor) throws -> Tensor {
        let y = try base.forward(input)
        return resize(y, height: input.shape[2] * scale, width: input.shape[3] * scale, mode: .bicubic)
    }
}
