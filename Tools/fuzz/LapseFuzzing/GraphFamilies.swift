import Foundation

extension FuzzFamilies {
    /// Graph documents, node parameters and cache entries.
    static var graphFamilies: [FuzzFamily] { [] }
}
