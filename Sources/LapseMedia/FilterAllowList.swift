import CFFmpeg
import Foundation

/// The filters a libavfilter graph text may name, and the check every graph goes through before libavfilter sees it.
///
/// libavfilter can load code (`frei0r`, `ladspa`, `lv2` dlopen a library the graph names), open files and URLs
/// (`movie`, `amovie`, `sendcmd`, `subtitles`, `lut3d`, `curves=psfile=…`), listen on the network (`zmq`) or write
/// files (`curves=plot=…`). A graph is data from a JSON file, so Lapse runs only filters that compute pixels and
/// timestamps from their inputs. Filters are created *and initialised* while libavfilter parses a graph (`frei0r`
/// loads its library in init), so the check runs on the text first: the text is parsed here exactly as
/// libavfilter's graph parser does (`av_get_token` quoting and escaping included), every filter name and every
/// option is checked, and libavfilter gets a canonical re-quoted copy, so it cannot read a different filter name
/// than the one checked. `FilterPipeline` checks the parsed graph's filters again.
public enum FilterAllowList {
    /// Filters a graph may use: geometry, colour, blur/sharpen, timing, format, palette and stacking filters that
    /// read nothing but their input frames.
    public static let filters: Set<String> = [
        // geometry
        "scale", "crop", "pad", "hflip", "vflip", "transpose", "rotate", "setsar", "setdar",
        // colour
        "eq", "hue", "colorchannelmixer", "curves", "negate", "lutrgb", "lutyuv", "lut", "colorbalance", "colorlevels",
        "vibrance", "colorize", "colortemperature", "colorcontrast",
        // blur and sharpen
        "unsharp", "gblur", "avgblur", "median", "cas", "smartblur",
        // timing
        "fps", "setpts", "trim", "framestep", "select", "fade",
        // formats and plumbing
        "format", "null", "copy", "split", "overlay", "hstack", "vstack", "drawbox", "drawgrid",
        // palettes (SaveVideo's GIF graph)
        "palettegen", "paletteuse",
    ]

    /// Source filters `MediaIO.synthesize` may start a graph with (test cards for tests and benchmarks).
    public static let generators: Set<String> = ["testsrc", "testsrc2", "smptebars", "smptehdbars", "rgbtestsrc",
                                                 "yuvtestsrc", "color"]

    /// Why well-known dangerous filters are refused; any other filter off the list is refused as "not allowed".
    static let refusals: [String: String] = [
        "frei0r": "it loads a shared library named by the graph",
        "frei0r_src": "it loads a shared library named by the graph",
        "ladspa": "it loads a shared library named by the graph",
        "lv2": "it loads a plugin named by the graph",
        "movie": "it opens a file or URL named by the graph",
        "amovie": "it opens a file or URL named by the graph",
        "sendcmd": "it reads commands from a file",
        "asendcmd": "it reads commands from a file",
        "zmq": "it listens on the network",
        "azmq": "it listens on the network",
        "subtitles": "it loads subtitle and font files",
        "ass": "it loads subtitle and font files",
        "drawtext": "it loads font and text files",
        "lut3d": "it reads a LUT file",
        "lut1d": "it reads a LUT file",
        "haldclut": "it reads a LUT from a second input",
        "reverse": "it holds every frame in memory",
        "areverse": "it holds every frame in memory",
        "loop": "it holds frames in memory and can repeat them forever",
        "tpad": "it can add frames without end",
        // Found by the filter-graph fuzz family: libavfilter 8's boxblur writes out of bounds on the planar float
        // frames Filter works in (the ffmpeg program aborts the same way); avgblur or gblur blur the same.
        "boxblur": "it corrupts memory on float frames in this libavfilter (use avgblur or gblur)",
    ]

    /// Pattern of one parsed filter: its input labels, name (with any `@instance`), options text, output labels.
    struct Entry {
        var inputs: [String]
        var name: String
        var arguments: String?
        var outputs: [String]
        /// `,` or `;` after this filter, or nil for the last one.
        var separator: UInt8?

