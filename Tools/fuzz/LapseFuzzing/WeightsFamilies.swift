import APISRPlugin
import Foundation
import LapseTensor
import LapseWeights

extension FuzzFamilies {
    /// Checkpoint parsers: safetensors, PyTorch zip and legacy pickles, the zip container, ncnn param/bin.
    static var weightsFamilies: [FuzzFamily] {
        [safetensors, pickleZip, pickleLegacy, zip, ncnnParam, ncnnBin]
    }

    /// Opens `path` as a checkpoint and reads every tensor it claims to hold, and its state dict: first as a
    /// Lightning checkpoint opened for its `state_dict` (placeholders for unknown classes, storages located only
    /// for the tensors under the key), then as a plain checkpoint. Most inputs have no `state_dict` and end the
    /// first way with an error; that error only decides the verdict when it has no usable message.
    static func readEveryTensor(_ path: String) throws {
        do {
            let scoped = try CheckpointFile.open(path, stateDictKey: "state_dict")
            for key in scoped.keys { _ = try scoped.tensor(key) }
            _ = try Weights.stateDict(from: scoped)
        } catch {
            let message = error.localizedDescription
            if message.isEmpty || message.contains("The operation could not be completed") { throw error }
        }
        let file = try CheckpointFile.open(path)
        for key in file.keys { _ = try file.tensor(key) }
        _ = try Weights.stateDict(from: file)
    }

    /// The committed seed files of a family: `Tools/fuzz/corpus/<family>/` in this checkout.
    static func corpus(_ family: String) -> [Data] {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("corpus/\(family)")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.sorted().filter { !$0.hasPrefix(".") }.compactMap { FileManager.default.contents(atPath: dir.appendingPathComponent($0).path) }
    }

