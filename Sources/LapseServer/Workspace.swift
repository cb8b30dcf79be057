import Foundation
import LapseGraph

/// The folders a server job may touch, and the rule that keeps every file a job reads or writes inside them.
///
/// Paths are resolved the way the kernel will resolve them (symbolic links followed), so neither `..` nor a link
/// inside the workspace that points elsewhere lets a graph reach other files. A relative input path is looked for
/// in the workspace, then in each models folder (`inputSearchPath`, the search `lapse run` does too); relative output
/// paths resolve against the job's own folder (`jobs/ID/` in the workspace), so two jobs of the same graph never
/// overwrite each other's outputs.
public struct Workspace: Sendable {
    /// The workspace folder, symbolic links resolved.
    public let root: URL
    /// Extra folders jobs may read from (model folders), symbolic links resolved.
    public let readOnlyFolders: [URL]

    /// Resolves `root` (which must be an existing folder) and the extra read-only folders.
    public init(root: URL, readOnlyFolders: [URL] = []) throws {
        guard let resolved = Workspace.realPath(root.path), FileKind(path: resolved) == .directory else {
            throw ServerError.workspace("\(TerminalText.quoted(root.path)) is not an existing folder; create it or pass another --workspace")
        }
        self.root = URL(fileURLWithPath: resolved)
        self.readOnlyFolders = try readOnlyFolders.map { folder in
            guard let path = Workspace.realPath(folder.path), FileKind(path: path) == .directory else {
                throw ServerError.workspace("\(TerminalText.quoted(folder.path)) is not an existing folder")
            }
            return URL(fileURLWithPath: path)
        }
    }

    /// Where relative input paths are looked for: the workspace, then the models folders.
    public var inputSearchPath: InputSearchPath {
        InputSearchPath([.init(root, role: .workspace)] + readOnlyFolders.map { .init($0, role: .modelsFolder) })
    }

    /// The folder a job's relative output paths resolve against.
    public func jobFolder(_ id: String) -> URL { root.appendingPathComponent("jobs").appendingPathComponent(id) }

    /// Makes every file parameter of the document absolute and inside the allowed folders, for a job writing into
    /// `jobFolder`. A path that leaves them, a file parameter given as a link (its value would only be known while
    /// running) and a NUL in a path are refused, each naming the node, parameter and path.
    public func confine(_ document: GraphDocument, registry: NodeRegistry, jobFolder: URL) -> (GraphDocument, [Diagnostic]) {
        var copy = document
        var problems: [Diagnostic] = []
        for index in copy.nodes.indices {
            let node = copy.nodes[index]
            guard let type = node.type, let schema = registry.entry(for: type)?.schema else { continue }
            let fileParams = schema.inputFileParams.map { ($0, false) } + schema.outputFileParams.map { ($0, true) }
            for (name, isOutput) in fileParams {
                let path = "nodes.\(node.id).params.\(name)"
                if node.link(for: name) != nil {
                    problems.append(Diagnostic(path: "nodes.\(node.id).inputs.\(name)", nodeID: node.id,
                                               message: "the file path \"\(name)\" must be given in params, not linked: the server checks every path before a job runs"))
                    continue
                }
                let given = node.param(name)
                let text: String
                var location = node.location
                if let given {
                    guard case .string(let s) = given.kind else { continue }  // validation reports the wrong type
                    text = s
                    location = given.location
                } else if let spec = schema.inputs.first(where: { $0.name == name }), case .string(let s)? = spec.defaultValue {
                    text = s  // a default path would otherwise resolve against the server's current folder
                } else {
                    continue
                }
                guard !text.isEmpty else { continue }  // an empty path means "none" (optional files)
                // A relative input found in no folder is left to validation, which refuses the job listing every
                // place it looked; nothing of it is read.
                if !isOutput, !text.hasPrefix("/"), inputSearchPath.locate(text) == nil { continue }
                switch resolve(text, isOutput: isOutput, jobFolder: jobFolder) {
                case .success(let absolute):
                    let value = JSONValue(.string(absolute), at: location ?? TextPosition(line: 1, column: 1))
                    if let p = copy.nodes[index].params.firstIndex(where: { $0.name == name }) {
                        copy.nodes[index].params[p].value = value
                    } else {
                        copy.nodes[index].params.append((name, value))
                    }
                case .failure(let reason):
                    problems.append(Diagnostic(path: path, nodeID: node.id, message: reason.message, location: location))
                }
            }
        }
        return (copy, problems)
    }

    /// Why a path was refused.
    public struct Refusal: Error, Sendable {
        public var message: String
    }

