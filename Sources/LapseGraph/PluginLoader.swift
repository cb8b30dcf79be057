import Foundation
import LapseSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What an external plugin library's entry point receives: the host's registry, wrapped with the library's path
/// so clashes name it.
///
/// The C entry point every plugin exports (see docs/writing-nodes.md):
///
///     int32_t lapse_plugin_register(void *registrar);   // 0 on success
///
/// In Swift: `@_cdecl("lapse_plugin_register") public func register(_ raw: UnsafeMutableRawPointer) -> Int32`,
/// with `PluginRegistrar.from(raw)` giving this object.
public final class PluginRegistrar: @unchecked Sendable {
    public let registry: NodeRegistry
    /// The library's path, shown as the source of its node types.
    public let source: String
    /// Problems met while registering (duplicate type names, …).
    public private(set) var errors: [any Error] = []
    /// Types this plugin registered.
    public private(set) var registered: [String] = []

    public init(registry: NodeRegistry, source: String) {
        self.registry = registry
        self.source = source
    }

    /// The registrar behind the opaque pointer handed to `lapse_plugin_register`.
    public static func from(_ raw: UnsafeMutableRawPointer) -> PluginRegistrar {
        Unmanaged<PluginRegistrar>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Registers a node type under this plugin's path; a clash is recorded, not thrown, so the plugin's other
    /// nodes still register.
    public func register(_ nodeType: any Node.Type) {
        do {
            try registry.register(nodeType, source: source)
            registered.append(nodeType.schema.type)
        } catch let error as RegistryError {
            registry.recordConflict(error)
            errors.append(error)
        } catch {
            errors.append(error)
        }
    }

    /// Registers a persistable data type (see `PersistableValue`).
    public func registerPersistable(_ type: any PersistableValue.Type) { registry.registerPersistable(type) }

    /// Records a failure the plugin detected itself (e.g. a missing resource).
    public func fail(_ message: String) { errors.append(PluginError.registration(path: source, reason: message)) }
}

/// Why a plugin library was not (fully) loaded.
public enum PluginError: LocalizedError, Sendable {
    case open(path: String, reason: String)
    case missingEntryPoint(path: String)
    case registration(path: String, reason: String)
    case unreadableDirectory(path: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .open(let path, let reason): "plugin \(path): cannot load: \(reason)"
        case .missingEntryPoint(let path): "plugin \(path): not a lapse plugin (no lapse_plugin_register entry point)"
        case .registration(let path, let reason): "plugin \(path): \(reason)"
        case .unreadableDirectory(let path, let reason): "plugin directory \(path): \(reason)"
        }
    }
}

/// Loads external plugin libraries with `dlopen` and lets them register their nodes.
///
/// A plugin package links the core's dynamic `LapsePluginAPI` product (LapseGraph, LapseTensor, LapseSupport), so
/// the plugin itself leaves every core symbol undefined. The host executable exports its own copy of those modules
/// (LapseGraph is linked with `--export-dynamic`), and the dynamic linker resolves a library's undefined symbols in
/// the global scope (the executable first) before the library's own dependencies. So the plugin binds to the
/// host's copy and `Frames`, `Tensor` and `Node` are the same types on both sides; the `libLapsePluginAPI.so` it
/// names as a dependency is loaded but never called.
public enum PluginLoader {
    /// The name of the C entry point.
    public static let entryPoint = "lapse_plugin_register"
    /// Colon-separated directories searched in addition to `--plugin-path`.
    public static let environmentVariable = "LAPSE_PLUGIN_PATH"
    /// A LapseGraph symbol whose address tells whether a library brought its own copy: the metadata accessor of
    /// `PluginRegistrar`, the type every entry point receives (it lives in this file, so it cannot move unseen).
    static let typeIdentitySymbol = "$s10LapseGraph15PluginRegistrarCMa"
    /// Core types a library may carry a copy of besides LapseGraph's: `Frames` (LapseTensor's metadata accessor), the
    /// type most plugins pass across the boundary.
    static let coreCopySymbols = [typeIdentitySymbol, "$s11LapseTensor6FramesCMa"]
    /// The core library `swift build` puts next to every plugin (the `LapsePluginAPI` product): not a plugin, so a
    /// plugin folder may be a package's build folder as it is.
    public static let coreLibraryNames: Set<String> = ["libLapsePluginAPI.so", "libLapsePluginAPI.dylib"]

