import Foundation

/// A value read from a PyTorch pickle. Containers keep their order; tensors are references by key into the
/// `CheckpointFile` they came from (read them with `tensor(_:)`), so walking the value never loads tensor data.
public indirect enum PickleValue: Sendable, Equatable {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer too large for `Int`, as little-endian two's-complement bytes.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case list([PickleValue])
    case tuple([PickleValue])
    case set([PickleValue])
    case dict([DictEntry])
    /// A tensor; the payload is its key in `CheckpointFile.keys`.
    case tensor(String)
    /// A reference to an allowed global that was not called (for example a storage class).
    case global(String)
    /// An object of a class outside the allow-list (Lightning's `AttributeDict`, `argparse.Namespace`, an optimizer
    /// class, …), named by its class and kept inert: nothing was imported, constructed or called, and its state was
    /// dropped. Only files opened with `CheckpointFile.open(_:stateDictKey:)` hold them, and never under that key.
    case placeholder(String)

    /// One key/value pair of a pickled dict, in insertion order.
    public struct DictEntry: Sendable, Equatable {
        public var key: PickleValue
        public var value: PickleValue
    }

    /// The value under a string key of a dict, or nil.
    public subscript(key: String) -> PickleValue? {
        guard case .dict(let entries) = self else { return nil }
        return entries.first { $0.key == .string(key) }?.value
    }

    public var intValue: Int? { if case .int(let v) = self { v } else if case .bool(let b) = self { b ? 1 : 0 } else { nil } }
    public var doubleValue: Double? { if case .float(let v) = self { v } else if case .int(let v) = self { Double(v) } else { nil } }
    public var stringValue: String? { if case .string(let v) = self { v } else { nil } }
    public var dictEntries: [DictEntry]? { if case .dict(let v) = self { v } else { nil } }
}

/// Description of a tensor found in a pickle: which storage, at which offset, with which shape and strides.
struct PickledTensor {
    var storage: PickledStorage
    var offset: Int
    var shape: [Int]
    var strides: [Int]
}

/// A storage reference from a persistent id `('storage', torch.XStorage, key, location, numel)`.
struct PickledStorage {
    var key: String
    var dtype: DType
    var numel: Int
    /// Elements to skip at the start of the stored bytes (legacy-format storage views).
    var elementOffset = 0
}

/// A restricted unpickler: the binary opcodes of protocols 2–5 that state dicts use, and globals limited to the
/// tensor-rebuilding functions, storage classes and plain containers. Unknown globals are an error naming them;
/// no Python object is ever instantiated and no code runs, so a hostile pickle can only fail to load.
///
/// With `placeholders` on (training checkpoints opened for one top-level key), a global outside the allow-list that
/// is not on the refusal list (`refusesAlways`) becomes an inert placeholder: calling it (REDUCE, NEWOBJ,
/// NEWOBJ_EX) yields another placeholder, its state (BUILD) and items (SETITEMS, APPENDS) are counted and dropped.
/// The caller refuses any placeholder inside the part it loads.
struct Unpickler {
    /// Internal object model: containers are references so that memoised objects mutated later (the usual
    /// `EMPTY_DICT, BINPUT, …, SETITEMS` sequence) are seen updated through `BINGET`, exactly as in Python.
    ///
    /// Each container records its nesting `depth` (1 + the deepest item) and whether it already sits inside another
    /// container (`nested`). A nested container may still gain items, but never deeper ones: its parents' recorded
    /// depths would go stale, and that is exactly how a cycle (a list appended to itself) or a deep chain built
    /// through the memo would slip past the depth limit. Real checkpoints fill each container before nesting it.
    final class ListBox {
        var items: [Obj] = []
        var depth = 1
        var nested = false
    }
    final class DictBox {
        var keys: [Obj] = []
        var values: [Obj] = []
        var index: [String: Int] = [:]
        var depth = 1
        var nested = false
        func set(_ k: Obj, _ v: Obj) {
            let h = k.hashKey
            if let h, let i = index[h] { values[i] = v; return }
            if let h { index[h] = keys.count }
            keys.append(k); values.append(v)
        }
    }

