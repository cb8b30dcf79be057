import Foundation
import LapseTensor
import LapseWeights
import Testing

/// Lightning training checkpoints opened for their `state_dict` (`CheckpointFile.open(_:stateDictKey:)`): the
/// fixtures of `Tools/fixtures/lightning_ckpt.py` and hand-made pickles.
@Suite("Lightning checkpoints")
struct LightningCheckpointTests {
    static let expectedClasses = [
        "lightning_fabric.utilities.data.AttributeDict", "pytorch_lightning.utilities.parsing.AttributeDict",
        "argparse.Namespace", "pathlib.PosixPath", "functools.partial", "torch.optim.adamw.AdamW",
        "torch.optim.lr_scheduler.StepLR", "torch.device", "torch.float32", "omegaconf.dictconfig.DictConfig",
        "omegaconf.base.ContainerMetadata", "typing.Any", "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
        "numpy.dtype", "numpy._core.multiarray.scalar",
    ]

    @Test func stateDictLoadsAndTheTrainingStateStaysInert() throws {
        let path = Paths.fixture("lightning.ckpt")
        let file = try CheckpointFile.open(path, stateDictKey: "state_dict")
        #expect(file.stateDictKey == "state_dict")
        #expect(!file.keys.isEmpty && file.keys.allSatisfy { $0.hasPrefix("state_dict.") }, "\(file.keys)")

        let weights = try Weights.load(path, stateDictKey: "state_dict")
        #expect(weights.origin == "\(path) [state_dict]")
        let model = weights.scoped("model.")
        let reference = try CheckpointFile.open(Paths.fixture("lightning-expected.safetensors"))
        #expect(Set(model.keys) == Set(reference.keys))
        for key in reference.keys {
            let a = try model.tensor(key), b = try reference.tensor(key)
            #expect(a.shape == b.shape && maxDifference(a, b) == 0, "\(key)")
        }
        #expect(file.dtype(of: "state_dict.model.half") == .f16 && file.dtype(of: "state_dict.model.bf") == .bf16)
        #expect(file.dtype(of: "state_dict.model.norm.num_batches_tracked") == .i64)

        // One warning line, naming every class that became a placeholder; the weights carry it to the node.
        #expect(file.warnings.count == 1 && weights.warnings == file.warnings)
        let warning = try #require(file.warnings.first)
        #expect(!warning.contains("\n") && warning.hasPrefix(path) && warning.contains("nothing was imported or run"))
        for name in Self.expectedClasses { #expect(warning.contains(name), "\(name) in \(warning)") }
        #expect(warning.contains("names \(Self.expectedClasses.count) class(es)"), "\(warning)")

        // The metadata stays readable; training-state tensors are in the tree but never located or loaded.
        let root = try #require(file.root)
        #expect(root["epoch"] == .int(3) && root["global_step"] == .int(1200))
        #expect(root["pytorch-lightning_version"] == .string("2.0.9"))
        #expect(root["hyper_parameters"] == .placeholder("lightning_fabric.utilities.data.AttributeDict"))
        guard case .list(let optimizers)? = root["optimizer_states"], case .dict(let state)? = optimizers.first?["state"],
              let first = state.first(where: { $0.key == .int(0) })?.value else {
            Issue.record("no optimizer state in \(root)"); return
        }
        #expect(first["exp_avg"] == .tensor("optimizer_states.0.state.0.exp_avg"))
        #expect(!file.contains("optimizer_states.0.state.0.exp_avg"))
        #expect(file.keys.count == 12)  // 9 module tensors + the transposed view, half and bf16 extras
    }

    @Test func legacyFormatCheckpointLoadsTheSameWay() throws {
        let path = Paths.fixture("lightning-legacy.ckpt")
        let weights = try Weights.load(path, stateDictKey: "state_dict").scoped("model.")
        let reference = try CheckpointFile.open(Paths.fixture("lightning-expected.safetensors"))
        #expect(Set(weights.keys) == Set(reference.keys))
        for key in reference.keys { #expect(maxDifference(try weights.tensor(key), try reference.tensor(key)) == 0, "\(key)") }
        let warning = try #require(weights.warnings.first)
        #expect(weights.warnings.count == 1 && warning.contains("names \(Self.expectedClasses.count) class(es)"), "\(warning)")
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path) }
        guard case .forbiddenGlobal? = error else { Issue.record("\(String(describing: error))"); return }
    }