    /// Loads every `.so`/`.dylib` in `directory`, in name order. Returns the problems; the rest keeps working.
    public static func loadDirectory(_ directory: URL, into registry: NodeRegistry) -> [any Error] {
        let names: [String]
        let kind = FileKind(path: directory.path)
        guard kind == .directory else {
            let reason = kind == .missing ? "no such folder" : "is \(kind.description), not a folder of plugin libraries"
            return [PluginError.unreadableDirectory(path: directory.path, reason: reason)]
        }
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            return [PluginError.unreadableDirectory(path: directory.path, reason: AtomicFile.systemReason(error))]
        }
        var errors: [any Error] = []
        for name in names.sorted() where (name.hasSuffix(".so") || name.hasSuffix(".dylib")) && !coreLibraryNames.contains(name)
            && FileKind(path: directory.appendingPathComponent(name).path) == .regular {
            errors += loadLibrary(directory.appendingPathComponent(name), into: registry)
        }
        return errors
    }

    /// Loads one library and calls its entry point.
    public static func loadLibrary(_ url: URL, into registry: NodeRegistry) -> [any Error] {
        let path = url.standardizedFileURL.path
        _ = dlerror()
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            return [PluginError.open(path: path, reason: reason)]
        }
        guard let symbol = dlsym(handle, entryPoint) else {
            dlclose(handle)
            return [PluginError.missingEntryPoint(path: path)]
        }
        // glibc matches a library by device and inode as well as by name: a new file that got the inode of a loaded
        // library deleted since (a temporary folder, a reinstalled plugin) comes back as that old library.
        if let loaded = imagePath(containing: symbol),
           URL(fileURLWithPath: loaded).resolvingSymlinksInPath().path != URL(fileURLWithPath: path).resolvingSymlinksInPath().path {
            return [PluginError.registration(path: path, reason: """
                the dynamic linker returned the already loaded \(loaded) for it (same device and inode); \
                restart the program to load this file
                """)]
        }
        if let problem = typeIdentityProblem(handle: handle, path: path) {
            return [PluginError.registration(path: path, reason: problem)]
        }
        typealias Entry = @convention(c) (UnsafeMutableRawPointer) -> Int32
        let function = unsafeBitCast(symbol, to: Entry.self)
        let registrar = PluginRegistrar(registry: registry, source: path)
        let status = withExtendedLifetime(registrar) {
            function(Unmanaged.passUnretained(registrar).toOpaque())
        }
        var errors = registrar.errors
        if status != 0 && errors.isEmpty {
            errors.append(PluginError.registration(path: path, reason: "entry point returned \(status)"))
        }
        // Never dlclose a library that registered types: their metadata must outlive the registry.
        return errors
    }

    /// Why the library just opened would not share the host's LapseGraph types, or nil when it will.
    ///
    /// A library whose own image defines LapseGraph symbols (it linked the core statically, e.g. through the
    /// automatic `LapseGraph` product) binds its references to that copy, so its `Frames`, `Node`, … are other
    /// types and every cast across the boundary would fail. A library that leaves them undefined binds to the
    /// host's copy provided the host exports it; a host that does not would leave it the `libLapsePluginAPI.so`
    /// copy, with the same mismatch.
    static func typeIdentityProblem(handle: UnsafeMutableRawPointer, path: String) -> String? {
        let host = dlsym(nil, typeIdentitySymbol)
        let library = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        // Any core type defined in the library's own image means it linked the core statically.
        for symbol in coreCopySymbols {
            guard let found = dlsym(handle, symbol), let definer = imagePath(containing: found) else { continue }
            if URL(fileURLWithPath: definer).resolvingSymlinksInPath().path == library {
                return """
                    contains its own copy of LapseGraph, so its types would not match the host's; link the core's \
                    dynamic LapsePluginAPI product instead (see docs/writing-nodes.md)
                    """
            }
        }
        guard let found = dlsym(handle, typeIdentitySymbol) else {
            // Defined neither in the library nor in its dependencies: it can only bind to the host's copy.
            return host == nil ? "needs LapseGraph, which this program does not export" : nil
        }
        let definer = imagePath(containing: found)
        if host == nil {
            return """
                would bind to the LapseGraph in \(definer ?? "one of its dependencies"), as this program does not \
                export its own; its types would not match the host's
                """
        }
        return nil
    }

    /// The file of the loaded image that contains `address`, or nil when it cannot be told.
    static func imagePath(containing address: UnsafeMutableRawPointer) -> String? {
        #if canImport(Darwin)
        var info = Dl_info()
        return dladdr(address, &info) != 0 ? info.dli_fname.map { String(cString: $0) } : nil
        #else
        // Glibc's dladdr is a GNU extension Swift's Glibc module does not import; the kernel's map of this process
        // says the same: lines "start-end perms offset dev inode path", addresses in hex.
        let target = UInt(bitPattern: address)
        // Read to the end: Foundation's readers stop after the first 4 KB of a /proc file (its size reads as 0), and
        // a busy process's table is far longer. As bytes: a mapped file whose name is not UTF-8 must not hide the rest.
        guard let bytes = try? InputFile.read("/proc/self/maps") else { return nil }
        let maps = String(decoding: bytes, as: UTF8.self)
        for line in maps.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            let range = fields.first?.split(separator: "-") ?? []
            guard fields.count == 6, range.count == 2, let start = UInt(range[0], radix: 16),
                  let end = UInt(range[1], radix: 16), start <= target, target < end else { continue }
            return String(fields[5]).trimmingCharacters(in: .whitespaces)
        }
        return nil
        #endif
    }

    /// Directories named by `LAPSE_PLUGIN_PATH` (colon-separated).
    public static func environmentDirectories(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> [URL] {
        (environment[environmentVariable] ?? "").split(separator: ":").filter { !$0.isEmpty }
            .map { URL(fileURLWithPath: String($0)) }
    }
}