    indirect enum Obj {
        case none, bool(Bool), int(Int), bigInt([UInt8]), float(Double), string(String), bytes([UInt8])
        case list(ListBox), tuple([Obj], depth: Int), set(ListBox), dict(DictBox)
        case global(String), storage(PickledStorage), tensor(Int), mark
        /// An object of a class outside the allow-list (placeholder mode only): its class name, nothing else.
        case placeholder(String)

        /// Nesting depth: 0 for a scalar, 1 + the deepest item for a container (read from the container, never
        /// recomputed, so it costs nothing however the objects are shared).
        var depth: Int {
            switch self {
            case .list(let b), .set(let b): b.depth
            case .dict(let b): b.depth
            case .tuple(_, let d): d
            default: 0
            }
        }

        /// Python's hash equality for the hashable kinds, as a string; nil for unhashable values and for keys longer
        /// than `maxHashKeyLength` characters (those are kept as distinct keys: hashing them on every `SETITEM` of a
        /// hostile pickle that reuses one huge key through the memo would cost time without bound).
        var hashKey: String? {
            var budget = Self.maxHashKeyLength
            return hashKey(budget: &budget)
        }

        static let maxHashKeyLength = 4096

        private func hashKey(budget: inout Int) -> String? {
            let key: String?
            switch self {
            case .none: key = "n"
            case .bool(let b): key = "i\(b ? 1 : 0)"
            case .int(let i): key = "i\(i)"
            case .float(let d): key = d.rounded() == d && abs(d) < 1e18 ? "i\(Int(d))" : "f\(d)"
            case .string(let s):
                guard s.utf8.count < budget else { return nil }
                key = "s" + s
            case .bytes(let b):
                guard 4 * b.count < budget else { return nil }
                key = "b" + b.map(String.init).joined(separator: ",")
            case .tuple(let items, _):
                var parts: [String] = []
                for item in items {
                    guard let part = item.hashKey(budget: &budget) else { return nil }
                    parts.append(part)
                }
                key = "t(" + parts.joined(separator: "\u{1}") + ")"
            default: return nil
            }
            guard let key, key.utf8.count <= budget else { return nil }
            budget -= key.utf8.count
            return key
        }

        var kind: String {
            switch self {
            case .none: "None"
            case .bool: "bool"
            case .int, .bigInt: "int"
            case .float: "float"
            case .string: "str"
            case .bytes: "bytes"
            case .list: "list"
            case .tuple: "tuple"
            case .set: "set"
            case .dict: "dict"
            case .global(let g): "global \(g)"
            case .storage: "storage"
            case .tensor: "tensor"
            case .mark: "mark"
            case .placeholder(let c): "object of class \(c)"
            }
        }
    }

    /// Globals a state dict may name, mapped to the dtype of storage classes.
    static let storageTypes: [String: DType] = [
        "torch.FloatStorage": .f32, "torch.HalfStorage": .f16, "torch.BFloat16Storage": .bf16,
        "torch.DoubleStorage": .f64, "torch.LongStorage": .i64, "torch.IntStorage": .i32,
        "torch.ShortStorage": .i16, "torch.CharStorage": .i8, "torch.ByteStorage": .u8, "torch.BoolStorage": .bool,
    ]
    static let callables: Set<String> = [
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
        "builtins.set", "builtins.frozenset", "builtins.list", "builtins.dict", "builtins.tuple",
        "__builtin__.set", "__builtin__.frozenset", "__builtin__.list", "__builtin__.dict", "__builtin__.tuple",
        "_codecs.encode",
    ]

