/// Edit distance ("optimal string alignment": insertions, deletions, substitutions and adjacent transpositions), the
/// one measure behind every "did you mean" in Lapse (node types, parameters, checkpoint keys).
public func editDistance<C: Collection>(_ a: C, _ b: C) -> Int where C.Element: Equatable {
    let x = Array(a), y = Array(b)
    if x.isEmpty { return y.count }
    if y.isEmpty { return x.count }
    var beforePrevious = [Int](repeating: 0, count: y.count + 1)
    var previous = Array(0...y.count)
    var current = [Int](repeating: 0, count: y.count + 1)
    for i in 1...x.count {
        current[0] = i
        for j in 1...y.count {
            let cost = x[i - 1] == y[j - 1] ? 0 : 1
            current[j] = min(previous[j - 1] + cost, previous[j] + 1, current[j - 1] + 1)
            if i > 1, j > 1, x[i - 1] == y[j - 2], x[i - 2] == y[j - 1] {
                current[j] = min(current[j], beforePrevious[j - 2] + 1)
            }
        }
        (beforePrevious, previous, current) = (previous, current, beforePrevious)
    }
    return previous[y.count]
}

/// `x` as graphs and messages write a bound or a default: integral values without a needless `.0` (`4`), others as
/// Swift prints them (`0.25`).
public func plainNumber(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x) }

/// Text from graphs, file names and checkpoints made safe to print on a terminal: control characters (escape
/// sequences could rewrite the screen or the title bar) become visible escapes.
public enum TerminalText {
    /// `s` with C0/C1 control characters and DEL escaped as `\u{1B}`, `\n`, `\t`, …; `keepingNewlines` leaves line
    /// breaks of multi-line messages as they are.
    public static func escaped(_ s: String, keepingNewlines: Bool = false) -> String {
        guard s.unicodeScalars.contains(where: { isControl($0) && !(keepingNewlines && $0 == "\n") }) else { return s }
        var out = ""
        out.reserveCapacity(s.utf8.count + 8)
        for u in s.unicodeScalars {
            switch u {
            case "\n" where keepingNewlines: out += "\n"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if isControl(u) { out += "\\u{\(String(u.value, radix: 16, uppercase: true))}" } else { out.unicodeScalars.append(u) }
            }
        }
        return out
    }

    /// `escaped(s)`, cut to `limit` characters with the count of what was left out, for names inside messages.
    public static func quoted(_ s: String, limit: Int = 300) -> String {
        let e = escaped(s)
        guard e.count > limit else { return e }
        return String(e.prefix(limit)) + "… (\(e.count - limit) more characters)"
    }

    private static func isControl(_ u: Unicode.Scalar) -> Bool {
        u.value < 0x20 || (0x7F...0x9F).contains(u.value)
    }
}
