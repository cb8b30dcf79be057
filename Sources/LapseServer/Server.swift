import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import LapseGraph

/// Why the server cannot start or a request cannot be served.
public enum ServerError: LocalizedError, Sendable {
    case workspace(String)
    case tokenRequired(host: String)
    case invalidOption(String)

    public var errorDescription: String? {
        switch self {
        case .workspace(let message): "workspace: \(message)"
        case .tokenRequired(let host):
            "refusing to listen on \(host) without a token: anyone who can reach that address could run graphs; pass --token T (or set LAPSE_TOKEN), or listen on 127.0.0.1"
        case .invalidOption(let message): message
        }
    }
}

/// How `lapse serve` runs.
public struct ServerOptions: Sendable {
    /// Address to listen on; anything but a loopback address needs `token`.
    public var host = "127.0.0.1"
    /// Port to listen on; 0 picks a free one.
    public var port = 8188
    /// Required unless `host` is a loopback address; checked on every request when set.
    public var token: String?
    /// Largest request body accepted (a graph with its overrides), in bytes.
    public var maxBodyBytes = 8 << 20
    /// Jobs running at once.
    public var maxJobs = 1
    /// Nodes of one job running at once.
    public var nodeConcurrency = 2
    /// Jobs waiting at most before submissions are refused with 503.
    public var maxQueued = 1000
    /// Memory for loaded models kept between jobs (`ModelCache.shared`), in bytes; 0 keeps none, nil leaves the
    /// process's cache as it is (tests running several servers in one process).
    public var modelMemoryBytes: Int? = ServerOptions.defaultModelMemory

    /// A quarter of the machine's memory: room for a few checkpoints beside the jobs' own working memory.
    public static var defaultModelMemory: Int { Int(min(ProcessInfo.processInfo.physicalMemory / 4, UInt64(Int.max))) }

    /// The defaults of `lapse serve`.
    public init() {}

    /// True for addresses only this machine can reach.
    public static func isLoopback(_ host: String) -> Bool {
        let trimmed = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return trimmed == "localhost" || trimmed == "::1" || trimmed.hasPrefix("127.")
    }

    /// Refuses a configuration that would expose the server without a token.
    public func check() throws {
        guard (1...65535).contains(port) || port == 0 else { throw ServerError.invalidOption("--port must be 0…65535") }
        guard maxJobs >= 1 else { throw ServerError.invalidOption("--max-jobs must be at least 1") }
        if !ServerOptions.isLoopback(host) && (token ?? "").isEmpty { throw ServerError.tokenRequired(host: host) }
        if let token, token.isEmpty { throw ServerError.invalidOption("the token is empty; pass a non-empty --token or LAPSE_TOKEN") }
    }
}

/// The HTTP API of `lapse serve` (see docs/serve.md and docs/serve.openapi.yaml) over a `JobQueue`.
public struct LapseHTTPServer: Sendable {
    public let options: ServerOptions
    public let queue: JobQueue

    /// A server over `queue`; refuses options that would expose it without a token.
    public init(options: ServerOptions, queue: JobQueue) throws {
        try options.check()
        self.options = options
        self.queue = queue
    }

    /// Serves until `shutdown` is cancelled; `onListening` receives the bound port (useful with port 0). Running jobs
    /// are cancelled on the way out.
    public func run(shutdown: CancellationToken, onListening: @escaping @Sendable (Int) -> Void) async throws {
        if let bytes = options.modelMemoryBytes { ModelCache.shared.setBudget(bytes) }
        let app = Application(
            router: makeRouter(),
            server: HTTPServerBuilder { responder in LapseServerChannel(responder: responder, webSocketJob: eventSocketJob) },
            configuration: ApplicationConfiguration(address: .hostname(options.host, port: options.port), serverName: "lapse"),
            onServerRunning: { [options] channel in onListening(channel.localAddress?.port ?? options.port) },
            logger: Self.quietLogger())
        let queue = self.queue
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.run() }
            group.addTask {
                while !shutdown.isCancelled { try await Task.sleep(for: .milliseconds(100)) }
                // Jobs first: open event streams end with their jobs, so the server then closes promptly.
                queue.cancelAll()
            }
            // The first to end is a shutdown request, or the server failing (an address already in use).
            try await group.next()
            queue.cancelAll()
            group.cancelAll()
        }
        await queue.waitUntilIdle()
    }

    static func quietLogger() -> Logger {
        var logger = Logger(label: "lapse.serve")
        logger.logLevel = .warning
        return logger
    }

    /// The job a WebSocket upgrade request may stream the events of: `GET /jobs/{id}/events` of a known job, passing
    /// the token check every route passes and `EventSocket.problem`'s checks. Anything else (nil) is left to the
    /// router, which answers it as it answers any request: 401, 404, or the upgrade's problem (`API.events`).
    func eventSocketJob(_ request: Request) -> Job? {
        guard request.method == .get, let id = EventSocket.jobID(inEventsPath: request.uri.path),
              EventSocket.asksForWebSocket(request),
              TokenMiddleware<BasicRequestContext>.refusal(of: request, token: options.token) == nil,
              EventSocket.problem(with: request) == nil else { return nil }
        return queue.job(id)
    }

    /// The routes, behind JSON errors and the token check.
    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: JSONErrorMiddleware())
        router.add(middleware: TokenMiddleware(token: options.token))
        let api = API(queue: queue, maxBodyBytes: options.maxBodyBytes)
        router.get("/") { _, _ in WebPage.response() }
        router.get("/nodes") { _, _ in api.nodes() }
        router.get("/graphs") { _, _ in try api.graphs() }
        router.get("/graphs/:name") { _, context in try api.graph(named: try context.parameters.require("name")) }
        router.post("/validate") { request, _ in try await api.validate(request) }
        router.post("/jobs") { request, _ in try await api.submit(request) }
        router.get("/jobs") { _, _ in api.list() }
        router.get("/jobs/:id") { _, context in try api.describe(try context.parameters.require("id")) }
        router.delete("/jobs/:id") { _, context in try api.cancel(try context.parameters.require("id")) }
        router.get("/jobs/:id/events") { request, context in try api.events(try context.parameters.require("id"), request) }
        router.get("/jobs/:id/outputs/**") { _, context in
            try await api.output(try context.parameters.require("id"), name: context.parameters.getCatchAll().joined(separator: "/"),
                                 context: context)
        }
        return router
    }
}

