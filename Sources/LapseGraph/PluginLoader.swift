import Foundation
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
/// The host executable exports its LapseGraph and LapseTensor symbols (linked with `--export-dynamic`). A plugin is
/// compiled against the host's modules and linked with those symbols left undefined, so the dynamic linker binds
/// them to the host's single copy and `Frames`, `Tensor` and `Node` are the same types on both sides.
public enum PluginLoader {
    /// The name of the C entry point.
    public static let entryPoint = "lapse_plugin_register"
    /// Colon-separated directories searched in addition to `--plugin-path`.
    public static let environmentVariable = "LAPSE_PLUGIN_PATH"
    /// A LapseGraph symbol (the `Frames` metadata accessor) whose address tells whether a library brought its own copy.
    static let typeIdentitySymbol = "$s10LapseGraph6FramesCMa"

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
        for name in names.sorted() where (name.hasSuffix(".so") || name.hasSuffix(".dylib"))
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
        // Swift gives public symbols protected visibility on ELF, so a library that links its own copy of
        // LapseGraph uses that copy's `Frames`, `Node`, … and every cast across the boundary fails. Refuse it.
        if let own = dlsym(handle, typeIdentitySymbol), own != dlsym(nil, typeIdentitySymbol) {
            return [PluginError.registration(path: path, reason: """
                contains its own copy of LapseGraph, so its types would not match the host's; build it against                 the host's modules with LapseGraph symbols left undefined (see docs/writing-nodes.md)
                """)]
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

    /// Directories named by `LAPSE_PLUGIN_PATH` (colon-separated).
    public static func environmentDirectories(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> [URL] {
        (environment[environmentVariable] ?? "").split(separator: ":").filter { !$0.isEmpty }
            .map { URL(fileURLWithPath: String($0)) }
    }
}