    /// Modules whose globals are refused even in placeholder mode, with every submodule: code execution, process,
    /// file, network and import machinery, other deserialisers, and attribute gadgets (`operator.attrgetter`). A
    /// placeholder is never called, so naming one of these cannot run it; the file is refused anyway because no
    /// checkpoint has a reason to name them and the same file would run them under `torch.load(weights_only=False)`.
    static let refusedModules: Set<String> = [
        "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "sys", "builtins", "__builtin__",
        "importlib", "imp", "pkgutil", "zipimport", "runpy", "code", "codeop", "pdb", "bdb", "trace", "timeit",
        "profile", "cProfile", "doctest", "ctypes", "_ctypes", "cffi", "socket", "_socket", "ssl", "select",
        "selectors", "asyncio", "http", "urllib", "urllib2", "urllib3", "httplib", "ftplib", "smtplib", "telnetlib",
        "poplib", "imaplib", "xmlrpc", "socketserver", "requests", "aiohttp", "shutil", "tempfile", "glob",
        "fileinput", "io", "_io", "zipfile", "tarfile", "gzip", "bz2", "lzma", "sqlite3", "dbm", "shelve",
        "pickle", "_pickle", "cPickle", "pickletools", "dill", "cloudpickle", "joblib", "marshal", "yaml", "pty",
        "tty", "termios", "fcntl", "resource", "signal", "mmap", "webbrowser", "multiprocessing", "threading",
        "_thread", "concurrent", "platform", "sysconfig", "site", "inspect", "gc", "types", "operator",
        "_operator", "commands", "popen2", "distutils", "setuptools", "pip", "venv", "ensurepip", "idlelib",
        "tkinter", "turtle", "numpy.testing", "numpy.distutils", "numpy.f2py", "numpy.ctypeslib",
        "torch.hub", "torch.jit", "torch.package", "torch.serialization", "torch.utils.cpp_extension",
        "torch.distributed", "torch.multiprocessing", "torch._C", "torch.ops", "torch._ops", "torch._dynamo",
    ]
    /// Names refused wherever they appear as a component of the module or the qualified name: callables that run
    /// code, load files or reach other modules' globals (`argparse._os.system`), under any module.
    static let refusedNames: Set<String> = [
        "os", "_os", "sys", "_sys", "subprocess", "_subprocess", "builtins", "__builtins__", "system", "popen",
        "spawn", "exec", "execfile", "execv", "execve", "eval", "compile", "__import__", "import_module",
        "getattr", "setattr", "delattr", "__getattribute__", "__getattr__", "__setattr__", "__globals__",
        "__subclasses__", "__code__", "__reduce__", "__reduce_ex__", "globals", "locals", "vars", "open", "input",
        "breakpoint", "load", "loads", "load_inline", "_load_from_bytes", "runstring", "check_call",
        "check_output", "Popen",
    ]
    /// `builtins` types that carry no behaviour (omegaconf and dataclass metadata name them as values); the rest of
    /// `builtins` is refused in every mode.
    static let harmlessBuiltins: Set<String> = [
        "object", "str", "int", "float", "bool", "bytes", "bytearray", "complex", "slice", "range", "NoneType",
        "Ellipsis", "NotImplemented",
    ]

    /// True when a global must be refused even in placeholder mode (see `refusedModules`, `refusedNames`).
    static func refusesAlways(module: String, name: String) -> Bool {
        if module == "builtins" || module == "__builtin__" { return !harmlessBuiltins.contains(name) }
        var prefix = ""
        for part in module.split(separator: ".", omittingEmptySubsequences: false) {
            prefix = prefix.isEmpty ? String(part) : prefix + "." + part
            if refusedModules.contains(prefix) || refusedNames.contains(String(part)) { return true }
        }
        if module.isEmpty || name.isEmpty { return true }
        return name.split(separator: ".", omittingEmptySubsequences: false).contains { $0.isEmpty || refusedNames.contains(String($0)) }
    }

    /// Containers may nest this deep (state dicts nest a handful of levels; torch's own loader refuses far less
    /// than Python's recursion limit allows). Checked while unpickling, so a deeper structure is never built.
    static let maxDepth = 200
    /// Largest view that may hold more elements than its storage (see `_rebuild_tensor_v2`).
    static let maxExpandedView = 65_536

    let path: String
    let data: UnsafeRawBufferPointer
    /// Most items all containers together may hold, and most nodes the public value tree may have: a pickle
    /// without sharing has at most one per byte, so the limit only stops shared containers expanded over and over
    /// (real `data.pkl` files are well under a megabyte; the 16 M ceiling keeps a hostile one under ~1 GB).
    var elementLimit: Int { min(1_000_000 + 4 * data.count, 16_000_000) }
    /// Resolves a persistent id tuple into a storage (torch zip: checks the storage's entry exists and is big enough).
    let persistentLoad: (Obj) throws -> PickledStorage
    /// Whether unknown, not refused globals become placeholders instead of an error (see the type's comment).
    let placeholders: Bool
    /// The classes that became placeholders, in first-use order.
    private(set) var placeholderClasses: [String] = []
    private(set) var tensors: [PickledTensor] = []
    /// Byte position just after the STOP opcode once `load` returned (legacy files hold several pickles in a row).
    private(set) var end = 0

