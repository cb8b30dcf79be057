import Foundation
import LapseGraph

/// A graph folder, a current directory and two models folders under one temporary folder: the places input-file
/// lookup searches, for the search-path tests of the graph runtime and the CLI.
public struct SearchFolders: Sendable {
    public let root: URL
    /// Stands for the graph file's folder.
    public var graphs: URL { root.appendingPathComponent("graphs") }
    /// Stands for the current directory.
    public var work: URL { root.appendingPathComponent("work") }
    /// The first and second models folders, in search order.
    public var modelsA: URL { root.appendingPathComponent("models-a") }
    public var modelsB: URL { root.appendingPathComponent("models-b") }

    /// Creates the four folders.
    public init() throws {
        root = try TestSupport.makeTemporaryDirectory()
        for folder in [graphs, work, modelsA, modelsB] {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        }
    }

    /// The search these folders stand for: graph folder, current directory, then models A and B.
    public var searchPath: InputSearchPath {
        InputSearchPath(graphFolder: graphs, currentDirectory: work, modelsFolders: [modelsA, modelsB])
    }

    /// `folder/weights/m.bin` of `bytes` bytes: the size a node reads tells which one the search found.
    public func put(_ bytes: Int, in folder: URL) throws {
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("weights"), withIntermediateDirectories: true)
        try Data(repeating: 1, count: bytes).write(to: folder.appendingPathComponent("weights/m.bin"))
    }
}
