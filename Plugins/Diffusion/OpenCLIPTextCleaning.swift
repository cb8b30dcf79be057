import Foundation

/// open_clip's prompt cleaning before BPE (`_clean_lower`): `ftfy.fix_text`, `html.unescape` twice, strip, whitespace
/// runs joined by one space (Python's `str.split()`), then Python's `str.lower()`.
///
/// ftfy is reproduced for what its table-driven fixers do, run line by line to a fixed point in ftfy's order: Windows-
/// 1252 reading of C1 controls, Latin ligatures (`ﬁ` → `fi`), fullwidth/halfwidth forms and U+3000 (`ＡＢＣ` →
/// `ABC`), curly quotes to straight ones, line breaks, ANSI terminal escapes and unwanted control characters removed,
/// then NFC. `str.lower()` keeps its final-sigma rule (`ΟΔΟΣ` → `οδος`).
///
/// Where exotic text differs from `open_clip.tokenize`:
/// - ftfy's mojibake repair (`fix_encoding`: `cafÃ©` → `café`, and what it does to C1 controls inside mojibake)
///   is not done; the text is tokenized as written.
/// - HTML character references: numeric ones (`&#39;`, `&#x2019;`) are decoded as `html.unescape` and ftfy decode
///   them, named ones only for `amp`, `lt`, `gt`, `quot`, `apos` and `nbsp` (ftfy also takes their all-caps forms;
///   `html.unescape` takes `amp`, `lt`, `gt`, `quot`, `nbsp` without `;` too, and the capitals `AMP`, `LT`, `GT`,
///   `QUOT`). Other names (`&eacute;`, `&hellip;`, `&copy`…) stay as text, where open_clip decodes them. ftfy's
///   rule of not unescaping from the first line holding a `<` onward is kept.
/// - Unicode tables are the platform's (NFC, NFKC of fullwidth forms, letter/number classes, lowercase mapping),
///   Python's are its own Unicode version: characters assigned between the two versions may class differently.
/// - ftfy cuts lines longer than 1 000 000 characters into pieces; this does not.
enum OpenCLIPTextCleaning {
    /// The cleaned text, ready for CLIP's split pattern.
    static func clean(_ text: String) -> String.UnicodeScalarView {
        var fixed: [Unicode.Scalar] = []
        // ftfy.fix_text: per line (each keeping its "\n"); once a line holds "<" (it looks like HTML), its
        // unescaping stays off for the rest of the text, as fix_text's config replacement does.
        var unescape = true
        for line in lines(Array(text.unicodeScalars)) {
            if line.contains("<") { unescape = false }
            fixed += fixLine(line, unescape: unescape)
        }
        var scalars = htmlUnescape(htmlUnescape(fixed))
        // strip + " ".join(text.split()): Python's whitespace, which also counts U+001C…U+001F.
        var joined: [Unicode.Scalar] = []
        var pendingSpace = false
        for c in scalars {
            if isPythonWhitespace(c) {
                pendingSpace = !joined.isEmpty
                continue
            }
            if pendingSpace { joined.append(" ") }
            pendingSpace = false
            joined.append(c)
        }
        scalars = joined
        return pythonLower(scalars)
    }

