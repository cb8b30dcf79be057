import Foundation
import Synchronization

/// Why an output path (template) cannot be used. Every message names the path and says what to do.
public enum OutputPathError: LocalizedError, Sendable, Equatable {
    /// The file exists and the saver may not replace it (`overwrite = false`, or a name picked by `{n}` that another
    /// writer took meanwhile).
    case exists(path: String)
    /// `{name}` is not a placeholder Lapse knows.
    case unknownPlaceholder(template: String, name: String)
    /// A placeholder stands in a folder name; only the file name may hold them.
    case placeholderInFolder(template: String)
    /// `{stem}` was used but the data came from no input file.
    case noStem(template: String)
    /// The substituted file name is `.` or `..`, which names a folder, not a file.
    case notAFileName(template: String, name: String)
    /// A name made from a template is a symbolic link; templates never write through links.
    case linkedName(path: String)
    /// Every number up to `OutputPathTemplate.maximumCounter` is taken.
    case counterExhausted(template: String)

    public var errorDescription: String? {
        switch self {
        case .exists(let p):
            return "\(TerminalText.quoted(p)) already exists and the saver's overwrite is false; set overwrite to true to replace it, or put {n} in the file name to write the next free number"
        case .unknownPlaceholder(let t, let name):
            return "\(TerminalText.quoted(t)): unknown placeholder {\(TerminalText.quoted(name))}\(Self.hint(name)); output paths know {stem} (the input file's name without its extension) and {n} (the lowest number whose file does not exist yet)"
        case .placeholderInFolder(let t):
            return "\(TerminalText.quoted(t)): {stem} and {n} may only appear in the file name, not in a folder name (e.g. out/{stem}_x4.png)"
        case .noStem(let t):
            return "\(TerminalText.quoted(t)): {stem} names the output after the input file its data was read from, but this data was read from no file (it was generated); write the name out, with {n} to keep runs apart (e.g. out/video_{n}.mp4)"
        case .notAFileName(let t, let name):
            return "\(TerminalText.quoted(t)): the file name becomes \"\(TerminalText.quoted(name))\", which names a folder; add text around the placeholders"
        case .linkedName(let p):
            return "\(TerminalText.quoted(p)) is a symbolic link; a name made from a template is never written through a link (name the file in full to write through it, or remove the link)"
        case .counterExhausted(let t):
            return "\(TerminalText.quoted(t)): every {n} from 1 to \(OutputPathTemplate.maximumCounter) is taken; clear out the folder or change the name"
        }
    }

    private static func hint(_ name: String) -> String {
        let best = ["stem", "n"].min { editDistance(name, $0) < editDistance(name, $1) }!
        return editDistance(name.lowercased(), best) <= 2 && name != best ? " (did you mean {\(best)}?)" : ""
    }
}

/// Where a saver writes and whether it may replace a file there: what `OutputPathTemplate.target` resolves.
public struct OutputTarget: Sendable, Equatable {
    /// The concrete path, placeholders substituted.
    public var path: String
    /// False when an existing file must not be replaced (`overwrite = false`, or a name picked by `{n}`).
    public var replacing: Bool

    public init(path: String, replacing: Bool) {
        self.path = path
        self.replacing = replacing
    }
}

/// A saver's output path: a plain path, or a template whose file name holds placeholders.
///
/// - `{stem}`: the file name, without folder and extension, of the input file the saved data was read from (for
///   frames, `FrameStreamInfo.sourcePath`: the image or video a loader decoded). `out/{stem}_x4.png` on
///   `samples/coffee.png` writes `out/coffee_x4.png`.
/// - `{n}`: the lowest number, from 1, whose file does not exist yet, so a run never replaces an earlier one's
///   output (`out/render_{n}.mp4` writes `render_1.mp4`, then `render_2.mp4`, …).
///
/// Placeholders may stand only in the file name, so a substitution can never lead into another folder. Other text
/// in braces is kept as it is; `{word}` with an unknown word is refused (a misspelt placeholder would otherwise
/// become part of the name). Substitution is one pass: a stem that itself contains `{n}` stays as it is.
public struct OutputPathTemplate: Sendable, Equatable {
    /// Highest `{n}` tried before giving up.
    public static let maximumCounter = 1_000_000

    private enum Segment: Sendable, Equatable {
        case text(String)
        case stem
        case counter
    }

    /// The path as given.
    public let text: String
    private let segments: [Segment]

    /// Parses `text`, refusing unknown placeholders and placeholders in folder names.
    public init(_ text: String) throws(OutputPathError) {
        self.text = text
        var segments: [Segment] = []
        var literal = ""
        let characters = Array(text)
        var lastSlash = -1
        for (i, c) in characters.enumerated() where c == "/" { lastSlash = i }
        var i = 0
        while i < characters.count {
            if characters[i] == "{", let close = characters[(i + 1)...].firstIndex(of: "}") {
                let name = String(characters[(i + 1)..<close])
                if OutputPathTemplate.isIdentifier(name) {
                    guard name == "stem" || name == "n" else {
                        throw .unknownPlaceholder(template: text, name: name)
                    }
                    guard i > lastSlash else { throw .placeholderInFolder(template: text) }
                    if !literal.isEmpty { segments.append(.text(literal)) }
                    literal = ""
                    segments.append(name == "stem" ? .stem : .counter)
                    i = close + 1
                    continue
                }
            }
            literal.append(characters[i])
            i += 1
        }
        if !literal.isEmpty { segments.append(.text(literal)) }
        self.segments = segments
    }

