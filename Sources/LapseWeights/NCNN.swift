import Foundation
import LapseSupport
import LapseTensor

/// One parameter value of an ncnn layer (`k=v` in the `.param` text).
public enum NCNNParam: Sendable, Equatable {
    case int(Int)
    case float(Float)
    /// An array parameter (key −23300−id in the file), integers stored as floats.
    case array([Float])

    /// The value as an integer (floats are truncated), nil for arrays.
    public var int: Int? {
        // Int(exactly:) of the truncated value: a float beyond Int's range (1e20) is no integer, not a trap.
        switch self { case .int(let v): v; case .float(let f): Int(exactly: f.rounded(.towardZero)); case .array: nil }
    }
    /// The value as a float, nil for arrays.
    public var float: Float? {
        switch self { case .int(let v): Float(v); case .float(let f): f; case .array: nil }
    }
    /// The values of an array parameter (a scalar becomes a one-element array).
    public var array: [Float] {
        switch self { case .int(let v): [Float(v)]; case .float(let f): [f]; case .array(let a): a }
    }
}

/// One layer of an ncnn graph.
public struct NCNNLayer: Sendable {
    /// Layer type, e.g. `Convolution`, `PReLU`, `Interp`.
    public var type: String
    /// Unique layer name; weight keys are `NAME.weight`, `NAME.bias`.
    public var name: String
    /// Names of the blobs consumed and produced.
    public var inputs: [String]
    public var outputs: [String]
    /// Parameters by id (array parameters are stored under their plain id, not the −23300−id key).
    public var params: [Int: NCNNParam]
    /// Names of this layer's weights, in `.bin` order (e.g. `["Conv_0.weight", "Conv_0.bias"]`).
    public var weightKeys: [String]

    /// An integer parameter with ncnn's default when absent.
    public func int(_ id: Int, default value: Int = 0) -> Int { params[id]?.int ?? value }
    /// A float parameter with ncnn's default when absent.
    public func float(_ id: Int, default value: Float = 0) -> Float { params[id]?.float ?? value }
}

/// An ncnn model: the `.param` layer graph and the named weights from the `.bin`.
public struct NCNNModel: Sendable {
    public var layers: [NCNNLayer]
    /// Total number of blobs the param file declares.
    public var blobCount: Int

    static let magic = "7767517"
    /// ncnn's NCNN_MAX_PARAM_COUNT: parameter ids are below it.
    static let maxParamID = 32
    /// Layer types whose `.bin` contains nothing.
    static let weightless: Set<String> = [
        "Input", "Split", "Concat", "Eltwise", "BinaryOp", "UnaryOp", "Interp", "PixelShuffle", "ReLU", "Sigmoid",
        "TanH", "Clip", "Crop", "Padding", "Pooling", "Reshape", "Permute", "Flatten", "Softmax", "Dropout", "Noop",
        "Slice", "HardSigmoid", "HardSwish", "Swish", "Mish", "GELU", "ELU", "Exp", "Log", "Power", "Reorg", "Tile",
        "Squeeze", "ExpandDims", "ShuffleChannel", "DeepCopy", "Normalize",
    ]

