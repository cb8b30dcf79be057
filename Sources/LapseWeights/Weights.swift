import LapseTensor

/// A named collection of tensors handed to a model: lookup with shape checks, prefix stripping, renaming and a
/// strict comparison against the names a model expects (like PyTorch's `load_state_dict`).
///
/// Entries taken from a `CheckpointFile` stay lazy: a tensor is only read (zero-copy for F32, converted otherwise)
/// when `tensor(_:)` or `require(_:shape:)` asks for it, so a collection over a large checkpoint costs nothing
/// until used.
public struct Weights: Sendable {
    indirect enum Item: @unchecked Sendable {
        case tensor(Tensor)
        case lazy(CheckpointFile, String)
        /// Rows `Range` of another entry's first dimension, cut when read (`splittingRows`).
        case rows(Item, Range<Int>)

        var shape: [Int]? {
            switch self {
            case .tensor(let t): t.shape
            case .lazy(let file, let key): file.shape(of: key)
            case .rows(let base, let rows): base.shape.map { [rows.count] + $0.dropFirst() }
            }
        }

        func read() throws -> Tensor {
            switch self {
            case .tensor(let t): return t
            case .lazy(let file, let key): return try file.tensor(key)
            case .rows(.lazy(let file, let key), let rows): return try file.tensor(key, rows: rows)
            case .rows(let base, let rows):
                let t = try base.read()
                let inner = Array(t.shape.dropFirst())
                return Tensor(shape: [rows.count] + inner, storage: t.storage, offset: t.offset + rows.lowerBound * Tensor.elementCount(inner))
            }
        }
    }

    private var items: [String: Item] = [:]
    /// Names in insertion (file) order.
    public private(set) var keys: [String] = []
    /// Where the tensors came from, for error messages and logs (e.g. `net.pth [params_ema]`).
    public var origin: String
    /// The checkpoint's warnings (`CheckpointFile.warnings`), kept through `scoped`, `renamed` and `stripping`
    /// for the node that loads the weights to log.
    public var warnings: [String] = []
    /// How models built from these weights keep their layer weights (see `WeightPrecision`; `halfTensor(_:)` is how
    /// a reader gets the 16-bit form). Kept through `scoped`, `renamed`, `stripping` and `adding`.
    public var precision: WeightPrecision = .fp32

    /// An empty collection.
    public init(origin: String = "weights") { self.origin = origin }

    /// A collection over in-memory tensors (keys in sorted order).
    public init(_ tensors: [String: Tensor], origin: String = "weights") {
        self.origin = origin
        for key in tensors.keys.sorted() { self[key] = tensors[key] }
    }

    /// Every tensor of a checkpoint, lazily.
    public init(checkpoint: CheckpointFile) {
        origin = checkpoint.path
        warnings = checkpoint.warnings
        for key in checkpoint.keys { insert(key, .lazy(checkpoint, key)) }
    }

    /// Opens a checkpoint and takes its model state dict (see `stateDict(from:)`); `stateDictKey` opens a
    /// training checkpoint for the state dict under that top-level key only (see `CheckpointFile.open`);
    /// `precision` is how models built from them keep their layer weights.
    public static func load(_ path: String, stateDictKey: String? = nil, precision: WeightPrecision = .fp32) throws -> Weights {
        var weights = try stateDict(from: CheckpointFile.open(path, stateDictKey: stateDictKey))
        weights.precision = precision
        return weights
    }

    private mutating func insert(_ key: String, _ item: Item) {
        if items.updateValue(item, forKey: key) == nil { keys.append(key) }
    }

    /// Number of tensors.
    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    /// True when a tensor of that name exists.
    public func contains(_ name: String) -> Bool { items[name] != nil }

    /// Shape of a tensor without reading it.
    public func shape(of name: String) -> [Int]? { items[name]?.shape }

    /// Gets or sets an in-memory tensor; getting a lazy entry reads it (errors become nil — use `tensor(_:)` to
    /// see them).
    public subscript(name: String) -> Tensor? {
        get { try? tensor(name) }
        set {
            if let t = newValue { insert(name, .tensor(t)) } else if items.removeValue(forKey: name) != nil {
                keys.removeAll { $0 == name }
            }
        }
    }

    /// Reads a tensor; a missing name is an error that suggests close names.
    public func tensor(_ name: String) throws -> Tensor {
        guard let item = items[name] else {
            throw WeightsError.missingTensor(file: origin, name: name, suggestions: closeMatches(for: name, in: keys))
        }
        return try item.read()
    }