    /// True when the path holds `{stem}`.
    public var usesStem: Bool { segments.contains(.stem) }
    /// True when the path holds `{n}`.
    public var usesCounter: Bool { segments.contains(.counter) }
    /// True when the path holds any placeholder.
    public var isTemplate: Bool { usesStem || usesCounter }

    /// The path with `{stem}` = `stem` and `{n}` = `n`.
    public func expanded(stem: String?, n: Int) throws(OutputPathError) -> String {
        var out = ""
        for segment in segments {
            switch segment {
            case .text(let s): out += s
            case .counter: out += String(n)
            case .stem:
                guard let stem, !stem.isEmpty else { throw .noStem(template: text) }
                out += stem
            }
        }
        if isTemplate {
            let name = (out as NSString).lastPathComponent
            // `{stem}` of a file named `..png` is `.`; `x/{stem}` must not become `x/..`.
            if name == "." || name == ".." { throw .notAFileName(template: text, name: name) }
        }
        return out
    }

    /// The file to write: placeholders substituted, `{n}` the lowest number from 1 for which `probe(path)` names
    /// nothing (no file, folder or link, dangling links included). `probe` maps a candidate to the file whose
    /// existence decides, e.g. the first file of a frame-number pattern. With `{n}`, or with `overwrite` false, the
    /// target must not be replaced when it is written (`OutputTarget.replacing` false).
    public func target(stem: String?, overwrite: Bool, probe: (String) -> String = { $0 }) throws(OutputPathError) -> OutputTarget {
        if !usesCounter {
            let path = try expanded(stem: stem, n: 1)
            if isTemplate, FileKind(path: probe(path), followLinks: false) == .symlink { throw .linkedName(path: path) }
            return OutputTarget(path: path, replacing: overwrite)
        }
        return try Self.reserved.withLock { (reserved: inout Set<String>) throws(OutputPathError) -> OutputTarget in
            // A name written since it was handed out is taken by its file now; only unfinished writes stay reserved.
            reserved = reserved.filter { FileKind(path: $0, followLinks: false) == .missing }
            for n in 1...Self.maximumCounter {
                let path = try expanded(stem: stem, n: n)
                let decisive = probe(path)
                if FileKind(path: decisive, followLinks: false) == .missing, reserved.insert(decisive).inserted {
                    return OutputTarget(path: path, replacing: false)
                }
            }
            throw .counterExhausted(template: text)
        }
    }

    /// Names `{n}` handed out in this process whose files are not written yet: two savers of one run (or two server
    /// jobs) with the same template get different numbers, not the same number and a clash when the second finishes.
    private static let reserved = Mutex<Set<String>>([])

    /// True when `name` (a file name, no folder) could have been written by this template's file name: `{stem}`
    /// matches any text, `{n}` digits, a frame-number pattern (`%05d`) digits. For finding a run's outputs.
    public func matchesFileName(_ name: String) -> Bool {
        // Placeholders stand only in the file name, so the text after the last `/` is a template of its own.
        let fileName = text.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? text
        guard let file = try? OutputPathTemplate(fileName) else { return false }
        var pattern = "^"
        for segment in file.segments {
            switch segment {
            case .text(let s):
                pattern += NSRegularExpression.escapedPattern(for: s)
                    .replacingOccurrences(of: #"%0?[0-9]*d"#, with: "[0-9]+", options: .regularExpression)
            case .stem: pattern += ".+"
            case .counter: pattern += "[0-9]+"
            }
        }
        return name.range(of: pattern + "$", options: .regularExpression) != nil
    }

    /// What `{stem}` becomes for data read from `path`: the file name without folder and extension. A frame-number
    /// pattern (`frames/f_%05d.png`) gives its fixed part (`f`), or its folder's name when that is empty (`clip/%04d.png`
    /// → `clip`). A `%` left in the stem becomes `_`, so a stem can never turn into a frame-number pattern. `nil`
    /// when nothing is left.
    public static func stem(ofSource path: String) -> String? {
        let name = (path as NSString).lastPathComponent
        var stem = (name as NSString).deletingPathExtension
        if let range = stem.range(of: #"%0?[0-9]*d"#, options: .regularExpression) {
            stem.removeSubrange(range)
            stem = stem.trimmingCharacters(in: CharacterSet(charactersIn: "_-. "))
            if stem.isEmpty {
                let folder = ((path as NSString).deletingLastPathComponent as NSString).lastPathComponent
                stem = folder == "/" || folder == "." || folder == ".." ? "" : folder
            }
        }
        stem = stem.replacingOccurrences(of: "%", with: "_")
        return stem.isEmpty || stem == "." || stem == ".." ? nil : stem
    }

    private static func isIdentifier(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, first == "_" || (first.isASCII && CharacterSet.letters.contains(first)) else {
            return false
        }
        return s.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && CharacterSet.alphanumerics.contains($0)) }
    }
}
