import Foundation
import LapseGraph

/// Writes an output file through a temporary sibling and a rename (LapseGraph's `AtomicFile`), so a failed or
/// cancelled run never leaves a partial file under the final name. Missing folders are created; a read-only folder, or
/// a file where the folder should be, gets a clear error before any work starts.
enum AtomicOutput {
    /// Runs `body` with a temporary path in the destination folder (same extension, which libav picks muxers by),
    /// then renames it to `path`.
    static func write(to path: String, _ body: (String) throws -> Void) throws {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw MediaError.cannotWrite(path: path, reason: "\(folder) is a file, not a folder")
            }
        } else {
            // Like ComfyUI's and chaiNNer's savers, a missing output folder is made rather than refused.
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            } catch {
                throw MediaError.cannotWrite(path: path, reason: "cannot create folder \(folder): \(error.localizedDescription)")
            }
        }
        guard FileManager.default.isWritableFile(atPath: folder) else {
            throw MediaError.cannotWrite(path: path, reason: "folder \(folder) is not writable")
        }
        // The runtime's AtomicFile tracks pending temporaries, so an interrupted run removes them too.
        try AtomicFile.write(to: url) { temp in try body(temp.path) }
    }
}
