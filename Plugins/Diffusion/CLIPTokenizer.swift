import Foundation
import LapseSupport

/// The byte-level BPE tokenizer of OpenAI CLIP, matching transformers' `CLIPTokenizer` (openai/clip-vit-large-patch14,
/// as Stable Diffusion 1.5 and AnimateDiff use it) id for id.
///
/// Text handling follows the tokenizers-backed implementation: the special strings `<|startoftext|>` and
/// `<|endoftext|>` are matched verbatim first; every other span is NFC-normalised, whitespace runs collapse to one
/// space, it is lowercased scalar by scalar, split by CLIP's pattern
/// `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+` (whitespace dropped),
/// and each piece is mapped to byte characters and merged by BPE rank with `</w>` marking the word end.
///
/// Loaded from a transformers tokenizer folder, the special tokens (BOS, EOS, unknown, padding) come from its
/// `special_tokens_map.json` / `tokenizer_config.json`; like transformers, every special token is matched verbatim in
/// the text, so with ModelScope's and SD2's padding token `!` a literal `!` becomes id 0 rather than `!</w>`.
///
/// Built with `init(openCLIPVocabularyFile:)` it follows `open_clip.tokenize` instead (see `TextRules.openCLIP`).
public struct CLIPTokenizer: Sendable {
    /// Whose text handling `tokenize` and `encode` reproduce.
    public enum TextRules: Sendable {
        /// transformers' `CLIPTokenizer` (the tokenizers-backed fast one): specials `<|startoftext|>` /
        /// `<|endoftext|>` matched verbatim anywhere, NFC, whitespace collapsed, lowercased.
        case transformers
        /// open_clip's `SimpleTokenizer` with its default `clean='lower'` (`open_clip.tokenize`, as Stable Diffusion
        /// 2 and ModelScope's `FrozenOpenCLIPEmbedder` call it): specials `<start_of_text>` / `<end_of_text>`, matched
        /// only where a new piece starts (they are alternatives of the split pattern); the text is cleaned first by
        /// ftfy and `html.unescape`, which are reproduced in part (see `OpenCLIPTextCleaning`); padding is id 0.
        case openCLIP
    }

    /// Whose text handling this tokenizer reproduces.
    public let textRules: TextRules
    /// Id of `<|startoftext|>` (BOS; open_clip's `<start_of_text>`, the same id).
    public let startOfTextID: Int
    /// Id of `<|endoftext|>` (EOS, also the padding token of SD1.5 pipelines; open_clip's `<end_of_text>`).
    public let endOfTextID: Int
    /// Id `encode` pads with: EOS for CLIP's own vocabulary, the folder's `pad_token` otherwise (`!`, id 0, for
    /// ModelScope and SD2), and 0 under open_clip's rules (`torch.zeros` filled up to the ids).
    public let padID: Int
    /// Number of entries in the vocabulary (49408 for CLIP).
    public var vocabularySize: Int { tokens.count }

    /// Special token strings with their ids, matched on the raw text before anything else.
    private let specials: [(text: String, id: Int)]
    /// Token string of each id.
    private let tokens: [String]
    /// Pair of symbol ids → (merge rank, id of the merged symbol); lower rank merges first.
    private let merges: [UInt64: (rank: Int32, merged: Int32)]
    /// Id of each byte as a mid-word symbol, and as a word-final symbol (with `</w>`).
    private let byteIDs: [Int32]
    private let byteFinalIDs: [Int32]
    /// Byte character → byte value, for decoding.
    private let byteOfCharacter: [Unicode.Scalar: UInt8]

    /// The number of merges CLIP reads from its vocabulary file: 49152 - 256 - 2.
    public static let mergeCount = 49152 - 256 - 2

    /// Loads the vocabulary from CLIP's `bpe_simple_vocab_16e6.txt.gz` (gzip) or an already decompressed copy.
    public init(vocabularyFile url: URL) throws {
        try self.init(mergesText: Self.vocabularyText(url), source: url.path)
    }