        /// The filter's registered name (without `@instance`).
        var filterName: String {
            // libavfilter splits at the first '@' that has something after it.
            if let at = name.firstIndex(of: "@"), name.index(after: at) < name.endIndex { return String(name[..<at]) }
            return name
        }
    }

    /// Checks `text` and returns the canonical text to hand to libavfilter.
    /// - Parameter generators: also allow the source filters of `generators` (graphs with no input).
    public static func sanitize(_ text: String, generators allowGenerators: Bool = false) throws -> String {
        let entries = try parse(text)
        for entry in entries {
            try check(entry, in: text, allowGenerators: allowGenerators)
        }
        return canonical(entries)
    }

    /// True when a parsed graph's filter (by registered name) may run.
    static func isAllowed(_ name: String, generators allowGenerators: Bool) -> Bool {
        filters.contains(name) || (allowGenerators && generators.contains(name))
    }

    private static func refuse(_ text: String, _ reason: String) -> MediaError {
        MediaError.filterRefused(graph: text, reason: reason)
    }

    private static func check(_ entry: Entry, in text: String, allowGenerators: Bool) throws {
        let name = entry.filterName
        guard !name.isEmpty else { throw refuse(text, "a filter name is missing") }
        guard name.utf8.allSatisfy(isNameByte), entry.name.utf8.allSatisfy({ isNameByte($0) || $0 == UInt8(ascii: "@") }) else {
            throw refuse(text, "\"\(entry.name)\" is not a filter name (letters, digits and _ only)")
        }
        guard isAllowed(name, generators: allowGenerators) else {
            let why = refusals[name] ?? "it is not one of the pure pixel and timing filters Lapse runs"
            throw refuse(text, "filter \(name) is not allowed: \(why) (allowed: \(filters.sorted().joined(separator: ", ")))")
        }
        for label in entry.inputs + entry.outputs where !label.utf8.allSatisfy(isNameByte) {
            throw refuse(text, "link label [\(label)] may hold letters, digits and _ only")
        }
        if let arguments = entry.arguments {
            try checkNumbers(arguments, filter: name, graph: text)
            try checkOptions(arguments, filter: name, graph: text)
        }
    }

    /// Refuses NaN in option values: libavfilter's range checks compare with `<` and `>`, which NaN passes (infinity
    /// fails them), and `curves=r='NaN/0 1/1'` corrupts the heap in libavfilter 8 (found by the filter-graph fuzz
    /// family). Any word starting with "nan" is refused (strtod reads `nanx` as NaN); quotes and backslashes are ignored
    /// while scanning, so `n\an` or `'na'n` are caught too.
    private static func checkNumbers(_ arguments: String, filter: String, graph: String) throws {
        var word = ""
        for c in arguments.unicodeScalars + [" "] where c != "\\" && c != "'" {
            if c.properties.isAlphabetic {
                word.unicodeScalars.append(c)
                continue
            }
            // strtod reads "nan" at the start of any word ("nanx", "nan(1)"), so the prefix is what counts.
            if word.lowercased().hasPrefix("nan") {
                throw refuse(graph, "filter \(filter): NaN is not accepted as an option value")
            }
            word = ""
        }
    }

