// swift-tools-version: 6.0
import PackageDescription

/// An external Lapse plugin in its own package: one node (`Sharpen`), built as `libSharpenPlugin.so` and loaded with
/// `lapse --plugin-path`. See docs/writing-nodes.md.
let package = Package(
    name: "SharpenPlugin",
    platforms: [.macOS(.v14)],
    products: [
        // The library `lapse` loads. Dynamic, so `swift build` links it as a shared object.
        .library(name: "SharpenPlugin", type: .dynamic, targets: ["SharpenPlugin"]),
    ],
    dependencies: [
        // The Lapse core, here from this repository; a plugin kept elsewhere names Lapse's git URL (or its own path to
        // a checkout) and the same version as the `lapse` that will load it.
        .package(name: "Lapse", path: "../.."),
    ],
    targets: [
        // Links the core's dynamic LapsePluginAPI product, so the core's symbols stay undefined in the plugin and bind
        // to the copy inside `lapse` when it is loaded (one set of types: a `Frames` from a core node is a `Frames` here).
        .target(name: "SharpenPlugin", dependencies: [.product(name: "LapsePluginAPI", package: "Lapse")]),
        .testTarget(name: "SharpenPluginTests", dependencies: ["SharpenPlugin",
                                                               .product(name: "LapseTestSupport", package: "Lapse")]),
    ]
)