/// Turns every error into a JSON body `{"error": {"message": …}}` with a 4xx/5xx status; nothing reaches the client
/// as an empty 500 or a dropped connection.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return error.response
        } catch let error as HTTPError {
            let message = error.body ?? (error.status == .notFound ? "no such endpoint: \(request.method) \(request.uri.path)" : error.status.reasonPhrase)
            return APIError(error.status, message).response
        } catch let error as any HTTPResponseError {
            let message = error.status == .contentTooLarge ? "the request body is too large" : error.status.reasonPhrase
            return APIError(error.status, message).response
        } catch {
            return APIError(.internalServerError, "internal error: \(error.localizedDescription)").response
        }
    }
}

/// Requires `Authorization: Bearer TOKEN` (or `?token=TOKEN`, for browsers' EventSource and the page's links) on
/// every request when the server has a token, compared in constant time.
struct TokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let refusal = TokenMiddleware.refusal(of: request, token: token) { throw refusal }
        return try await next(request, context)
    }

    /// Why `request` may not be served by a server whose token is `token` (nil: it may). Also decides WebSocket
    /// upgrades, which are made before routing, so both follow one rule.
    static func refusal(of request: Request, token: String?) -> APIError? {
        guard let token else { return nil }
        var offered: String?
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { offered = String(parts[1]).trimmingCharacters(in: .whitespaces) }
        }
        if offered == nil, let query = request.uri.queryParameters.get("token") { offered = query }
        guard let offered else {
            return APIError(.unauthorized, "a token is required: send the header \"Authorization: Bearer TOKEN\"",
                            headers: [.wwwAuthenticate: "Bearer realm=\"lapse\""])
        }
        guard TokenMiddleware.constantTimeEqual(offered, token) else {
            return APIError(.unauthorized, "the token is wrong", headers: [.wwwAuthenticate: "Bearer realm=\"lapse\", error=\"invalid_token\""])
        }
        return nil
    }

    /// Compares every byte whatever the first difference, so the time taken says nothing about the token.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var difference = UInt8(truncatingIfNeeded: x.count ^ y.count) | (x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) {
            difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return difference == 0
    }
}

/// An error answer: a status and a JSON body `{"error": {"message": …, …}}`.
struct APIError: Error {
    var status: HTTPResponse.Status
    var message: String
    var extra: [(key: String, value: JSONValue)] = []
    var headers: HTTPFields = [:]

    init(_ status: HTTPResponse.Status, _ message: String, extra: [(key: String, value: JSONValue)] = [], headers: HTTPFields = [:]) {
        self.status = status
        self.message = message
        self.extra = extra
        self.headers = headers
    }

    var response: Response {
        // Details (the diagnostics of an invalid graph, a JSON syntax error's position) sit beside the message.
        let body = JSONValue.obj([("error", .obj([("message", .str(message))]))] + extra)
        var response = JSONResponse.make(body, status: status)
        for field in headers { response.headers.append(field) }
        return response
    }
}

/// JSON answers.
enum JSONResponse {
    static func make(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        let text = SchemaJSON.pretty(value, indent: "") + "\n"
        return Response(status: status, headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
                        body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}

extension JSONValue {
    static func str(_ s: String) -> JSONValue { JSONValue(.string(s)) }
    static func int(_ i: Int) -> JSONValue { JSONValue(.number(Double(i), integer: i)) }
    static func num(_ d: Double) -> JSONValue { JSONValue(.number(d, integer: nil)) }
    static func bool(_ b: Bool) -> JSONValue { JSONValue(.bool(b)) }
    static let null = JSONValue(.null)
    static func obj(_ members: [(key: String, value: JSONValue)]) -> JSONValue { JSONValue(.object(members)) }
    static func arr(_ items: [JSONValue]) -> JSONValue { JSONValue(.array(items)) }
}