    init(path: String, data: UnsafeRawBufferPointer, placeholders: Bool = false,
         persistentLoad: @escaping (Obj) throws -> PickledStorage) {
        self.path = path
        self.data = data
        self.placeholders = placeholders
        self.persistentLoad = persistentLoad
    }

    private func fail(_ reason: String) -> WeightsError { .invalidPickle(file: path, reason: reason) }

    /// Runs the pickle to its STOP opcode and returns the top object.
    mutating func load() throws -> Obj {
        var stack: [Obj] = []
        var marks: [Int] = []
        var memo: [Int: Obj] = [:]
        var pos = 0
        var opPos = 0
        let n = data.count
        var elements = 0
        let elementLimit = self.elementLimit
        let path = self.path

        func need(_ k: Int) throws {
            guard k >= 0, k <= n - pos else { throw WeightsError.truncated(file: path, reason: "pickle ends inside an opcode at byte \(pos)") }
        }
        func u8() throws -> Int { try need(1); defer { pos += 1 }; return Int(data[pos]) }
        func u16() throws -> Int { try need(2); defer { pos += 2 }; return Int(data[pos]) | Int(data[pos + 1]) << 8 }
        func u32() throws -> UInt32 {
            try need(4); defer { pos += 4 }
            return UInt32(data[pos]) | UInt32(data[pos + 1]) << 8 | UInt32(data[pos + 2]) << 16 | UInt32(data[pos + 3]) << 24
        }
        func u64() throws -> UInt64 {
            let lo = UInt64(try u32()); let hi = UInt64(try u32()); return lo | hi << 32
        }
        func take(_ k: Int) throws -> [UInt8] { try need(k); defer { pos += k }; return Array(data[pos..<pos + k]) }
        func length64() throws -> Int {
            let v = try u64()
            guard v <= UInt64(n) else { throw WeightsError.truncated(file: path, reason: "pickle declares a \(v)-byte object in a \(n)-byte pickle") }
            return Int(v)
        }
        func line() throws -> String {
            var e = pos
            while e < n, data[e] != 0x0A { e += 1 }
            guard e < n else { throw WeightsError.truncated(file: path, reason: "pickle ends inside a text line") }
            defer { pos = e + 1 }
            return String(decoding: data[pos..<e], as: UTF8.self)
        }
        func pop() throws -> Obj {
            if let m = marks.last, stack.count <= m { throw fail("pop crosses a mark at byte \(pos)") }
            guard let v = stack.popLast() else { throw fail("stack underflow at byte \(pos)") }
            return v
        }
        func popMark() throws -> [Obj] {
            guard let m = marks.popLast(), m <= stack.count else { throw fail("no mark for opcode at byte \(pos)") }
            let items = Array(stack[m...])
            stack.removeSubrange(m...)
            return items
        }
        func top() throws -> Obj {
            guard let v = stack.last, stack.count > (marks.last ?? 0) else { throw fail("stack underflow at byte \(pos)") }
            return v
        }
        let placeholders = self.placeholders
        var placeholderSet: Set<String> = []
        var placeholderClasses: [String] = []
        defer { self.placeholderClasses = placeholderClasses }
        func global(_ module: String, _ name: String) throws -> Obj {
            let full = module + "." + name
            if Self.storageTypes[full] != nil || Self.callables.contains(full) { return .global(full) }
            guard placeholders, !Self.refusesAlways(module: module, name: name) else {
                throw WeightsError.forbiddenGlobal(file: path, name: full)
            }
            if placeholderSet.insert(full).inserted { placeholderClasses.append(full) }
            return .placeholder(full)
        }
        func string(_ bytes: [UInt8]) throws -> Obj {
            guard let s = String(validating: bytes, as: UTF8.self) else { throw fail("string is not valid UTF-8 at byte \(pos)") }
            return .string(s)
        }
        func long(_ bytes: [UInt8]) -> Obj {
            if bytes.isEmpty { return .int(0) }
            if bytes.count <= 8 {
                var v: UInt64 = 0
                for (i, b) in bytes.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
                if bytes.last! & 0x80 != 0, bytes.count < 8 { v |= ~UInt64(0) << (8 * UInt64(bytes.count)) }
                return .int(Int(Int64(bitPattern: v)))
            }
            return .bigInt(bytes)
        }

        /// Counts items stored into containers against `elementLimit`.
        func account(_ count: Int) throws {
            elements += count
            guard elements <= elementLimit else {
                throw WeightsError.malformed(file: path, reason: "pickle builds containers holding more than \(elementLimit) items in all (byte \(opPos)): shared containers copied over and over, which no checkpoint does")
            }
        }
        /// The depth of a container holding `items` that was `current` deep; refuses one past `maxDepth`.
        func depth(of items: [Obj], from current: Int) throws -> Int {
            var d = current
            for item in items where item.depth >= d { d = item.depth + 1 }
            guard d <= Self.maxDepth else {
                throw WeightsError.malformed(file: path, reason: "pickle nests containers deeper than \(Self.maxDepth) levels (byte \(opPos)); checkpoints nest a few levels, so it is hostile or corrupt")
            }
            return d
        }
        /// Marks containers that were just put inside another one (see `ListBox`).
        func markNested(_ items: [Obj]) {
            for item in items {
                switch item {
                case .list(let b), .set(let b): b.nested = true
                case .dict(let b): b.nested = true
                default: break
                }
            }
        }
        /// Raises a container's depth for new items, refusing to deepen one that is already nested.
        /// The container's new depth. Not an `inout` of the container's field: a container added to itself is read
        /// through its items while the field would be held for writing.
        func deepened(_ current: Int, nested: () -> Bool, with items: [Obj], kind: String) throws -> Int {
            markNested(items)  // first, so that a container added to itself counts as nested
            let d = try depth(of: items, from: current)
            guard d == current || !nested() else {
                throw WeightsError.malformed(file: path, reason: "pickle makes a \(kind) deeper after putting it inside another container (byte \(opPos)): a cycle or a chain built through the memo, which no checkpoint contains")
            }
            return d
        }
        func tuple(_ items: [Obj]) throws -> Obj {
            try account(items.count)
            let d = try depth(of: items, from: 1)
            markNested(items)
            return .tuple(items, depth: d)
        }
        func append(_ items: [Obj], to box: ListBox, kind: String) throws {
            try account(items.count)
            box.depth = try deepened(box.depth, nested: { box.nested }, with: items, kind: kind)
            box.items += items
        }
        func newList(_ items: [Obj]) throws -> ListBox {
            let box = ListBox()
            try append(items, to: box, kind: "list")
            return box
        }
        func set(_ pairs: [Obj], in box: DictBox) throws {
            try account(pairs.count)
            box.depth = try deepened(box.depth, nested: { box.nested }, with: pairs, kind: "dict")
            for i in stride(from: 0, to: pairs.count - 1, by: 2) { box.set(pairs[i], pairs[i + 1]) }
        }
        let build = Builders(tuple: tuple, newList: newList, set: set, account: account)

        while true {
            opPos = pos
            let op = try u8()
            switch op {
            case 0x80: // PROTO
                let v = try u8()
                guard v <= 5 else { throw fail("unsupported pickle protocol \(v)") }
            case 0x95: _ = try u64() // FRAME: framing is a hint for streaming readers; the data is already mapped
            case 0x2E: // STOP
                let v = try pop()
                end = pos
                return v
            case 0x4E: stack.append(.none)
            case 0x88: stack.append(.bool(true))
            case 0x89: stack.append(.bool(false))
            case 0x7D: stack.append(.dict(DictBox()))
            case 0x5D: stack.append(.list(ListBox()))
            case 0x29: stack.append(.tuple([], depth: 1))
            case 0x8F: stack.append(.set(ListBox()))
            case 0x28: marks.append(stack.count)
            case 0x58: stack.append(try string(take(Int(try u32()))))
            case 0x8C: stack.append(try string(take(try u8())))
            case 0x8D: stack.append(try string(take(try length64())))
            case 0x55: stack.append(.string(String(decoding: try take(try u8()), as: UTF8.self)))
            case 0x54:
                let len = Int(Int32(bitPattern: try u32()))
                guard len >= 0 else { throw fail("negative string length at byte \(opPos)") }
                stack.append(.string(String(decoding: try take(len), as: UTF8.self)))
            case 0x43: stack.append(.bytes(try take(try u8())))
            case 0x42: stack.append(.bytes(try take(Int(try u32()))))
            case 0x8E, 0x96: stack.append(.bytes(try take(try length64())))
            case 0x71: memo[try u8()] = try top()
            case 0x72: memo[Int(try u32())] = try top()
            case 0x94: memo[memo.count] = try top()
            case 0x70:
                guard let k = Int(try line()) else { throw fail("bad PUT index at byte \(opPos)") }
                memo[k] = try top()
            case 0x68, 0x6A, 0x67:
                let k: Int
                if op == 0x68 { k = try u8() } else if op == 0x6A { k = Int(try u32()) } else {
                    guard let v = Int(try line()) else { throw fail("bad GET index at byte \(opPos)") }
                    k = v
                }
                guard let v = memo[k] else { throw fail("memo key \(k) is not defined (byte \(opPos))") }
                stack.append(v)
            case 0x63: // GLOBAL
                let module = try line(), name = try line()
                stack.append(try global(module, name))
            case 0x93: // STACK_GLOBAL
                let name = try pop(), module = try pop()
                guard case .string(let m) = module, case .string(let nm) = name else { throw fail("STACK_GLOBAL needs two strings (byte \(opPos))") }
                stack.append(try global(m, nm))
            case 0x4A: stack.append(.int(Int(Int32(bitPattern: try u32()))))
            case 0x4B: stack.append(.int(try u8()))
            case 0x4D: stack.append(.int(try u16()))
            case 0x8A: stack.append(long(try take(try u8())))
            case 0x8B:
                let len = Int(Int32(bitPattern: try u32()))
                guard len >= 0 else { throw fail("negative LONG4 length at byte \(opPos)") }
                stack.append(long(try take(len)))
            case 0x49, 0x4C: // INT, LONG (text)
                var s = try line()
                if s.hasSuffix("L") { s.removeLast() }
                if op == 0x49, s == "00" { stack.append(.bool(false)) } else if op == 0x49, s == "01" { stack.append(.bool(true)) } else {
                    guard let v = Int(s) else { throw fail("bad integer literal \"\(s.prefix(40))\" at byte \(opPos)") }
                    stack.append(.int(v))
                }
            case 0x47:
                let bits = try u64()
                stack.append(.float(Double(bitPattern: bits.byteSwapped)))
            case 0x46:
                let s = try line()
                guard let v = Double(s) else { throw fail("bad float literal at byte \(opPos)") }
                stack.append(.float(v))
            case 0x74: stack.append(try tuple(try popMark()))
            case 0x85: stack.append(try tuple([try pop()]))
            case 0x86: let b = try pop(), a = try pop(); stack.append(try tuple([a, b]))
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); stack.append(try tuple([a, b, c]))
            case 0x6C: stack.append(.list(try newList(try popMark())))
            case 0x64:
                let items = try popMark()
                guard items.count % 2 == 0 else { throw fail("DICT with an odd number of items at byte \(opPos)") }
                let box = DictBox()
                try set(items, in: box)
                stack.append(.dict(box))
            case 0x61: // APPEND
                let v = try pop()
                if case .placeholder = try top() { try account(1); break }  // a list subclass: items dropped
                guard case .list(let box) = try top() else { throw fail("APPEND to a non-list at byte \(opPos)") }
                try append([v], to: box, kind: "list")
            case 0x65: // APPENDS
                let items = try popMark()
                if case .placeholder = try top() { try account(items.count); break }
                guard case .list(let box) = try top() else { throw fail("APPENDS to a non-list at byte \(opPos)") }
                try append(items, to: box, kind: "list")
            case 0x90: // ADDITEMS
                let items = try popMark()
                if case .placeholder = try top() { try account(items.count); break }
                guard case .set(let box) = try top() else { throw fail("ADDITEMS to a non-set at byte \(opPos)") }
                try append(items, to: box, kind: "set")
            case 0x91: stack.append(.set(try newList(try popMark())))
            case 0x73: // SETITEM
                let v = try pop(), k = try pop()
                if case .placeholder = try top() { try account(2); break }  // a dict subclass (AttributeDict): dropped
                guard case .dict(let box) = try top() else { throw fail("SETITEM on a non-dict at byte \(opPos)") }
                try set([k, v], in: box)
            case 0x75: // SETITEMS
                let items = try popMark()
                guard items.count % 2 == 0 else { throw fail("SETITEMS with an odd number of items at byte \(opPos)") }
                if case .placeholder = try top() { try account(items.count); break }
                guard case .dict(let box) = try top() else { throw fail("SETITEMS on a non-dict at byte \(opPos)") }
                try set(items, in: box)
            case 0x62: // BUILD: object state (an OrderedDict's `_metadata`, a placeholder's `__dict__`) carries nothing
                // a loader needs; the object stays what it was (a placeholder stays inert: no `__setstate__` runs)
                _ = try pop()
                _ = try top()
            case 0x52: // REDUCE
                let args = try pop(), callable = try pop()
                guard case .tuple(let a, _) = args else { throw fail("REDUCE arguments are \(args.kind), not a tuple (byte \(opPos))") }
                stack.append(try call(callable, a, at: opPos, builders: build))
            case 0x81: // NEWOBJ
                let args = try pop(), cls = try pop()
                guard case .tuple(let a, _) = args else { throw fail("NEWOBJ arguments are not a tuple (byte \(opPos))") }
                stack.append(try call(cls, a, at: opPos, builders: build))
            case 0x92: // NEWOBJ_EX (protocol 4): only placeholders take keyword arguments
                let kwargs = try pop(), args = try pop(), cls = try pop()
                guard case .tuple(let a, _) = args, case .dict(let k) = kwargs else {
                    throw fail("NEWOBJ_EX needs an argument tuple and a keyword dict (byte \(opPos))")
                }
                if case .placeholder = cls { stack.append(cls); break }
                guard k.keys.isEmpty else { throw fail("NEWOBJ_EX with keyword arguments on \(cls.kind) (byte \(opPos))") }
                stack.append(try call(cls, a, at: opPos, builders: build))
            case 0x51: // BINPERSID
                let pid = try pop()
                stack.append(.storage(try persistentLoad(pid)))
            case 0x30: _ = try pop()
            case 0x31: _ = try popMark()
            case 0x32: stack.append(try top())
            default:
                throw fail(String(format: "opcode 0x%02x at byte %d is not supported", op, opPos))
            }
        }
    }

    /// The container constructors of `load`, which account for depth and size; `call` builds through them too.
    private struct Builders {
        let tuple: ([Obj]) throws -> Obj
        let newList: ([Obj]) throws -> ListBox
        let set: ([Obj], DictBox) throws -> Void
        let account: (Int) throws -> Void
    }

    private mutating func call(_ callable: Unpickler.Obj, _ args: [Obj], at pos: Int, builders: Builders) throws -> Obj {
        // Calling a placeholder (a class, or an instance's reduce function) yields another inert placeholder.
        if case .placeholder = callable { return callable }
        guard case .global(let name) = callable else { throw fail("REDUCE on \(callable.kind), not a callable (byte \(pos))") }
        switch name {
        case "collections.OrderedDict", "builtins.dict", "__builtin__.dict":
            let box = DictBox()
            if let first = args.first {
                var flat: [Obj] = []
                switch first {
                case .list(let l): flat = try pairItems(l.items, name, pos)
                case .tuple(let t, _): flat = try pairItems(t, name, pos)
                case .dict(let d):
                    flat.reserveCapacity(2 * d.keys.count)
                    for (k, v) in zip(d.keys, d.values) { flat.append(k); flat.append(v) }
                default: throw fail("\(name) called with \(first.kind) (byte \(pos))")
                }
                try builders.set(flat, box)
            }
            return .dict(box)
        case "builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset", "builtins.list", "builtins.tuple",
             "__builtin__.list", "__builtin__.tuple":
            var items: [Obj] = []
            if let first = args.first {
                switch first {
                case .list(let l), .set(let l): items = l.items
                case .tuple(let t, _): items = t
                default: throw fail("\(name) called with \(first.kind) (byte \(pos))")
                }
            }
            if name.hasSuffix("tuple") { return try builders.tuple(items) }
            let box = try builders.newList(items)
            return name.hasSuffix("list") ? .list(box) : .set(box)
        case "_codecs.encode":
            // Protocol 2 pickles bytes as encode(text, "latin1"): each code point is one byte.
            guard case .string(let s)? = args.first else { throw fail("_codecs.encode needs a string (byte \(pos))") }
            // Each call copies the whole string: counted like container items, so a string reused through the memo
            // cannot be expanded without bound.
            try builders.account(s.utf8.count)
            var out: [UInt8] = []
            for u in s.unicodeScalars {
                guard u.value < 256 else { throw fail("_codecs.encode input is not latin-1 (byte \(pos))") }
                out.append(UInt8(u.value))
            }
            return .bytes(out)
        case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
            guard let data = args.first, case .tensor = data else { throw fail("\(name) needs a tensor (byte \(pos))") }
            return data
        case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor":
            guard args.count >= 4, case .storage(let storage) = args[0], case .int(let offset) = args[1],
                  case .tuple(let sizeObjs, _) = args[2], case .tuple(let strideObjs, _) = args[3] else {
                throw fail("\(name) needs (storage, offset, size, stride) (byte \(pos))")
            }
            var shape: [Int] = [], strides: [Int] = []
            for s in sizeObjs { guard case .int(let v) = s else { throw fail("tensor size is not an int (byte \(pos))") }; shape.append(v) }
            for s in strideObjs { guard case .int(let v) = s else { throw fail("tensor stride is not an int (byte \(pos))") }; strides.append(v) }
            guard shape.count == strides.count else { throw fail("tensor has \(shape.count) sizes but \(strides.count) strides (byte \(pos))") }
            guard offset >= 0, let count = checkedProduct(shape) else {
                throw WeightsError.malformed(file: path, reason: "tensor with absurd shape \(shape) or offset \(offset)")
            }
            // The furthest element the view touches must lie inside its storage.
            var last = offset
            if count > 0 {
                for (d, s) in zip(shape, strides) {
                    guard s >= 0, case let (m, false) = (d - 1).multipliedReportingOverflow(by: s),
                          case let (sum, false) = last.addingReportingOverflow(m) else {
                        throw WeightsError.malformed(file: path, reason: "tensor with invalid strides \(strides) for shape \(shape)")
                    }
                    last = sum
                }
                guard last < storage.numel else {
                    throw WeightsError.malformed(file: path, reason: "tensor view \(shape) stride \(strides) at offset \(offset) exceeds its storage \"\(storage.key)\" of \(storage.numel) elements")
                }
            }
            // Stride 0 (an `expand`ed tensor) or overlapping strides repeat storage elements. Reading such a view
            // materialises every element, so a huge one over a tiny storage is a memory bomb: allow repeats only in
            // small views.
            guard count <= storage.numel || count <= Self.maxExpandedView else {
                throw WeightsError.malformed(file: path, reason: "tensor view \(shape) stride \(strides) has \(count) elements but its storage \"\(storage.key)\" only \(storage.numel); views that repeat storage elements may have at most \(Self.maxExpandedView)")
            }
            tensors.append(PickledTensor(storage: storage, offset: offset, shape: shape, strides: strides))
            return .tensor(tensors.count - 1)
        default:
            throw fail("\(name) cannot be called (byte \(pos))")
        }
    }

    /// The key/value items of an `OrderedDict(pairs)` call, flattened.
    private func pairItems(_ pairs: [Obj], _ name: String, _ pos: Int) throws -> [Obj] {
        var flat: [Obj] = []
        flat.reserveCapacity(2 * pairs.count)
        for p in pairs {
            guard case .tuple(let kv, _) = p, kv.count == 2 else { throw fail("\(name) item is not a pair (byte \(pos))") }
            flat.append(kv[0]); flat.append(kv[1])
        }
        return flat
    }
}
