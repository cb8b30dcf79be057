import LapseSupport

/// "Did you mean …" suggestions for misspelt names.
public enum Suggestions {
    /// `LapseSupport.editDistance` compared case-insensitively, so `loadimage` finds `LoadImage`.
    public static func editDistance(_ a: String, _ b: String) -> Int {
        LapseSupport.editDistance(a.lowercased().unicodeScalars, b.lowercased().unicodeScalars)
    }

    /// The candidate closest to `name`, if it is close enough to be a plausible typo (at most a third of the
    /// longer name's length in edits, and at least one), or if one name contains the other.
    public static func closest(to name: String, in candidates: some Sequence<String>) -> String? {
        var best: (name: String, distance: Int)?
        for candidate in candidates where candidate != name {
            let distance = editDistance(name, candidate)
            let limit = max(1, max(name.count, candidate.count) / 3)
            let contains = name.count >= 3 && candidate.lowercased().contains(name.lowercased())
            guard distance <= limit || contains else { continue }
            if best == nil || distance < best!.distance || (distance == best!.distance && candidate < best!.name) {
                best = (candidate, distance)
            }
        }
        return best?.name
    }

    /// ` (did you mean "x"?)` or an empty string.
    public static func hint(for name: String, in candidates: some Sequence<String>) -> String {
        closest(to: name, in: candidates).map { " (did you mean \"\($0)\"?)" } ?? ""
    }
}