    static let safetensors = FuzzFamily(
        name: "safetensors", summary: "safetensors header JSON and data offsets",
        dictionary: ["\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"F16\"", "\"BF16\"", "\"F32\"", "\"__metadata__\"", "[", "]", "{", "}", ","],
        seeds: {
            let dir = NSTemporaryDirectory() + "lapse-fuzz-seed-\(getpid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var seeds: [Data] = []
            for dtype in [DType.f32, .f16, .bf16] {
                let path = dir + "/seed.safetensors"
                try SafeTensors.write([("a.weight", Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6])), ("b", Tensor(shape: [1], data: [7]))],
                                      metadata: ["format": "pt"], dtype: dtype, to: path)
                seeds.append(try Data(contentsOf: URL(fileURLWithPath: path)))
            }
            return seeds + corpus("safetensors")
        },
        run: { input, scratch in
            let path = scratch + "/input.safetensors"
            try input.write(to: URL(fileURLWithPath: path))
            try readEveryTensor(path)
        })

    // MARK: - PyTorch

    /// A protocol-2 pickle of `{"w": tensor(storage "0", float32, shape [2, 3]), "n": 7}`, as torch.save writes it.
    static let statePickle: [UInt8] = {
        var p: [UInt8] = [0x80, 0x02, 0x7D, 0x71, 0x00, 0x28]  // PROTO 2, EMPTY_DICT, BINPUT 0, MARK
        func str(_ s: String) { p += [0x58] + withUnsafeBytes(of: UInt32(s.utf8.count).littleEndian, Array.init) + Array(s.utf8) }
        func global(_ module: String, _ name: String) { p += [0x63] + Array("\(module)\n\(name)\n".utf8) }
        str("w")
        global("torch._utils", "_rebuild_tensor_v2")
        p += [0x28]  // MARK (args)
        p += [0x28]; str("storage"); global("torch", "FloatStorage"); str("0"); str("cpu"); p += [0x4B, 6, 0x74, 0x51]  // persistent id tuple, BINPERSID
        p += [0x4B, 0, 0x4B, 2, 0x4B, 3, 0x86, 0x4B, 3, 0x4B, 1, 0x86, 0x89]  // offset 0, size (2, 3), stride (3, 1), False
        global("collections", "OrderedDict"); p += [0x29, 0x52]  // OrderedDict()
        p += [0x74, 0x52]  // TUPLE, REDUCE
        str("n"); p += [0x4B, 7]
        p += [0x75, 0x2E]  // SETITEMS, STOP
        return p
    }()

    /// A torch zip checkpoint around `pickle`, with storages "0"…"15" of 256 bytes each (enough for the seeds).
    static func torchArchive(pickle: [UInt8]) -> [UInt8] {
        var entries: [(name: String, data: [UInt8])] = [("archive/data.pkl", pickle), ("archive/byteorder", Array("little".utf8))]
        for key in 0..<16 { entries.append(("archive/data/\(key)", (0..<256).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ key) })) }
        entries.append(("archive/version", Array("3\n".utf8)))
        return StoredZip.archive(entries)
    }

    static let pickleDictionary = ["ctorch._utils\n_rebuild_tensor_v2\n", "ctorch\nFloatStorage\n", "ctorch\nHalfStorage\n",
                                   "ccollections\nOrderedDict\n", "(", "t", "R", "Q", "}", "]", ")", "q\u{0}", "h\u{0}", "X\u{1}\u{0}\u{0}\u{0}0",
                                   "K\u{0}", "\u{85}", "\u{86}", "\u{87}", "u", "e", "s", "2", ".", "\u{94}", "\u{8c}\u{1}a"]

    /// data.pkl inside a fixed, valid zip: mutations reach the unpickler and the tensor views, not the container.
    static let pickleZip = FuzzFamily(
        name: "pickle-zip", summary: "PyTorch zip checkpoints: the data.pkl pickle (restricted unpickler, tensor views)",
        dictionary: pickleDictionary,
        seeds: { [Data(statePickle)] + corpus("pickle-zip") },
        run: { input, scratch in
            let path = scratch + "/input.pth"
            try Data(torchArchive(pickle: Array(input))).write(to: URL(fileURLWithPath: path))
            try readEveryTensor(path)
        })

    /// The legacy format (five pickles, then raw storages), mutated whole.
    static let pickleLegacy = FuzzFamily(
        name: "pickle-legacy", summary: "legacy (torch < 1.6) checkpoints: magic, protocol and object pickles, storage headers",
        dictionary: pickleDictionary,
        seeds: { corpus("pickle-legacy") },
        run: { input, scratch in
            let path = scratch + "/input.pth"
            try input.write(to: URL(fileURLWithPath: path))
            try readEveryTensor(path)
        })

    /// Whole zip checkpoints, mutated anywhere: local headers, central directory, ZIP64 records, entry names.
    static let zip = FuzzFamily(
        name: "zip", summary: "the zip container of PyTorch checkpoints (directory, ZIP64, local headers)",
        dictionary: ["PK\u{3}\u{4}", "PK\u{1}\u{2}", "PK\u{5}\u{6}", "PK\u{6}\u{6}", "PK\u{6}\u{7}", "data.pkl", "archive/data/0",
                     "\u{FF}\u{FF}\u{FF}\u{FF}", "\u{1}\u{0}"],
        seeds: { [Data(torchArchive(pickle: statePickle))] + corpus("zip") },
        run: { input, scratch in
            let path = scratch + "/input.pth"
            try input.write(to: URL(fileURLWithPath: path))
            try readEveryTensor(path)
        })

    // MARK: - ncnn

    /// Writes ncnn `.param` text, adding a Split wherever a blob is read more than once (as ncnn's converters do).
    struct NCNNText {
        var layers: [(type: String, name: String, inputs: [String], output: String, params: String)] = []

        mutating func add(_ type: String, _ name: String, _ inputs: [String], _ params: String = "") -> String {
            layers.append((type, name, inputs, name + "_out", params))
            return name + "_out"
        }

        var text: String {
            var uses: [String: Int] = [:]
            for l in layers { for i in l.inputs { uses[i, default: 0] += 1 } }
            var next: [String: Int] = [:]
            var lines: [String] = []
            var blobs = 0
            func read(_ blob: String) -> String {
                guard (uses[blob] ?? 0) > 1 else { return blob }
                defer { next[blob, default: 0] += 1 }
                return "\(blob)_s\(next[blob, default: 0])"
            }
            for l in layers {
                let inputs = l.inputs.map(read)
                lines.append("\(l.type) \(l.name) \(inputs.count) 1 \(inputs.joined(separator: " ")) \(l.output) \(l.params)")
                blobs += 1
                if let n = uses[l.output], n > 1 {
                    let outs = (0..<n).map { "\(l.output)_s\($0)" }
                    lines.append("Split split_\(l.name) 1 \(n) \(l.output) \(outs.joined(separator: " "))")
                    blobs += n
                }
            }
            return "7767517\n\(lines.count) \(blobs)\n" + lines.joined(separator: "\n") + "\n"
        }
    }

    static func conv(_ g: inout NCNNText, _ name: String, _ input: String, out: Int, in channels: Int, leaky: Bool = false) -> String {
        g.add("Convolution", name, [input], "0=\(out) 1=3 4=1 5=1 6=\(out * channels * 9)" + (leaky ? " 9=2 -23310=1,2.000000e-01" : ""))
    }

    /// SRVGGNetCompact ×2 with 4 features and 2 body convolutions.
    static var tinySRVGG: String {
        var g = NCNNText()
        let image = g.add("Input", "input", [])
        var x = image
        for (i, c) in [(0, 3), (1, 4)] {
            x = conv(&g, "conv\(i)", x, out: 4, in: c)
            x = g.add("PReLU", "prelu\(i)", [x], "0=4")
        }
        x = conv(&g, "conv_last", x, out: 12, in: 4)
        x = g.add("PixelShuffle", "shuffle", [x], "0=2")
        let base = g.add("Interp", "base", [image], "0=1 1=2.000000e+00 2=2.000000e+00")
        _ = g.add("BinaryOp", "add", [x, base])
        return g.text
    }

    /// RRDBNet ×4 with one block, 4 features and growth 2.
    static var tinyRRDB: String {
        var g = NCNNText()
        let image = g.add("Input", "input", [])
        let feat = conv(&g, "conv_first", image, out: 4, in: 3)
        var x = feat
        var layer = 0
        var blockInput = x
        for r in 0..<3 {
            let rdbInput = x
            var parts = [rdbInput]
            for j in 1...4 {
                let cat = parts.count == 1 ? rdbInput : g.add("Concat", "cat\(r)_\(j)", parts)
                parts.append(conv(&g, "c\(layer)", cat, out: 2, in: 4 + 2 * (j - 1), leaky: true)); layer += 1
            }
            let c5 = conv(&g, "c\(layer)", g.add("Concat", "cat\(r)_5", parts), out: 4, in: 12); layer += 1
            x = g.add("Eltwise", "rdb\(r)", [c5, rdbInput], "0=1 -23301=2,2.000000e-01,1.000000e+00")
            if r == 0 { blockInput = rdbInput }
        }
        x = g.add("Eltwise", "rrdb", [x, blockInput], "0=1 -23301=2,2.000000e-01,1.000000e+00")
        let body = conv(&g, "conv_body", x, out: 4, in: 4)
        x = g.add("BinaryOp", "add", [feat, body])
        for u in 1...2 {
            x = g.add("Interp", "up\(u)", [x], "0=1 1=2.000000e+00 2=2.000000e+00")
            x = conv(&g, "conv_up\(u)", x, out: 4, in: 4, leaky: true)
        }
        x = conv(&g, "conv_hr", x, out: 4, in: 4, leaky: true)
        _ = conv(&g, "conv_last", x, out: 3, in: 4)
        return g.text
    }

    /// A `.bin` matching `param` as parsed (weights with the given tag: 0 fp32, 0x01306B47 fp16), or nil when the
    /// text does not parse or would need more than 16 MB.
    static func bin(for param: String, tag: UInt32 = 0) -> [UInt8]? {
        guard let model = try? NCNNModel.parse(param: param, file: "fuzz.param") else { return nil }
        var out: [UInt8] = []
        var value: Float = 0.01
        func floats(_ n: Int) -> Bool {
            guard n >= 0, n <= (16 << 20) / 4 - out.count / 4 else { return false }
            for _ in 0..<n {
                value = value * -1.07 + 0.003
                if abs(value) > 0.5 { value = 0.013 }
                out += withUnsafeBytes(of: value.bitPattern.littleEndian, Array.init)
            }
            return true
        }
        func weights(_ n: Int) -> Bool {
            out += withUnsafeBytes(of: tag.littleEndian, Array.init)
            guard tag == 0x0130_6B47 else { return floats(n) }
            guard n >= 0, n <= 4 << 20 else { return false }
            for i in 0..<n { out += withUnsafeBytes(of: UInt16(0x2E66 &+ UInt16(i % 64)).littleEndian, Array.init) }
            if n % 2 == 1 { out += [0, 0] }
            return true
        }
        for layer in model.layers {
            let ok: Bool
            switch layer.type {
            case "Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise":
                ok = weights(layer.int(6)) && (layer.int(5) == 0 || floats(layer.int(0)))
            case "InnerProduct": ok = weights(layer.int(2)) && (layer.int(1) == 0 || floats(layer.int(0)))
            case "PReLU": ok = floats(layer.int(0))
            case "BatchNorm": ok = floats(4 * layer.int(0))
            case "Scale": ok = floats(layer.int(0)) && (layer.int(1) == 0 || floats(layer.int(0)))
            default: ok = true
            }
            guard ok else { return nil }
        }
        return out
    }

    /// Opens an ncnn pair and converts it through the APISR loader, as `LoadUpscaleModel` does.
    static func loadNCNN(param: [UInt8], bin: [UInt8], scratch: String) throws {
        let path = scratch + "/model.param"
        try Data(param).write(to: URL(fileURLWithPath: path))
        try Data(bin).write(to: URL(fileURLWithPath: scratch + "/model.bin"))
        try readEveryTensor(path)
        _ = try UpscaleModelLoader.load(path: path)
    }

    static let ncnnDictionary = ["Convolution", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PReLU", "PixelShuffle",
                                 "Input", "ConvolutionDepthWise", "InnerProduct", "BatchNorm", " 1 1 ", " 2 1 ", " 0=", " 1=", " 5=1",
                                 " 6=", " 7=2", " 9=2", " 11=", " -23310=1,", " -23301=2,", "\n", "_out", "_s0", "_s1"]

    /// `.param` text: each input gets a `.bin` computed from its own layers, so layouts that parse also load and
    /// reach the graph verification of the APISR conversion.
    static let ncnnParam = FuzzFamily(
        name: "ncnn-param", summary: "ncnn .param text and the APISR graph verification (a .bin is made to match)",
        dictionary: ncnnDictionary,
        seeds: { [Data(tinySRVGG.utf8), Data(tinyRRDB.utf8)] + corpus("ncnn-param") },
        run: { input, scratch in
            let text = String(decoding: input, as: UTF8.self)
            try loadNCNN(param: Array(input), bin: bin(for: text) ?? [], scratch: scratch)
        })

    /// `.bin` weights behind a fixed graph; the first byte picks it (even: tiny SRVGG, odd: tiny RRDB).
    static let ncnnBin = FuzzFamily(
        name: "ncnn-bin", summary: "ncnn .bin weights (fp32, fp16 and quantised tags) behind fixed graphs",
        dictionary: ["\u{47}\u{6B}\u{30}\u{01}", "\u{0}\u{0}\u{0}\u{0}", "\u{56}\u{C0}\u{02}\u{00}", "\u{38}\u{4B}\u{0D}\u{00}"],
        seeds: {
            var seeds: [Data] = []
            for (selector, text) in [(UInt8(0), tinySRVGG), (1, tinyRRDB)] {
                for tag: UInt32 in [0, 0x0130_6B47] { seeds.append(Data([selector] + bin(for: text, tag: tag)!)) }
            }
            return seeds + corpus("ncnn-bin")
        },
        run: { input, scratch in
            let bytes = Array(input)
            let text = (bytes.first ?? 0) % 2 == 0 ? tinySRVGG : tinyRRDB
            try loadNCNN(param: Array(text.utf8), bin: Array(bytes.dropFirst()), scratch: scratch)
        })
}