    /// The absolute path a job will use for `text`, or why it may not. A relative input is the first match of
    /// `inputSearchPath` (the workspace's when there is none).
    public func resolve(_ text: String, isOutput: Bool, jobFolder: URL) -> Result<String, Refusal> {
        if text.utf8.contains(0) { return .failure(Refusal(message: "the path contains a NUL character")) }
        let absolute: String
        if text.hasPrefix("/") {
            absolute = text
        } else if isOutput {
            absolute = jobFolder.path + "/" + text
        } else {
            // Joined as text: `..` is resolved below as the kernel will, after symbolic links.
            absolute = inputSearchPath.locate(text) ?? root.path + "/" + text
        }
        let allowed = isOutput ? [root] : [root] + readOnlyFolders
        let where_ = isOutput ? "the workspace \(root.path)" :
            (readOnlyFolders.isEmpty ? "the workspace \(root.path)" : "the workspace \(root.path) or the models folders (\(readOnlyFolders.map(\.path).joined(separator: ", ")))")
        // Image-sequence patterns (`frames/f_%05d.png`) name files that share the pattern's folder.
        let checked = Workspace.isSequencePattern(text) ? (absolute as NSString).deletingLastPathComponent : absolute
        guard let resolved = Workspace.resolveExisting(checked) else {
            return .failure(Refusal(message: "path \"\(text)\" cannot be resolved (a dangling symbolic link or an unreadable folder); the server reads and writes only inside \(where_)"))
        }
        guard allowed.contains(where: { Workspace.isInside(resolved, $0.path) }) else {
            let shown = resolved == absolute ? "" : " (it resolves to \(resolved))"
            return .failure(Refusal(message: "path \"\(text)\" is outside \(where_)\(shown); the server refuses jobs that read or write other files"))
        }
        if Workspace.isSequencePattern(text) {
            return .success(resolved + "/" + (text as NSString).lastPathComponent)
        }
        return .success(resolved)
    }

    /// True when `path` is `folder` or below it (both absolute, without `..`).
    static func isInside(_ path: String, _ folder: String) -> Bool {
        path == folder || path.hasPrefix(folder.hasSuffix("/") ? folder : folder + "/")
    }

    /// True for printf-style frame-number patterns, as the validator and FFmpeg's image2 demuxer read them.
    static func isSequencePattern(_ path: String) -> Bool {
        path.range(of: #"%0?[0-9]*d"#, options: .regularExpression) != nil
    }

    /// `realpath` of the longest existing prefix of `path`, plus the rest resolved by hand (missing folders cannot be
    /// links, so their `..` is plain text). A symbolic link at the end is followed even when dangling, because a saver
    /// writes through it; a link chain that cannot be resolved gives `nil`.
    static func resolveExisting(_ path: String, linksFollowed: Int = 0) -> String? {
        guard linksFollowed <= 40 else { return nil }  // the kernel's own limit is 40 (ELOOP)
        var components = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        var rest: [String] = []
        var prefix = "/" + components.joined(separator: "/")
        while realPath(prefix) == nil {
            // A dangling link: follow it by hand so `out.png -> /etc/x.png` is judged by where it points.
            if FileKind(path: prefix, followLinks: false) == .symlink {
                guard let target = readLink(prefix) else { return nil }
                let parent = (prefix as NSString).deletingLastPathComponent
                let next = target.hasPrefix("/") ? target : parent + "/" + target
                return resolveExisting(next + (rest.isEmpty ? "" : "/" + rest.reversed().joined(separator: "/")),
                                       linksFollowed: linksFollowed + 1)
            }
            guard let last = components.popLast() else { return nil }
            rest.append(last)
            prefix = "/" + components.joined(separator: "/")
        }
        guard var resolved = realPath(prefix) else { return nil }
        for component in rest.reversed() {
            switch component {
            case ".": continue
            case "..": resolved = (resolved as NSString).deletingLastPathComponent
            default: resolved = resolved == "/" ? "/" + component : resolved + "/" + component
            }
        }
        return resolved
    }

    /// `path` with every symbolic link resolved (itself when it does not exist), as refusals name it.
    public static func canonical(_ path: String) -> String { realPath(path) ?? path }

    /// The canonical path of an existing file or folder, every link followed; `nil` when it does not exist.
    static func realPath(_ path: String) -> String? {
        guard let pointer = realpath(path, nil) else { return nil }
        defer { free(pointer) }
        return String(cString: pointer)
    }

    private static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink(path, &buffer, buffer.count - 1)
        guard length >= 0 else { return nil }
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