    /// A float16/bfloat16 entry of a checkpoint (or rows of one, `splittingRows`) as a zero-copy `HalfTensor`, or nil
    /// when the entry is in memory or stored otherwise (then `tensor(_:)` reads it as float32).
    public func halfTensor(_ name: String) throws -> HalfTensor? {
        guard let item = items[name] else {
            throw WeightsError.missingTensor(file: origin, name: name, suggestions: closeMatches(for: name, in: keys))
        }
        switch item {
        case .lazy(let file, let key): return try file.halfTensor(key)
        case .rows(.lazy(let file, let key), let rows): return try file.halfTensor(key, rows: rows)
        default: return nil
        }
    }

    /// Reads a tensor the model cannot do without, checking its shape when `shape` is given.
    public func require(_ name: String, shape expected: [Int]? = nil) throws -> Tensor {
        if let expected, let actual = shape(of: name), actual != expected {
            throw WeightsError.shapeMismatch(file: origin, name: name, expected: expected, actual: actual)
        }
        return try tensor(name)
    }

    /// Reads every tensor into a plain dictionary (F32 entries stay zero-copy views of the file).
    public func materialized() throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        out.reserveCapacity(keys.count)
        for key in keys { out[key] = try tensor(key) }
        return out
    }

    /// Removes `prefix` from every name that starts with it; other names are kept unchanged.
    public func stripping(prefix: String) -> Weights {
        renamed([.prefix(prefix, "")])
    }

    /// Only the names under `prefix` (e.g. `"unet."`), with the prefix removed: the weights of one submodule.
    public func scoped(_ prefix: String) -> Weights {
        var out = Weights(origin: origin)
        out.warnings = warnings
        out.precision = precision
        for key in keys where key.hasPrefix(prefix) { out.insert(String(key.dropFirst(prefix.count)), items[key]!) }
        return out
    }

    /// This collection with `other`'s tensors added under `prefix` (lazy entries stay lazy, nothing is read); a name
    /// present in both takes `other`'s tensor. Reassembles a state dict from parts that travelled separately.
    public func adding(_ other: Weights, prefix: String = "") -> Weights {
        var out = self
        for key in other.keys { out.insert(prefix + key, other.items[key]!) }
        out.warnings += other.warnings.filter { !out.warnings.contains($0) }
        return out
    }

    /// This collection with `name` replaced by `parts.count` equal slices of its first dimension, in order (a fused
    /// `in_proj_weight` `[3d, d]` into q, k and v `[d, d]`). Nothing is read: each part is cut when asked for, from
    /// the file's bytes for its rows only. Throws when `name` is missing or its first dimension does not divide.
    public func splittingRows(of name: String, into parts: [String]) throws -> Weights {
        guard let item = items[name], let shape = item.shape else {
            throw WeightsError.missingTensor(file: origin, name: name, suggestions: closeMatches(for: name, in: keys))
        }
        guard !parts.isEmpty, let first = shape.first, first % parts.count == 0 else {
            let rows = shape.first.map { ($0 + parts.count - 1) / max(parts.count, 1) * parts.count } ?? parts.count
            throw WeightsError.shapeMismatch(file: origin, name: name, expected: [rows] + shape.dropFirst(), actual: shape)
        }
        var out = self
        out[name] = nil
        let size = first / parts.count
        for (i, part) in parts.enumerated() { out.insert(part, .rows(item, (i * size)..<((i + 1) * size))) }
        return out
    }

    /// One renaming rule applied to tensor names.
    public enum RenameRule: Sendable {
        /// Replace a leading `from` with `to`.
        case prefix(String, String)
        /// Replace every occurrence of `from` with `to`.
        case substring(String, String)
        /// Rename exactly `from` to `to`.
        case exact(String, String)
    }

    /// Applies `rules` in order to every name. When two names collide, the later one wins.
    public func renamed(_ rules: [RenameRule]) -> Weights {
        var out = Weights(origin: origin)
        out.warnings = warnings
        out.precision = precision
        for key in keys {
            var name = key
            for rule in rules {
                switch rule {
                case .prefix(let from, let to): if name.hasPrefix(from) { name = to + name.dropFirst(from.count) }
                case .substring(let from, let to): if !from.isEmpty { name = name.replacingAll(from, with: to) }
                case .exact(let from, let to): if name == from { name = to }
                }
            }
            out.insert(name, items[key]!)
        }
        return out
    }

    /// Compares the names (and, when given, shapes) against what a model expects.
    public func report(expected: [String: [Int]?]) -> LoadReport {
        var missing: [String] = [], mismatched: [LoadReport.ShapeMismatch] = []
        for name in expected.keys.sorted() {
            guard let actual = shape(of: name) else { missing.append(name); continue }
            if let want = expected[name]!, want != actual { mismatched.append(.init(name: name, expected: want, actual: actual)) }
        }
        let unexpected = keys.filter { expected[$0] == nil }
        var close: [String: [String]] = [:]
        // Suggestions cost an edit distance per pair; the report shows 20 missing names, so only those get them.
        for m in missing.prefix(20) {
            let c = closeMatches(for: m, in: unexpected)
            if !c.isEmpty { close[m] = c }
        }
        return LoadReport(missing: missing, unexpected: unexpected, shapeMismatches: mismatched, closeMatches: close)
    }

    /// Same as `report(expected:)` for names only.
    public func report(expectedNames: [String]) -> LoadReport {
        report(expected: Dictionary(expectedNames.map { ($0, nil as [Int]?) }, uniquingKeysWith: { a, _ in a }))
    }

    /// Throws `WeightsError.keyMismatch` unless the collection holds exactly the expected names and shapes.
    public func checkStrict(expected: [String: [Int]?]) throws {
        let r = report(expected: expected)
        if !r.isClean { throw WeightsError.keyMismatch(file: origin, report: r) }
    }

    /// The containers that wrap a model's state dict in training checkpoints, most preferred first: EMA weights
    /// are what a trained model should be run with.
    public static let stateDictContainers = ["params_ema", "params", "state_dict", "model_state_dict", "model", "module", "net", "generator"]

    /// The model state dict inside a checkpoint: the tensors under the key it was opened for
    /// (`CheckpointFile.stateDictKey`), else under the first of `stateDictContainers` that holds tensors (else
    /// every tensor), with `module.` (DataParallel) and `_orig_mod.` (torch.compile) prefixes removed. `origin`
    /// records which container was used.
    public static func stateDict(from checkpoint: CheckpointFile) throws -> Weights {
        var weights = Weights(checkpoint: checkpoint)
        if let key = checkpoint.stateDictKey {
            weights = weights.scoped(key + ".")
            weights.origin = "\(checkpoint.path) [\(key)]"
        } else if checkpoint.format == .torch, case .dict(let entries)? = checkpoint.root {
            let names = Set(entries.compactMap { $0.key.stringValue })
            for container in stateDictContainers where names.contains(container) {
                let scoped = weights.scoped(container + ".")
                if !scoped.isEmpty {
                    weights = scoped
                    weights.origin = "\(checkpoint.path) [\(container)]"
                    break
                }
            }
        }
        return weights.renamed([.prefix("module.", ""), .prefix("_orig_mod.", ""), .prefix("module.", "")])
    }
}