    /// The same vocabulary file read as open_clip reads it: `<start_of_text>` / `<end_of_text>` take ids 49406 and
    /// 49407, prompts are cleaned and split as `open_clip.tokenize` does, and `encode` pads with 0.
    public init(openCLIPVocabularyFile url: URL) throws {
        try self.init(mergesText: Self.vocabularyText(url), source: url.path, rules: .openCLIP)
    }

    /// The text of a `bpe_simple_vocab_16e6.txt(.gz)` file.
    private static func vocabularyText(_ url: URL) throws -> String {
        let data: [UInt8]
        do {
            data = [UInt8](try Data(contentsOf: url))
        } catch {
            throw DiffusionError.fileUnreadable(path: url.path, reason: error.localizedDescription)
        }
        let text: [UInt8]
        if data.count >= 2 && data[0] == 0x1f && data[1] == 0x8b {
            do {
                // The vocabulary is 1.4 MB decompressed: a far larger result is a gzip bomb or the wrong file.
                text = try Inflate.gunzip(data, limit: 16 << 20)
            } catch {
                throw DiffusionError.fileUnreadable(path: url.path, reason: error.localizedDescription)
            }
        } else {
            text = data
        }
        guard let string = String(validating: text, as: UTF8.self) else {
            throw DiffusionError.fileUnreadable(path: url.path, reason: "vocabulary is not valid UTF-8")
        }
        return string
    }

    /// Builds the vocabulary from the text of CLIP's merges file (first line a header, then one `a b` merge a line).
    ///
    /// The vocabulary is built exactly as CLIP does: the 256 byte characters, the same with `</w>`, one entry per
    /// merge (the two halves joined), then `<|startoftext|>` and `<|endoftext|>`.
    public init(mergesText: String, source: String = "<merges text>") throws {
        try self.init(mergesText: mergesText, source: source, rules: .transformers)
    }

    /// The vocabulary of a merges text, with the special tokens of `rules` (open_clip names them `<start_of_text>`
    /// and `<end_of_text>`; the ids are the same).
    private init(mergesText: String, source: String, rules: TextRules) throws {
        let lines = mergesText.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= Self.mergeCount + 1 else {
            throw DiffusionError.badVocabulary(path: source,
                                               reason: "needs \(Self.mergeCount) merges after the header, has \(max(lines.count - 1, 0)) lines")
        }
        let byteChars = CLIPTokenizer.byteCharacters()
        var tokens: [String] = byteChars.map { String($0) }
        tokens += byteChars.map { String($0) + "</w>" }
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(Self.mergeCount)
        for (n, line) in lines[1...Self.mergeCount].enumerated() {
            let parts = line.split(separator: " ")
            guard parts.count == 2 else {
                throw DiffusionError.badVocabulary(path: source, reason: "line \(n + 2) is not two symbols: \"\(line)\"")
            }
            pairs.append((String(parts[0]), String(parts[1])))
            tokens.append(String(parts[0]) + String(parts[1]))
        }
        let specials = rules == .openCLIP ? SpecialTokens.openCLIP : SpecialTokens()
        tokens += [specials.bos, specials.eos]
        // Python's dict(zip(vocab, range)) keeps the last id of a repeated string; do the same.
        var ids: [String: Int32] = [:]
        ids.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() { ids[t] = Int32(i) }
        try self.init(tokens: tokens, ids: ids, pairs: pairs, specials: specials, source: source, rules: rules)
    }

    /// The special-token strings of a tokenizer (transformers' `CLIPTokenizer` defaults unless a folder says otherwise).
    struct SpecialTokens {
        var bos = "<|startoftext|>"
        var eos = "<|endoftext|>"
        var unk = "<|endoftext|>"
        var pad = "<|endoftext|>"

        /// open_clip's: no unknown or padding token (it pads with id 0, whatever that token is).
        static let openCLIP = SpecialTokens(bos: "<start_of_text>", eos: "<end_of_text>", unk: "", pad: "")
    }