    /// Lines ending after each "\n" (the last may have none), as fix_text cuts them.
    private static func lines(_ s: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        var out: [[Unicode.Scalar]] = []
        var current: [Unicode.Scalar] = []
        for c in s {
            current.append(c)
            if c == "\n" {
                out.append(current)
                current = []
            }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// ftfy's fixers on one line, repeated until nothing changes (fix_and_explain's loop), without fix_encoding.
    private static func fixLine(_ line: [Unicode.Scalar], unescape: Bool) -> [Unicode.Scalar] {
        var text = line
        while true {
            let before = text
            if unescape { text = ftfyUnescape(text) }
            text = text.map { c1Controls($0) ?? $0 }
            text = text.flatMap { ligature($0) ?? [$0] }
            text = text.flatMap(characterWidth)
            text = text.map(uncurled)
            text = fixLineBreaks(text)
            text = removeTerminalEscapes(text)
            text = text.filter { !isUnwantedControl($0) }
            text = Array(String(String.UnicodeScalarView(text)).precomposedStringWithCanonicalMapping.unicodeScalars)
            if text == before { return text }
        }
    }

    // MARK: - ftfy's tables

    /// Windows-1252 for 0x80…0x9F; the five bytes it leaves undefined read as themselves (ftfy's sloppy codec, and
    /// `html.unescape`'s table for numeric references).
    private static let windows1252: [UInt32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D, 0x017D, 0x8F,
        0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
    ]

    private static func c1Controls(_ c: Unicode.Scalar) -> Unicode.Scalar? {
        (0x80...0x9F).contains(c.value) ? Unicode.Scalar(windows1252[Int(c.value) - 0x80]) : nil
    }

    /// ftfy's `LIGATURES`: Latin letter ligatures only (other scripts' are left alone, as ftfy does).
    private static let ligatures: [Unicode.Scalar: String] = [
        "\u{132}": "IJ", "\u{133}": "ij", "\u{149}": "\u{2BC}n", "\u{1F1}": "DZ", "\u{1F2}": "Dz", "\u{1F3}": "dz",
        "\u{1C4}": "D\u{17D}", "\u{1C5}": "D\u{17E}", "\u{1C6}": "d\u{17E}", "\u{1C7}": "LJ", "\u{1C8}": "Lj", "\u{1C9}": "lj",
        "\u{1CA}": "NJ", "\u{1CB}": "Nj", "\u{1CC}": "nj", "\u{FB00}": "ff", "\u{FB01}": "fi", "\u{FB02}": "fl",
        "\u{FB03}": "ffi", "\u{FB04}": "ffl", "\u{FB05}": "\u{17F}t", "\u{FB06}": "st",
    ]

    private static func ligature(_ c: Unicode.Scalar) -> [Unicode.Scalar]? {
        ligatures[c].map { Array($0.unicodeScalars) }
    }

    /// ftfy's `WIDTH_MAP`: U+3000 → space, and U+FF01…U+FFEF to their NFKC form.
    private static func characterWidth(_ c: Unicode.Scalar) -> [Unicode.Scalar] {
        if c.value == 0x3000 { return [" "] }
        guard (0xFF01...0xFFEF).contains(c.value) else { return [c] }
        return Array(String(c).precomposedStringWithCompatibilityMapping.unicodeScalars)
    }

    private static func uncurled(_ c: Unicode.Scalar) -> Unicode.Scalar {
        switch c.value {
        case 0x2BC, 0x2018...0x201B: "'"
        case 0x201C...0x201F: "\""
        default: c
        }
    }

    /// CRLF, CR, U+2028, U+2029 and NEL become "\n".
    private static func fixLineBreaks(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(s.count)
        var i = 0
        while i < s.count {
            switch s[i].value {
            case 0x0D:
                out.append("\n")
                if i + 1 < s.count && s[i + 1] == "\n" { i += 1 }
            case 0x2028, 0x2029, 0x85: out.append("\n")
            default: out.append(s[i])
            }
            i += 1
        }
        return out
    }

    /// `ESC [ (digits|;)* letter` removed (ftfy's `ANSI_RE`; `\d` is any decimal digit there).
    private static func removeTerminalEscapes(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard s.contains("\u{1B}") else { return s }
        var out: [Unicode.Scalar] = []
        var i = 0
        while i < s.count {
            if s[i] == "\u{1B}", i + 1 < s.count, s[i + 1] == "[" {
                var j = i + 2
                while j < s.count && (s[j] == ";" || s[j].properties.numericType == .decimal) { j += 1 }
                if j < s.count, s[j].isASCII, s[j].properties.isAlphabetic {
                    i = j + 1
                    continue
                }
            }
            out.append(s[i])
            i += 1
        }
        return out
    }

    /// ftfy's `CONTROL_CHARS`: C0 controls but tab, LF, FF and CR; DEL; deprecated Arabic format controls; BOM;
    /// interlinear annotation marks and U+FFFC.
    private static func isUnwantedControl(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x00...0x08, 0x0B, 0x0E...0x1F, 0x7F, 0x206A...0x206F, 0xFEFF, 0xFFF9...0xFFFC: true
        default: false
        }
    }

    // MARK: - HTML character references

    /// The named references decoded: ftfy's (with `;`, lowercase or all capitals) and `html.unescape`'s entries
    /// for the same names (with and without `;` as the HTML5 table lists them).
    private static let ftfyEntities: [String: Unicode.Scalar] = [
        "amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'", "nbsp": "\u{A0}",
        "AMP": "&", "LT": "<", "GT": ">", "QUOT": "\"", "APOS": "'", "NBSP": "\u{A0}",
    ]
    private static let html5Entities: [String: Unicode.Scalar] = [
        "amp;": "&", "amp": "&", "lt;": "<", "lt": "<", "gt;": ">", "gt": ">", "quot;": "\"", "quot": "\"",
        "apos;": "'", "nbsp;": "\u{A0}", "nbsp": "\u{A0}",
        "AMP;": "&", "AMP": "&", "LT;": "<", "LT": "<", "GT;": ">", "GT": ">", "QUOT;": "\"", "QUOT": "\"",
    ]

    /// `html.unescape`'s numeric reference rules: Windows-1252 for 0x80…0x9F, U+FFFD for 0, surrogates and beyond
    /// U+10FFFF, nothing for the other C0/C1 controls and noncharacters. `nil` digits means the number overflowed.
    private static func charref(_ number: UInt32?) -> [Unicode.Scalar] {
        guard let n = number else { return ["\u{FFFD}"] }
        switch n {
        case 0x00: return ["\u{FFFD}"]
        case 0x0D: return ["\r"]
        case 0x80...0x9F: return [Unicode.Scalar(windows1252[Int(n) - 0x80])!]
        case 0xD800...0xDFFF, 0x110000...: return ["\u{FFFD}"]
        case 0x01...0x08, 0x0B, 0x0E...0x1F, 0x7F, 0xFDD0...0xFDEF: return []
        default:
            if n & 0xFFFE == 0xFFFE { return [] }
            return [Unicode.Scalar(n)!]
        }
    }

    private static func isASCIIDigit(_ c: Unicode.Scalar, hex: Bool) -> Bool {
        ("0"..."9").contains(c) || (hex && (("a"..."f").contains(c) || ("A"..."F").contains(c)))
    }

    private static func isASCIIAlphanumeric(_ c: Unicode.Scalar) -> Bool {
        ("0"..."9").contains(c) || ("a"..."z").contains(c) || ("A"..."Z").contains(c)
    }

    /// The value of `digits` (ASCII, base 10 or 16); nil past U+10FFFF (html.unescape maps all of those alike).
    private static func number(_ digits: ArraySlice<Unicode.Scalar>, hex: Bool) -> UInt32? {
        var n: UInt32 = 0
        for d in digits {
            let v = ("0"..."9").contains(d) ? d.value - 0x30 : (d.value | 0x20) - 0x61 + 10
            n = n * (hex ? 16 : 10) + v
            if n > 0x10FFFF { return nil }
        }
        return n
    }

    /// A numeric reference at `s[i...]` (`&#…`): the digits' range, whether hex, and where it ends (after any `;`).
    private static func numericReference(_ s: [Unicode.Scalar], at i: Int) -> (digits: Range<Int>, hex: Bool, end: Int, semicolon: Bool)? {
        guard i + 2 < s.count, s[i] == "&", s[i + 1] == "#" else { return nil }
        let hex = s[i + 2] == "x" || s[i + 2] == "X"
        let start = hex ? i + 3 : i + 2
        var j = start
        while j < s.count && isASCIIDigit(s[j], hex: hex) { j += 1 }
        guard j > start else { return nil }
        let semicolon = j < s.count && s[j] == ";"
        return (start..<j, hex, semicolon ? j + 1 : j, semicolon)
    }

    /// ftfy's `unescape_html`: `&#?[0-9A-Za-z]{1,24};` replaced when it names a known entity, or when it is a
    /// numeric reference `html.unescape` decodes to text without a `;`.
    private static func ftfyUnescape(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard s.contains("&") else { return s }
        var out: [Unicode.Scalar] = []
        var i = 0
        while i < s.count {
            guard s[i] == "&" else {
                out.append(s[i])
                i += 1
                continue
            }
            let bodyStart = i + 1 < s.count && s[i + 1] == "#" ? i + 2 : i + 1
            var j = bodyStart
            while j < s.count && j - bodyStart < 24 && isASCIIAlphanumeric(s[j]) { j += 1 }
            guard j > bodyStart, j < s.count, s[j] == ";" else {
                out.append(s[i])
                i += 1
                continue
            }
            let body = String(String.UnicodeScalarView(s[bodyStart..<j]))
            if bodyStart == i + 1, let value = ftfyEntities[body] {
                out.append(value)
                i = j + 1
                continue
            }
            if bodyStart == i + 2, let ref = numericReference(s, at: i), ref.end == j + 1 {
                let decoded = charref(number(s[ref.digits], hex: ref.hex))
                if !decoded.contains(";") {
                    out += decoded
                    i = j + 1
                    continue
                }
            }
            // Unknown, or not a whole numeric reference: regex matches do not overlap, so skip the whole match.
            out += s[i...j]
            i = j + 1
        }
        return out
    }

    /// `html.unescape`: `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)`, names looked up whole, else by
    /// their longest known prefix (the HTML5 rule for references without `;`).
    private static func htmlUnescape(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard s.contains("&") else { return s }
        var out: [Unicode.Scalar] = []
        var i = 0
        while i < s.count {
            guard s[i] == "&" else {
                out.append(s[i])
                i += 1
                continue
            }
            if let ref = numericReference(s, at: i) {
                out += charref(number(s[ref.digits], hex: ref.hex))
                i = ref.end
                continue
            }
            var j = i + 1
            while j < s.count && j - i - 1 < 32 && !["\t", "\n", "\u{C}", " ", "<", "&", "#", ";"].contains(s[j]) { j += 1 }
            guard j > i + 1 else {
                out.append(s[i])
                i += 1
                continue
            }
            if j < s.count && s[j] == ";" { j += 1 }
            let name = Array(s[(i + 1)..<j])
            if let value = html5Entities[String(String.UnicodeScalarView(name))] {
                out.append(value)
            } else if let x = stride(from: name.count - 1, through: 2, by: -1).first(where: {
                html5Entities[String(String.UnicodeScalarView(name[..<$0]))] != nil
            }) {
                out.append(html5Entities[String(String.UnicodeScalarView(name[..<x]))]!)
                out += name[x...]
            } else {
                out.append("&")
                out += name
            }
            i = j
        }
        return out
    }

    // MARK: - Python's str methods

    /// `str.isspace()`: Unicode White_Space plus the information separators U+001C…U+001F.
    private static func isPythonWhitespace(_ c: Unicode.Scalar) -> Bool {
        c.properties.isWhitespace || (0x1C...0x1F).contains(c.value)
    }

    /// `str.lower()`: full lowercase mapping, with capital sigma becoming final `ς` after a cased letter (case-
    /// ignorable ones skipped) when no cased letter follows.
    private static func pythonLower(_ s: [Unicode.Scalar]) -> String.UnicodeScalarView {
        var out = String.UnicodeScalarView()
        for (i, c) in s.enumerated() {
            if c == "\u{3A3}" {
                let before = s[..<i].last { !$0.properties.isCaseIgnorable }
                let after = s[(i + 1)...].first { !$0.properties.isCaseIgnorable }
                let final = (before?.properties.isCased ?? false) && !(after?.properties.isCased ?? false)
                out.append(final ? "\u{3C2}" : "\u{3C3}")
            } else if c.properties.changesWhenLowercased {
                out.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars)
            } else {
                out.append(c)
            }
        }
        return out
    }
}