    private static func isNameByte(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c | 0x20 >= 0x61 && c | 0x20 <= 0x7A) || c == UInt8(ascii: "_")
    }

    // MARK: - Options

    /// One option of a filter's private class, as `av_opt_next` lists it.
    private struct Option {
        var name: String
        var offset: Int32
        var isConstant: Bool
        var namesFile: Bool
    }

    /// The options of a filter, in declaration order (the order positional values fill).
    private static func options(of filterName: String) -> [Option] {
        guard let filter = avfilter_get_by_name(filterName), var cls = filter.pointee.priv_class else { return [] }
        var result: [Option] = []
        withUnsafePointer(to: &cls) { fakeObject in
            var option: UnsafePointer<AVOption>? = nil
            while let next = av_opt_next(UnsafeRawPointer(fakeObject), option) {
                option = next
                let name = String(cString: next.pointee.name)
                let help = next.pointee.help.map { String(cString: $0) } ?? ""
                // An option that names a file reads or writes it (curves psfile/plot, paletteuse debug_kdtree);
                // debug options switch on slow brute-force checks.
                let namesFile = name.lowercased().contains("file") || help.lowercased().contains("file")
                    || name.hasPrefix("debug")
                result.append(Option(name: name, offset: next.pointee.offset, isConstant: next.pointee.type == AV_OPT_TYPE_CONST,
                                     namesFile: namesFile))
            }
        }
        return result
    }

    /// Resolves every `key=value` and positional value of `arguments` to the option libavfilter would set (the
    /// rules of `process_options` and `av_opt_get_key_value`) and refuses options that name files.
    private static func checkOptions(_ arguments: String, filter: String, graph: String) throws {
        let table = options(of: filter)
        let forbiddenOffsets = Set(table.filter { !$0.isConstant && $0.namesFile }.map(\.offset))
        if forbiddenOffsets.isEmpty { return }
        // Positional values fill the options in order, skipping constants and aliases (same offset as the previous).
        var positional: [Option] = []
        var lastOffset: Int32 = -1
        for option in table where !option.isConstant && option.offset != lastOffset {
            positional.append(option)
            lastOffset = option.offset
        }
        var cursor = Cursor(Array(arguments.utf8))
        var position = 0
        var shorthandDone = false
        while !cursor.atEnd {
            let shorthand = !shorthandDone && position < positional.count ? positional[position] : nil
            position += 1
            let key = cursor.key()
            _ = cursor.token(terminators: [UInt8(ascii: ":")])
            if !cursor.atEnd { cursor.index += 1 }
            let resolved: Option?
            if let key {
                shorthandDone = true
                resolved = table.first { $0.name == key && !$0.isConstant }
            } else {
                resolved = shorthand
            }
            if let resolved, forbiddenOffsets.contains(resolved.offset) {
                throw refuse(graph, "option \(resolved.name) of filter \(filter) is not allowed: it names a file to read or write")
            }
        }
    }

    // MARK: - Graph text

    /// Parses graph text as libavfilter's `avfilter_graph_parse_ptr` does.
    static func parse(_ text: String) throws -> [Entry] {
        let bytes = Array(text.utf8)
        guard !bytes.contains(0) else { throw refuse(text, "the graph text contains a NUL character") }
        var cursor = Cursor(bytes)
        cursor.skipWhitespace()
        if cursor.rest.starts(with: Array("sws_flags=".utf8)) {
            throw refuse(text, "sws_flags is not supported; give flags to the scale filter (scale=…:flags=…)")
        }
        var entries: [Entry] = []
        while true {
            cursor.skipWhitespace()
            let inputs = try labels(&cursor, text: text)
            let name = String(decoding: cursor.token(terminators: Array("=,;[".utf8)), as: UTF8.self)
            var arguments: String?
            if cursor.peek == UInt8(ascii: "=") {
                cursor.index += 1
                arguments = String(decoding: cursor.token(terminators: Array("[],;".utf8)), as: UTF8.self)
            }
            let outputs = try labels(&cursor, text: text)
            cursor.skipWhitespace()
            let separator = cursor.peek
            if separator != nil { cursor.index += 1 }
            entries.append(Entry(inputs: inputs, name: name, arguments: arguments, outputs: outputs,
                                 separator: separator == UInt8(ascii: ",") || separator == UInt8(ascii: ";") ? separator : nil))
            guard let separator else { break }
            guard separator == UInt8(ascii: ",") || separator == UInt8(ascii: ";") else {
                let near = String(decoding: bytes[(cursor.index - 1)...].prefix(40), as: UTF8.self)
                throw refuse(text, "cannot parse the graph near \"\(near)\"")
            }
        }
        return entries
    }

    private static func labels(_ cursor: inout Cursor, text: String) throws -> [String] {
        var result: [String] = []
        while cursor.peek == UInt8(ascii: "[") {
            cursor.index += 1
            let label = cursor.token(terminators: [UInt8(ascii: "]")])
            guard !label.isEmpty else { throw refuse(text, "empty link label []") }
            guard cursor.peek == UInt8(ascii: "]") else { throw refuse(text, "a '[' has no matching ']'") }
            cursor.index += 1
            result.append(String(decoding: label, as: UTF8.self))
            cursor.skipWhitespace()
        }
        return result
    }

    /// The graph again, with every option text quoted so libavfilter's tokenizer reads back exactly what was checked.
    static func canonical(_ entries: [Entry]) -> String {
        var out = ""
        for entry in entries {
            for label in entry.inputs { out += "[\(label)]" }
            out += entry.name
            if let arguments = entry.arguments, !arguments.isEmpty {
                out += "='" + arguments.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
            }
            for label in entry.outputs { out += "[\(label)]" }
            if let separator = entry.separator { out += String(UnicodeScalar(separator)) }
        }
        return out
    }

    /// A byte cursor with ports of libavutil's `av_get_token` and `get_key`.
    private struct Cursor {
        let bytes: [UInt8]
        var index = 0
        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var atEnd: Bool { index >= bytes.count }
        var peek: UInt8? { index < bytes.count ? bytes[index] : nil }
        var rest: ArraySlice<UInt8> { bytes[min(index, bytes.count)...] }

        static func isWhitespace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x09 || c == 0x0D }

        mutating func skipWhitespace() {
            while let c = peek, Self.isWhitespace(c) { index += 1 }
        }

        /// `av_get_token`: skips leading whitespace; `\x` escapes a byte, `'…'` quotes; stops before a terminator;
        /// trailing unquoted, unescaped whitespace is dropped.
        mutating func token(terminators: [UInt8]) -> [UInt8] {
            skipWhitespace()
            var out: [UInt8] = []
            var protected = 0  // out[..<protected] came from escapes or quotes and keeps its whitespace
            while let c = peek, !terminators.contains(c) {
                index += 1
                if c == UInt8(ascii: "\\"), let escaped = peek {
                    out.append(escaped)
                    index += 1
                    protected = out.count
                } else if c == UInt8(ascii: "'") {
                    while let q = peek, q != UInt8(ascii: "'") {
                        out.append(q)
                        index += 1
                    }
                    if peek != nil {
                        index += 1
                        protected = out.count
                    }
                } else {
                    out.append(c)
                }
            }
            while out.count > protected, let last = out.last, Self.isWhitespace(last) { out.removeLast() }
            return out
        }

        /// `get_key` with "=" as separator: a key of [A-Za-z0-9_./-] followed by '=', or nil (position unchanged).
        mutating func key() -> String? {
            var probe = index
            while probe < bytes.count, Self.isWhitespace(bytes[probe]) { probe += 1 }
            let start = probe
            while probe < bytes.count, Self.isKeyByte(bytes[probe]) { probe += 1 }
            let end = probe
            while probe < bytes.count, Self.isWhitespace(bytes[probe]) { probe += 1 }
            guard probe < bytes.count, bytes[probe] == UInt8(ascii: "=") else { return nil }
            index = probe + 1
            return String(decoding: bytes[start..<end], as: UTF8.self)
        }

        static func isKeyByte(_ c: UInt8) -> Bool {
            (c | 0x20 >= 0x61 && c | 0x20 <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "-")
                || c == UInt8(ascii: "_") || c == UInt8(ascii: "/") || c == UInt8(ascii: ".")
        }
    }
}
