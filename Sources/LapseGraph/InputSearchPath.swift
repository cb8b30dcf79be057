import Foundation

/// Where a relative input path is looked for: the one search behind every file a node reads (the params its schema
/// lists in `inputFileParams`), in `lapse run`, `validate`, `batch` and `serve` alike (docs/models.md).
///
/// The folders are tried in order and the first that holds the path wins: for the command line the graph file's
/// folder, then the current directory, then each models folder (`--models-dir`, then `LAPSE_MODELS`); for the server
/// its workspace, then its models folders. An absolute path is used as it is.
public struct InputSearchPath: Sendable, Equatable {
    /// What a folder is to the user, for "not found" messages.
    public enum Role: String, Sendable {
        case graphFolder = "the graph's folder"
        case currentDirectory = "the current directory"
        case modelsFolder = "models folder"
        case workspace = "the workspace"
    }

    /// One folder searched.
    public struct Folder: Sendable, Equatable {
        /// Absolute, without `.` or `..`.
        public var url: URL
        public var role: Role

        public init(_ url: URL, role: Role) {
            self.url = url.standardizedFileURL
            self.role = role
        }
    }

    /// The environment variable naming models folders, `:`-separated, searched after `--models-dir`.
    public static let environmentVariable = "LAPSE_MODELS"

    /// The folders in search order, each once (a folder named twice keeps its first place).
    public let folders: [Folder]

    public init(_ folders: [Folder]) {
        var seen = Set<String>()
        self.folders = folders.filter { seen.insert($0.url.path).inserted }
    }

    /// The command line's order: the graph file's folder (when the graph is a file), the current directory, then
    /// the models folders in order.
    public init(graphFolder: URL?, currentDirectory: URL, modelsFolders: [URL] = []) {
        self.init((graphFolder.map { [Folder($0, role: .graphFolder)] } ?? [])
                  + [Folder(currentDirectory, role: .currentDirectory)]
                  + modelsFolders.map { Folder($0, role: .modelsFolder) })
    }

    /// The folders `LAPSE_MODELS` lists, in order (empty entries skipped; relative ones are the caller's to resolve).
    public static func environmentFolders(_ environment: [String: String]) -> [String] {
        (environment[environmentVariable] ?? "").split(separator: ":").map(String.init).filter { !$0.isEmpty }
    }

    /// The file `path` names: itself when absolute, else the first `folder/path` that exists; nil when none does.
    /// For an image-sequence pattern (`frames/f_%05d.png`) its folder must exist, as loaders read it. The result is
    /// the folder and `path` joined as text: a `..` in `path` keeps the meaning the kernel gives it (after symbolic
    /// links), the meaning it had relative to the folder.
    public func locate(_ path: String) -> String? {
        if path.hasPrefix("/") { return path }
        for folder in folders {
            let joined = join(folder, path)
            let checked = GraphValidator.isSequencePattern(path) ? (joined as NSString).deletingLastPathComponent : joined
            if FileKind(path: checked) != .missing { return joined }
        }
        return nil
    }

    private func join(_ folder: Folder, _ path: String) -> String {
        folder.url.path == "/" ? "/" + path : folder.url.path + "/" + path
    }

    /// Every place a relative `path` was looked for, for "not found" messages:
    /// `/g/x.bin (the graph's folder), /cwd/x.bin (the current directory), /m/x.bin (models folder)`.
    public func places(for path: String) -> String {
        folders.map { "\(join($0, path)) (\($0.role.rawValue))" }.joined(separator: ", ")
    }
}