    /// The shared set-up: merge table by id, byte-symbol ids and special tokens, each checked against `ids`.
    private init(tokens: [String], ids: [String: Int32], pairs: [(String, String)], specials: SpecialTokens, source: String,
                 rules: TextRules = .transformers) throws {
        var merges: [UInt64: (rank: Int32, merged: Int32)] = [:]
        merges.reserveCapacity(pairs.count)
        for (rank, (a, b)) in pairs.enumerated() {
            guard let ia = ids[a], let ib = ids[b], let merged = ids[a + b] else {
                throw DiffusionError.badVocabulary(path: source, reason: "merge \(rank + 1) \"\(a) \(b)\" uses a symbol not in the vocabulary")
            }
            let key = UInt64(UInt32(ia)) << 32 | UInt64(UInt32(ib))
            if merges[key] == nil { merges[key] = (Int32(rank), merged) }
        }
        // byteCharacters() is in vocabulary order, not byte order; map each byte to its character's id.
        var byteIDs = [Int32](repeating: 0, count: 256), byteFinalIDs = [Int32](repeating: 0, count: 256)
        var byteOfCharacter: [Unicode.Scalar: UInt8] = [:]
        for b in 0..<256 {
            let c = CLIPTokenizer.byteToCharacter(UInt8(b))
            guard let id = ids[String(c)], let final = ids[String(c) + "</w>"] else {
                throw DiffusionError.badVocabulary(path: source, reason: "byte symbol \"\(c)\" (byte \(b)) or its </w> form is missing")
            }
            byteIDs[b] = id
            byteFinalIDs[b] = final
            byteOfCharacter[c] = UInt8(b)
        }
        func id(_ token: String, _ role: String) throws -> Int {
            guard let id = ids[token] else {
                throw DiffusionError.badVocabulary(path: source, reason: "\(role) token \"\(token)\" is not in the vocabulary")
            }
            return Int(id)
        }
        self.tokens = tokens
        self.merges = merges
        self.byteIDs = byteIDs
        self.byteFinalIDs = byteFinalIDs
        self.byteOfCharacter = byteOfCharacter
        textRules = rules
        startOfTextID = try id(specials.bos, "bos")
        endOfTextID = try id(specials.eos, "eos")
        padID = rules == .openCLIP ? 0 : try id(specials.pad, "pad")
        var list: [(text: String, id: Int)] = []
        for (token, role) in [(specials.bos, "bos"), (specials.eos, "eos"), (specials.unk, "unk"), (specials.pad, "pad")]
        where !token.isEmpty && !list.contains(where: { $0.text == token }) {
            list.append((token, try id(token, role)))
        }
        self.specials = list
    }

