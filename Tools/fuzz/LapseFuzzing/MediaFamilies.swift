import Foundation

extension FuzzFamilies {
    /// Media decoders: PNG through libpng, image and video containers through libav.
    static var mediaFamilies: [FuzzFamily] { [] }
}
