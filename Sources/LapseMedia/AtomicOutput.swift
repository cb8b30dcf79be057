import Foundation
import LapseGraph

/// Writes an output file through a temporary sibling and a rename (LapseGraph's `AtomicFile`), so a failed or
/// cancelled run never leaves a partial file under the final name; missing or read-only folders get a clear error
/// before any work starts.
enum AtomicOutput {
    /// Runs `body` with a temporary path in the destination folder (same extension, which libav picks muxers by),
    /// then renames it to `path`.
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
        // The runtime's AtomicFile tracks pending temporaries, so an interrupted run removes them too.
        try AtomicFile.write(to: url) { temp in try body(temp.path) }
    }
}