    /// Loads a transformers tokenizer folder (a diffusers pipeline's `tokenizer/`): `vocab.json` (token → id),
    /// `merges.txt` (a header line, then one `a b` merge a line, at most CLIP's 48 894 used, as transformers reads
    /// them), and the optional `special_tokens_map.json` and `tokenizer_config.json` naming the special tokens (the
    /// map wins where both name one, as in transformers).
    public init(folder url: URL) throws {
        func read(_ name: String) throws -> Data? {
            let path = url.appendingPathComponent(name).path
            if FileKind(path: path) == .missing { return nil }
            do { return try InputFile.read(path) } catch {
                throw DiffusionError.fileUnreadable(path: path, reason: error.localizedDescription)
            }
        }
        func json(_ name: String) throws -> [(key: String, value: JSONValue)]? {
            guard let data = try read(name) else { return nil }
            let path = url.appendingPathComponent(name).path
            let value: JSONValue
            do { value = try JSONParser.parse(data, allowingNonFiniteNumbers: true) } catch {
                throw DiffusionError.fileUnreadable(path: path, reason: error.localizedDescription)
            }
            guard case .object(let members) = value.kind else {
                throw DiffusionError.badVocabulary(path: path, reason: "expected a JSON object, found a \(value.typeName)")
            }
            return members
        }
        let vocabPath = url.appendingPathComponent("vocab.json").path
        let mergesPath = url.appendingPathComponent("merges.txt").path
        guard let vocab = try json("vocab.json") else {
            throw DiffusionError.fileUnreadable(path: vocabPath, reason: "no such file (a tokenizer folder needs vocab.json and merges.txt)")
        }
        guard let mergesData = try read("merges.txt") else {
            throw DiffusionError.fileUnreadable(path: mergesPath, reason: "no such file (a tokenizer folder needs vocab.json and merges.txt)")
        }
        var ids: [String: Int32] = [:]
        ids.reserveCapacity(vocab.count)
        var tokens = [String?](repeating: nil, count: vocab.count)
        for (token, value) in vocab {
            guard case .number(_, let integer?) = value.kind, (0..<vocab.count).contains(integer), tokens[integer] == nil else {
                throw DiffusionError.badVocabulary(path: vocabPath, reason: "\"\(token)\" has id \(value.jsonText) (line \(value.location.line)): "
                                                   + "ids must be distinct integers 0..<\(vocab.count)")
            }
            tokens[integer] = token
            ids[token] = Int32(integer)
        }
        guard let text = String(validating: [UInt8](mergesData), as: UTF8.self) else {
            throw DiffusionError.badVocabulary(path: mergesPath, reason: "not valid UTF-8")
        }
        // transformers: read().strip().split("\n")[1 : 49152 - 256 - 2 + 1], each line split on whitespace.
        let lines = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n", omittingEmptySubsequences: false)
        var pairs: [(String, String)] = []
        for (n, line) in lines.dropFirst().prefix(Self.mergeCount).enumerated() {
            let parts = line.split(whereSeparator: { $0.isWhitespace })
            guard parts.count == 2 else {
                throw DiffusionError.badVocabulary(path: mergesPath, reason: "line \(n + 2) is not two symbols: \"\(line)\"")
            }
            pairs.append((String(parts[0]), String(parts[1])))
        }
        var specials = SpecialTokens()
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            guard let members = try json(name) else { continue }
            for (key, value) in members {
                let content: JSONValue? = if case .object = value.kind { value["content"] } else { value }
                guard let content, case .string(let s) = content.kind else { continue }
                switch key {
                case "bos_token": specials.bos = s
                case "eos_token": specials.eos = s
                case "unk_token": specials.unk = s
                case "pad_token": specials.pad = s
                default: break
                }
            }
        }
        try self.init(tokens: tokens.map { $0! }, ids: ids, pairs: pairs, specials: specials, source: url.path)
    }

    // MARK: - Encoding

    /// Token ids of `text` without BOS/EOS and without truncation.
    public func tokenize(_ text: String) -> [Int] {
        var ids: [Int] = []
        if textRules == .openCLIP {
            // open_clip's pattern has the specials as its first alternatives; its BPE cache returns them whole.
            let literals = specials.map { (Array($0.text.unicodeScalars), [$0.text]) }
            for piece in CLIPTokenizer.pieces(of: OpenCLIPTextCleaning.clean(text), literals: literals) {
                if let special = specials.first(where: { $0.text == piece }) {
                    ids.append(special.id)
                } else {
                    bpe(Array(piece.utf8), into: &ids)
                }
            }
            return ids
        }
        for segment in splitSpecials(text) {
            switch segment {
            case .special(let id): ids.append(id)
            case .text(let span):
                for piece in CLIPTokenizer.pieces(of: CLIPTokenizer.normalize(span), literals: CLIPTokenizer.byteLevelSpecials) {
                    bpe(Array(piece.utf8), into: &ids)
                }
            }
        }
        return ids
    }

    /// The fixed-length input of a CLIP text encoder: BOS, the ids truncated to `maxLength - 2`, EOS, then padding
    /// with `padID` (default: the tokenizer's own, EOS as the SD1.5 / AnimateDiff pipelines pad, 0 under open_clip's
    /// rules) up to `maxLength`. open_clip truncates the same way (it cuts to `maxLength` and puts EOS last).
    public func encode(_ text: String, maxLength: Int = 77, padID: Int? = nil) -> [Int] {
        precondition(maxLength >= 2, "maxLength must leave room for BOS and EOS")
        var ids = [startOfTextID]
        ids += tokenize(text).prefix(maxLength - 2)
        ids.append(endOfTextID)
        ids += repeatElement(padID ?? self.padID, count: maxLength - ids.count)
        return ids
    }

    /// Text of `ids` (specials and padding included as their strings), with `</w>` turned back into spaces.
    public func decode(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && id < tokens.count {
            let token = tokens[id]
            if id == startOfTextID || id == endOfTextID {
                bytes += Array(token.utf8)
                continue
            }
            var body = Substring(token)
            let wordEnd = body.hasSuffix("</w>")
            if wordEnd { body = body.dropLast(4) }
            for scalar in body.unicodeScalars { if let b = byteOfCharacter[scalar] { bytes.append(b) } }
            if wordEnd { bytes.append(0x20) }
        }
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespaces)
    }

    /// Token string of one id, or nil when out of range.
    public func token(for id: Int) -> String? {
        id >= 0 && id < tokens.count ? tokens[id] : nil
    }

    private enum Segment {
        case special(Int)
        case text(Substring)
    }

    /// Cuts out the special strings, which tokenizers matches on the raw text before any normalisation.
    private func splitSpecials(_ text: String) -> [Segment] {
        var segments: [Segment] = []
        var rest = text[...]
        while !rest.isEmpty {
            // Earliest occurrence of any special, the longest where several start there (transformers' trie),
            // compared on scalars so combining marks cannot hide a match.
            var best: (Range<Substring.Index>, Int)?
            for (literal, id) in specials {
                if let r = rest.unicodeScalars.firstRange(of: literal.unicodeScalars) {
                    if best == nil || r.lowerBound < best!.0.lowerBound
                        || (r.lowerBound == best!.0.lowerBound && r.upperBound > best!.0.upperBound) { best = (r, id) }
                }
            }
            guard let (range, id) = best else {
                segments.append(.text(rest))
                break
            }
            if range.lowerBound > rest.startIndex {
                segments.append(.text(Substring(rest.unicodeScalars[rest.startIndex..<range.lowerBound])))
            }
            segments.append(.special(id))
            rest = Substring(rest.unicodeScalars[range.upperBound...])
        }
        return segments
    }

    /// NFC, whitespace runs → one space, then per-scalar full lowercase mapping (no context, so no final sigma),
    /// the order of the tokenizers normalizer sequence.
    static func normalize(_ text: Substring) -> String.UnicodeScalarView {
        let nfc = String(text).precomposedStringWithCanonicalMapping
        var out = String.UnicodeScalarView()
        var inSpace = false
        for scalar in nfc.unicodeScalars {
            if scalar.properties.isWhitespace {
                if !inSpace { out.append(" ") }
                inSpace = true
                continue
            }
            inSpace = false
            if scalar.properties.changesWhenLowercased {
                out.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
            } else {
                out.append(scalar)
            }
        }
        return out
    }

    private static func isLetter(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    private static func isNumber(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// How transformers' ByteLevel GPT-2 split, after CLIP's pattern, cuts the special literals (lowercased into
    /// existence, e.g. from `<|ENDOFTEXT|>`): `<|`, the name, `|>`.
    static let byteLevelSpecials: [([Unicode.Scalar], [String])] = ["startoftext", "endoftext"].map {
        (Array("<|\($0)|>".unicodeScalars), ["<|", $0, "|>"])
    }

    /// The pre-tokenizer: CLIP's split pattern (leftmost, first alternative wins), with `literals` (a special
    /// token's text, and the pieces it yields) tried first where a piece starts.
    static func pieces(of text: String.UnicodeScalarView, literals: [([Unicode.Scalar], [String])]) -> [String] {
        let s = Array(text)
        var pieces: [String] = []
        var i = 0
        func piece(_ a: Int, _ b: Int) -> String {
            var v = String.UnicodeScalarView()
            v.append(contentsOf: s[a..<b])
            return String(v)
        }
        func hasLiteral(_ literal: String, at i: Int) -> Bool { has(Array(literal.unicodeScalars), at: i) }
        func has(_ l: [Unicode.Scalar], at i: Int) -> Bool { i + l.count <= s.count && s[i..<(i + l.count)].elementsEqual(l) }
        while i < s.count {
            let c = s[i]
            if let (literal, out) = literals.first(where: { $0.0.first == c && has($0.0, at: i) }) {
                pieces += out
                i += literal.count
            } else if c == "'", i + 1 < s.count, "stmd".unicodeScalars.contains(s[i + 1]) {
                pieces.append(piece(i, i + 2))
                i += 2
            } else if c == "'", ["re", "ve", "ll"].contains(where: { hasLiteral("'" + $0, at: i) }) {
                pieces.append(piece(i, i + 3))
                i += 3
            } else if isLetter(c) {
                var j = i + 1
                while j < s.count && isLetter(s[j]) { j += 1 }
                pieces.append(piece(i, j))
                i = j
            } else if isNumber(c) {
                pieces.append(piece(i, i + 1))
                i += 1
            } else if c.properties.isWhitespace {
                i += 1
            } else {
                var j = i + 1
                while j < s.count && !isLetter(s[j]) && !isNumber(s[j]) && !s[j].properties.isWhitespace { j += 1 }
                pieces.append(piece(i, j))
                i = j
            }
        }
        return pieces
    }

    /// Merges one pre-token's bytes by rank (all occurrences of the best pair per round, left to right, as CLIP's
    /// reference BPE does) and appends the resulting ids.
    private func bpe(_ bytes: [UInt8], into ids: inout [Int]) {
        guard !bytes.isEmpty else { return }
        var word = bytes.dropLast().map { byteIDs[Int($0)] }
        word.append(byteFinalIDs[Int(bytes.last!)])
        var next: [Int32] = []
        next.reserveCapacity(word.count)
        while word.count > 1 {
            var bestRank = Int32.max, first: Int32 = -1, second: Int32 = -1, merged: Int32 = -1
            for k in 0..<(word.count - 1) {
                if let m = merges[UInt64(UInt32(word[k])) << 32 | UInt64(UInt32(word[k + 1]))], m.rank < bestRank {
                    bestRank = m.rank
                    first = word[k]
                    second = word[k + 1]
                    merged = m.merged
                }
            }
            if bestRank == Int32.max { break }
            next.removeAll(keepingCapacity: true)
            var k = 0
            while k < word.count {
                if k + 1 < word.count && word[k] == first && word[k + 1] == second {
                    next.append(merged)
                    k += 2
                } else {
                    next.append(word[k])
                    k += 1
                }
            }
            swap(&word, &next)
        }
        for id in word { ids.append(Int(id)) }
    }

    // MARK: - Byte characters

    /// GPT-2's reversible byte → printable character map: printable Latin-1 bytes map to themselves, the rest to
    /// U+0100 upward in byte order. Returned in CLIP's vocabulary order (printable bytes first).
    static func byteCharacters() -> [Unicode.Scalar] {
        var printable = Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF)
        let printableSet = Set(printable)
        var n = 0
        var chars = printable.map { Unicode.Scalar(UInt32($0))! }
        for b in 0..<256 where !printableSet.contains(b) {
            printable.append(b)
            chars.append(Unicode.Scalar(UInt32(256 + n))!)
            n += 1
        }
        return chars
    }

    static func byteToCharacter(_ b: UInt8) -> Unicode.Scalar {
        let v = Int(b)
        if (0x21...0x7E).contains(v) || (0xA1...0xAC).contains(v) || (0xAE...0xFF).contains(v) {
            return Unicode.Scalar(UInt32(v))!
        }
        // Non-printable bytes are numbered in byte order among themselves.
        var n = 0
        for x in 0..<v where !((0x21...0x7E).contains(x) || (0xA1...0xAC).contains(x) || (0xAE...0xFF).contains(x)) {
            n += 1
        }
        return Unicode.Scalar(UInt32(256 + n))!
    }
}
