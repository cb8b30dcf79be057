import Foundation

/// Writes an output file through a temporary sibling and a rename, so a failed or cancelled run never leaves a
/// partial file under the final name.
enum AtomicOutput {
    /// Runs `body` with a temporary path in the destination folder, then renames it to `path`.
    /// The temporary keeps the destination's extension because libav picks muxers by extension.
    static func write(to path: String, _ body: (String) throws -> Void) throws {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw MediaError.cannotWrite(path: path, reason: "folder \(folder) does not exist")
        }
        guard FileManager.default.isWritableFile(atPath: folder) else {
            throw MediaError.cannotWrite(path: path, reason: "folder \(folder) is not writable")
        }
        let ext = url.pathExtension
        let temp = folder + "/." + url.deletingPathExtension().lastPathComponent + ".lapse-tmp-"
            + UUID().uuidString.prefix(8) + (ext.isEmpty ? "" : "." + ext)
        do {
            try body(temp)
            guard rename(temp, path) == 0 else {
                throw MediaError.cannotWrite(path: path, reason: String(cString: strerror(errno)))
            }
        } catch {
            unlink(temp)
            throw error
        }
    }
}