/// Result of comparing a state dict against the names a model expects.
public struct LoadReport: Sendable, Equatable, CustomStringConvertible {
    /// A tensor present under the right name but with the wrong shape.
    public struct ShapeMismatch: Sendable, Equatable {
        public var name: String
        public var expected: [Int]
        public var actual: [Int]

        public init(name: String, expected: [Int], actual: [Int]) {
            self.name = name
            self.expected = expected
            self.actual = actual
        }
    }

    /// Expected names the state dict lacks.
    public var missing: [String]
    /// Names in the state dict the model does not expect.
    public var unexpected: [String]
    public var shapeMismatches: [ShapeMismatch]
    /// For each missing name, unexpected names that look like it (a likely renaming problem).
    public var closeMatches: [String: [String]]

    public init(missing: [String], unexpected: [String], shapeMismatches: [ShapeMismatch], closeMatches: [String: [String]]) {
        self.missing = missing
        self.unexpected = unexpected
        self.shapeMismatches = shapeMismatches
        self.closeMatches = closeMatches
    }

    /// True when nothing is missing, unexpected or mis-shaped.
    public var isClean: Bool { missing.isEmpty && unexpected.isEmpty && shapeMismatches.isEmpty }

    public var description: String {
        var lines: [String] = []
        func list(_ names: [String]) -> String {
            names.prefix(20).joined(separator: ", ") + (names.count > 20 ? ", … (\(names.count - 20) more)" : "")
        }
        if !missing.isEmpty {
            lines.append("missing \(missing.count) key(s): \(list(missing))")
            for m in missing.prefix(20) { if let c = closeMatches[m] { lines.append("  \(m): did you mean \(c.joined(separator: ", "))?") } }
        }
        if !unexpected.isEmpty { lines.append("unexpected \(unexpected.count) key(s): \(list(unexpected))") }
        for s in shapeMismatches.prefix(20) { lines.append("shape mismatch for \(s.name): file has \(s.actual), model expects \(s.expected)") }
        return lines.isEmpty ? "all keys match" : lines.joined(separator: "\n")
    }
}

extension String {
    /// Replaces every occurrence of `target` (non-empty) — kept local so the core module needs no Foundation here.
    func replacingAll(_ target: String, with replacement: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}