    /// Parses `.param` text. Every problem names the line it was found on.
    public static func parse(param text: String, file: String) throws -> NCNNModel {
        func bad(_ line: Int, _ r: String) -> WeightsError { .malformed(file: file, reason: "line \(line): \(r)") }
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r" })
            .map { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init) }
        var i = 0
        func nextLine() -> (Int, [String])? {
            while i < lines.count {
                defer { i += 1 }
                if !lines[i].isEmpty { return (i + 1, lines[i]) }
            }
            return nil
        }
        guard let (l0, first) = nextLine(), first == [magic] else {
            throw WeightsError.unknownFormat(file: file, reason: "ncnn param must start with the magic number \(magic)")
        }
        guard let (l1, counts) = nextLine(), counts.count == 2, let layerCount = Int(counts[0]), let blobCount = Int(counts[1]),
              layerCount >= 0, blobCount >= 0, layerCount <= 1_000_000, blobCount <= 1_000_000 else {
            throw bad(l0 + 1, "expected \"layer_count blob_count\"")
        }
        _ = l1
        var layers: [NCNNLayer] = []
        var names = Set<String>()
        layers.reserveCapacity(layerCount)
        for _ in 0..<layerCount {
            guard let (ln, f) = nextLine() else {
                throw WeightsError.truncated(file: file, reason: "declares \(layerCount) layers but has \(layers.count)")
            }
            guard f.count >= 4, let nIn = Int(f[2]), let nOut = Int(f[3]), nIn >= 0, nOut >= 0, nIn <= f.count, nOut <= f.count,
                  4 + nIn + nOut <= f.count else {
                throw bad(ln, "expected \"Type Name n_in n_out inputs… outputs… k=v…\"")
            }
            let name = f[1]
            guard names.insert(name).inserted else { throw bad(ln, "duplicate layer name \"\(TerminalText.quoted(name, limit: 80))\"") }
            var params: [Int: NCNNParam] = [:]
            for item in f[(4 + nIn + nOut)...] {
                let kv = item.split(separator: "=", maxSplits: 1)
                guard kv.count == 2, let key = Int(kv[0]) else { throw bad(ln, "parameter \"\(TerminalText.quoted(item, limit: 80))\" of layer \(TerminalText.quoted(name, limit: 80)) is not k=v") }
                // ncnn's ids are 0..<32 (NCNN_MAX_PARAM_COUNT), arrays written as -23300-id; anything else is not ncnn.
                guard (0..<maxParamID).contains(key) || (-23300 - maxParamID + 1 ... -23300).contains(key) else {
                    throw bad(ln, "parameter id \(key) of layer \(TerminalText.quoted(name, limit: 80)) is outside ncnn's 0–\(maxParamID - 1) (arrays: -23300 to \(-23300 - maxParamID + 1))")
                }
                if key <= -23300 {
                    let parts = kv[1].split(separator: ",")
                    guard let n = parts.first.flatMap({ Int($0) }), n >= 0, n == parts.count - 1 else {
                        throw bad(ln, "array parameter \(key) of layer \(TerminalText.quoted(name, limit: 80)) has a wrong element count")
                    }
                    let values = try parts.dropFirst().map { p -> Float in
                        guard let v = Float(p) else { throw bad(ln, "array parameter \(key) of layer \(TerminalText.quoted(name, limit: 80)) has a non-number \"\(TerminalText.quoted(String(p), limit: 80))\"") }
                        return v
                    }
                    params[-key - 23300] = .array(values)
                } else {
                    let v = String(kv[1])
                    if let iv = Int(v) { params[key] = .int(iv) } else if let fv = Float(v) { params[key] = .float(fv) } else {
                        throw bad(ln, "parameter \(key) of layer \(TerminalText.quoted(name, limit: 80)) has a non-number value \"\(TerminalText.quoted(v, limit: 80))\"")
                    }
                }
            }
            layers.append(NCNNLayer(type: f[0], name: name, inputs: Array(f[4..<(4 + nIn)]),
                                    outputs: Array(f[(4 + nIn)..<(4 + nIn + nOut)]), params: params, weightKeys: []))
        }
        return NCNNModel(layers: layers, blobCount: blobCount)
    }

    /// Opens a `.param` + `.bin` pair as a checkpoint whose keys are the layers' weights.
    static func openCheckpoint(paramFile: MappedFile, binPath: String) throws -> CheckpointFile {
        let text = String(decoding: paramFile.bytes(0, paramFile.count), as: UTF8.self)
        var model = try parse(param: text, file: paramFile.path)
        let bin = try MappedFile(path: binPath)
        var reader = BinReader(file: bin)
        var keys: [String] = []
        var entries: [String: CheckpointFile.Entry] = [:]
        for index in model.layers.indices {
            let layer = model.layers[index]
            var layerKeys: [String] = []
            func add(_ suffix: String, _ entry: CheckpointFile.Entry) {
                let key = layer.name + "." + suffix
                keys.append(key); layerKeys.append(key); entries[key] = entry
            }
            func positive(_ id: Int, _ what: String) throws -> Int {
                let v = layer.int(id)
                guard v > 0, v <= 1 << 31 else {
                    throw WeightsError.malformed(file: paramFile.path, reason: "layer \(TerminalText.quoted(layer.name, limit: 80)) (\(layer.type)) has invalid \(what) \(v)")
                }
                return v
            }
            switch layer.type {
            case "Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise":
                let outputs = try positive(0, "num_output (0)")
                let kw = try positive(1, "kernel_w (1)")
                let kh = layer.params[11] == nil ? kw : try positive(11, "kernel_h (11)")
                let size = try positive(6, "weight_data_size (6)")
                if layer.type.hasSuffix("DepthWise") { _ = try positive(7, "group (7)") }
                guard layer.int(8) == 0 else {
                    throw WeightsError.unsupported(file: paramFile.path, reason: "layer \(TerminalText.quoted(layer.name, limit: 80)) uses int8 quantisation")
                }
                guard case let (per, false) = outputs.multipliedReportingOverflow(by: kw * kh), per > 0, size % per == 0 else {
                    throw WeightsError.malformed(file: paramFile.path, reason: "layer \(TerminalText.quoted(layer.name, limit: 80)): weight_data_size \(size) is not num_output \(outputs) × \(kh)×\(kw) × inputs")
                }
                let inputs = size / per
                // ncnn stores every convolution kind output-major: [num_output, inputs per group, kh, kw].
                let shape = [outputs, inputs, kh, kw]
                add("weight", try reader.weights(count: size, shape: shape, layer: layer.name))
                if layer.int(5) != 0 { add("bias", try reader.raw(count: outputs, shape: [outputs], layer: layer.name)) }
            case "InnerProduct":
                let outputs = try positive(0, "num_output (0)")
                let size = try positive(2, "weight_data_size (2)")
                guard size % outputs == 0 else {
                    throw WeightsError.malformed(file: paramFile.path, reason: "layer \(TerminalText.quoted(layer.name, limit: 80)): weight_data_size \(size) is not a multiple of num_output \(outputs)")
                }
                guard layer.int(8) == 0 else {
                    throw WeightsError.unsupported(file: paramFile.path, reason: "layer \(TerminalText.quoted(layer.name, limit: 80)) uses int8 quantisation")
                }
                add("weight", try reader.weights(count: size, shape: [outputs, size / outputs], layer: layer.name))
                if layer.int(1) != 0 { add("bias", try reader.raw(count: outputs, shape: [outputs], layer: layer.name)) }
            case "PReLU":
                let n = try positive(0, "num_slope (0)")
                add("weight", try reader.raw(count: n, shape: [n], layer: layer.name))
            case "BatchNorm":
                let c = try positive(0, "channels (0)")
                for part in ["weight", "running_mean", "running_var", "bias"] {
                    add(part, try reader.raw(count: c, shape: [c], layer: layer.name))
                }
            case "Scale":
                let n = layer.int(0)
                guard n != -233 else {
                    throw WeightsError.unsupported(file: paramFile.path, reason: "layer \(TerminalText.quoted(layer.name, limit: 80)): Scale with a second input blob")
                }
                let c = try positive(0, "scale_data_size (0)")
                add("weight", try reader.raw(count: c, shape: [c], layer: layer.name))
                if layer.int(1) != 0 { add("bias", try reader.raw(count: c, shape: [c], layer: layer.name)) }
            default:
                guard weightless.contains(layer.type) else {
                    throw WeightsError.unsupported(file: paramFile.path, reason: "layer \(TerminalText.quoted(layer.name, limit: 80)) has type \(TerminalText.quoted(layer.type, limit: 80)), whose weight layout this reader does not know")
                }
            }
            model.layers[index].weightKeys = layerKeys
        }
        guard reader.offset == bin.count else {
            throw WeightsError.malformed(file: binPath, reason: "\(bin.count - reader.offset) bytes left over after the last layer's weights; the .bin does not belong to this .param")
        }
        return CheckpointFile(path: paramFile.path, format: .ncnn, file: bin, keys: keys, entries: entries, ncnn: model)
    }

    /// Sequential reader of ncnn's `.bin`, checking each blob against the remaining bytes.
    struct BinReader {
        let file: MappedFile
        var offset = 0

        private mutating func claim(_ bytes: Int, layer: String, what: String) throws -> Int {
            guard file.contains(offset: offset, length: bytes) else {
                throw WeightsError.truncated(file: file.path, reason: "layer \(TerminalText.quoted(layer, limit: 80)) needs \(bytes) bytes of \(what) at offset \(offset) but the file has \(file.count)")
            }
            defer { offset += bytes }
            return offset
        }

        /// An untagged fp32 blob (biases, slopes).
        mutating func raw(count: Int, shape: [Int], layer: String) throws -> CheckpointFile.Entry {
            let at = try claim(count * 4, layer: layer, what: "fp32 data")
            return .init(info: TensorInfo(dtype: .f32, shape: shape),
                         source: .mapped(TensorLocation(storageByteOffset: at, elementOffset: 0, strides: nil)))
        }

        /// A tagged weight blob: fp16, raw fp32, or 8-bit indices into a 256-entry float table.
        mutating func weights(count: Int, shape: [Int], layer: String) throws -> CheckpointFile.Entry {
            let tagAt = try claim(4, layer: layer, what: "the weight type tag")
            let tag = file.u32(tagAt)
            switch tag {
            case 0x0130_6B47:
                let at = try claim((count * 2 + 3) / 4 * 4, layer: layer, what: "fp16 weights")
                return .init(info: TensorInfo(dtype: .f16, shape: shape),
                             source: .mapped(TensorLocation(storageByteOffset: at, elementOffset: 0, strides: nil)))
            case 0:
                let at = try claim(count * 4, layer: layer, what: "fp32 weights")
                return .init(info: TensorInfo(dtype: .f32, shape: shape),
                             source: .mapped(TensorLocation(storageByteOffset: at, elementOffset: 0, strides: nil)))
            case 0x000D_4B38:
                throw WeightsError.unsupported(file: file.path, reason: "layer \(TerminalText.quoted(layer, limit: 80)) stores int8 weights")
            case 0x0002_C056:
                // Raw fp32 written with an explicit tag by newer converters.
                let at = try claim(count * 4, layer: layer, what: "fp32 weights")
                return .init(info: TensorInfo(dtype: .f32, shape: shape),
                             source: .mapped(TensorLocation(storageByteOffset: at, elementOffset: 0, strides: nil)))
            default:
                // Any other non-zero tag: a 256-float quantisation table, then one uint8 index per weight.
                let tableAt = try claim(256 * 4, layer: layer, what: "the quantisation table")
                let at = try claim((count + 3) / 4 * 4, layer: layer, what: "quantised weight indices")
                var t = Tensor(zeros: shape)
                t.withUnsafeMutableBufferPointer { dst in
                    var table = [Float](repeating: 0, count: 256)
                    table.withUnsafeMutableBufferPointer { DType.f32.convert(file.base + tableAt, count: 256, into: $0.baseAddress!) }
                    for i in 0..<count { dst[i] = table[Int(file.base.load(fromByteOffset: at + i, as: UInt8.self))] }
                }
                return .init(info: TensorInfo(dtype: .f32, shape: shape), source: .materialized(t))
            }
        }
    }
}