    @Test func withoutTheKeyUnknownClassesAreRefusedAsBefore() throws {
        let path = Paths.fixture("lightning.ckpt")
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path) }
        guard case .forbiddenGlobal(_, let name)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(Self.expectedClasses.contains(name), "\(name)")
    }

    @Test func placeholderInsideTheStateDictIsRefused() throws {
        let path = Paths.fixture("lightning-placeholder-in-sd.ckpt")
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path, stateDictKey: "state_dict") }
        let message = error?.errorDescription ?? ""
        #expect(message.contains("\"state_dict.model.extra\"") && message.contains("argparse.Namespace"), "\(message)")
    }

    @Test(arguments: [("lightning-os-system.ckpt", "os.system"), ("lightning-eval.ckpt", "__builtin__.eval")])
    func dangerousGlobalAnywhereRefusesTheFile(name: String, global: String) throws {
        let path = Paths.fixture(name)
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path, stateDictKey: "state_dict") }
        #expect(error == .forbiddenGlobal(file: path, name: global))
        #expect(error?.errorDescription?.contains("forbidden global \"\(global)\"") == true)
        // Without the key the first unknown class already stops the load, before the unpickler reaches it.
        let strict = expectWeightsError(path) { _ = try CheckpointFile.open(path) }
        guard case .forbiddenGlobal? = strict else { Issue.record("\(String(describing: strict))"); return }
    }

    @Test func missingKeyNamesTheTopLevelKeys() throws {
        let path = Paths.fixture("lightning.ckpt")
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path, stateDictKey: "model_state") }
        let message = error?.errorDescription ?? ""
        #expect(message.contains("no \"model_state\" entry") && message.contains("\"state_dict\"") && message.contains("\"epoch\""), "\(message)")
    }

    // MARK: - Truncated files

    @Test func truncatedMidStorageNamesTheStorageAndTensor() throws {
        let path = Paths.fixture("lightning-truncated.ckpt")
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Paths.fixture("lightning-truncated.json")))) as! [String: Any]
        let storage = info["storage"] as! String, tensor = info["tensor"] as! String
        for key in ["state_dict", nil] as [String?] {
            let error = expectWeightsError(path) { _ = try CheckpointFile.open(path, stateDictKey: key) }
            guard case .truncated(let file, let reason)? = error else { Issue.record("\(String(describing: error))"); continue }
            #expect(file == path)
            #expect(reason.contains("storage \"\(storage)\"") && reason.contains("tensor \"\(tensor)\"") && reason.contains("download"), "\(reason)")
        }
    }

    @Test func everyCutOfTheCheckpointIsAClearError() throws {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Paths.fixture("lightning.ckpt"))))
        var truncated = 0, cuts = 0
        for length in stride(from: 0, to: bytes.count, by: 53) {
            let path = try writeBytes(Array(bytes[..<length]), "cut.ckpt")
            defer { try? FileManager.default.removeItem(atPath: path) }
            cuts += 1
            if case .truncated? = expectWeightsError(path, { _ = try CheckpointFile.open(path, stateDictKey: "state_dict") }) { truncated += 1 }
        }
        // Only the first bytes (no zip header yet) are another kind of error.
        #expect(truncated >= cuts - 1, "\(truncated) of \(cuts)")
    }

    @Test func truncatedLegacyFileNamesTheTensor() throws {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Paths.fixture("legacy.pth"))))
        let path = try writeBytes(Array(bytes.dropLast(3)), "legacy-cut.pth")
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path) }
        guard case .truncated(_, let reason)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(reason.contains("extends past the end of the file") && reason.contains("(tensor \""), "\(reason)")
    }

    // MARK: - Hand-made pickles

    /// `{"state_dict": {"w": tensor(storage "0")}, "x": <body>}`.
    func checkpoint(_ body: (inout PickleBuilder) -> Void) -> [UInt8] {
        var p = PickleBuilder()
        p.raw([0x7D, 0x28]); p.str("state_dict")
        p.raw([0x7D, 0x28]); p.str("w"); p.tensor(storage: "0", numel: 4, size: [2, 2], stride: [2, 1]); p.raw([0x75])
        p.str("x"); body(&p)
        p.raw([0x75]); p.stop()
        return p.bytes
    }

    @Test("only the state dict's storages are located: the rest may even be missing from the archive")
    func onlyStateDictStoragesAreTouched() throws {
        var p = PickleBuilder()
        p.raw([0x7D, 0x28]); p.str("state_dict")
        p.raw([0x7D, 0x28]); p.str("w"); p.tensor(storage: "0", numel: 4, size: [4], stride: [1]); p.raw([0x75])
        p.str("optimizer_states"); p.tensor(storage: "1", numel: 1 << 30, size: [1 << 30], stride: [1])
        p.raw([0x75]); p.stop()
        let path = try torchFile(p.bytes)  // holds storage "0" only
        let file = try CheckpointFile.open(path, stateDictKey: "state_dict")
        #expect(try file.tensor("state_dict.w").scalars == [0, 1, 2, 3])
        #expect(file.warnings.isEmpty)
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path) }
        #expect(error?.errorDescription?.contains("storage \"1\" of tensor \"optimizer_states\" has no entry") == true)
    }

    @Test("calling, building and filling a placeholder yields placeholders")
    func placeholderOperations() throws {
        let bytes = checkpoint { p in
            p.raw([0x28])  // MARK: a tuple of placeholder results
            p.global("lightning_fabric.utilities.data", "AttributeDict"); p.raw([0x29, 0x81])  // NEWOBJ
            p.raw([0x28]); p.str("lr"); p.int(1); p.raw([0x75])                                // SETITEMS on it
            p.raw([0x7D, 0x62])                                                                // BUILD
            p.global("argparse", "Namespace"); p.raw([0x29, 0x52, 0x29, 0x52])                 // REDUCE, then call the result
            p.global("torch.optim.adam", "Adam"); p.raw([0x29, 0x7D, 0x92])                    // NEWOBJ_EX
            p.global("omegaconf.listconfig", "ListConfig"); p.raw([0x29, 0x81, 0x28, 0x4B, 1, 0x4B, 2, 0x65])  // APPENDS
            p.global("functools", "partial"); p.global("torch.optim.adamw", "AdamW"); p.raw([0x85, 0x52])
            p.raw([0x74])
        }
        let path = try torchFile(bytes)
        let file = try CheckpointFile.open(path, stateDictKey: "state_dict")
        #expect(file.root?["x"] == .tuple([
            .placeholder("lightning_fabric.utilities.data.AttributeDict"), .placeholder("argparse.Namespace"),
            .placeholder("torch.optim.adam.Adam"), .placeholder("omegaconf.listconfig.ListConfig"),
            .placeholder("functools.partial"),
        ]))
        #expect(file.keys == ["state_dict.w"] && file.warnings.count == 1)
    }

    @Test("dangerous globals are refused in placeholder mode, naming them", arguments: [
        ("posix", "system"), ("nt", "system"), ("os", "popen"), ("subprocess", "Popen"), ("sys", "modules"),
        ("builtins", "getattr"), ("builtins", "setattr"), ("__builtin__", "exec"), ("builtins", "__import__"),
        ("builtins", "compile"), ("builtins", "open"), ("importlib", "import_module"), ("ctypes", "CDLL"),
        ("socket", "socket"), ("shutil", "rmtree"), ("pickle", "loads"), ("_pickle", "loads"), ("marshal", "loads"),
        ("runpy", "run_path"), ("code", "interact"), ("pty", "spawn"), ("webbrowser", "open"), ("operator", "attrgetter"),
        ("torch", "load"), ("torch.storage", "_load_from_bytes"), ("numpy.testing._private.utils", "runstring"),
        ("argparse", "_os.system"), ("lightning.pytorch", "os"), ("torch.utils.cpp_extension", "load_inline"),
    ] as [(String, String)])
    func dangerousGlobalsAreRefused(module: String, name: String) throws {
        // STACK_GLOBAL (protocol 4's form, which allows dotted names) inside hyper_parameters.
        let bytes = checkpoint { p in
            p.raw([0x8C, UInt8(module.utf8.count)] + Array(module.utf8)); p.raw([0x8C, UInt8(name.utf8.count)] + Array(name.utf8))
            p.raw([0x93, 0x29, 0x52])
        }
        let path = try torchFile(bytes)
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path, stateDictKey: "state_dict") }
        #expect(error == .forbiddenGlobal(file: path, name: "\(module).\(name)"))
    }

    @Test("functools.partial of os.system is refused for os.system")
    func partialOfSystem() throws {
        let bytes = checkpoint { p in
            p.global("functools", "partial"); p.global("os", "system"); p.str("echo pwned"); p.raw([0x86, 0x52])
        }
        let path = try torchFile(bytes)
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path, stateDictKey: "state_dict") }
        #expect(error == .forbiddenGlobal(file: path, name: "os.system"))
    }

    @Test("a placeholder used as a storage class is an unknown dtype, not a storage")
    func placeholderStorageClass() throws {
        var p = PickleBuilder()
        p.raw([0x7D, 0x28]); p.str("state_dict"); p.raw([0x7D, 0x28]); p.str("w")
        p.global("torch._utils", "_rebuild_tensor_v2")
        p.raw([0x28, 0x28]); p.str("storage"); p.global("torch", "UntypedStorage"); p.str("0"); p.str("cpu"); p.int(4)
        p.raw([0x74, 0x51]); p.int(0); p.tuple([4]); p.tuple([1]); p.raw([0x89, 0x7D, 0x74, 0x52, 0x75, 0x75]); p.stop()
        let path = try torchFile(p.bytes)
        let error = expectWeightsError(path) { _ = try CheckpointFile.open(path, stateDictKey: "state_dict") }
        #expect(error == .unknownDType(file: path, dtype: "torch.UntypedStorage"))
    }
}
