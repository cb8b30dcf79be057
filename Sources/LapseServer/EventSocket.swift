import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
// WebSocketHandler (the frame protocol: pings, the close handshake, fragmentation) is SPI of swift-websocket, the
// engine under hummingbird-websocket, which uses it the same way. It is used directly because hummingbird-websocket's
// own channel (HTTP1WebSocketUpgradeChannel) answers every refused upgrade with a bare 400 whatever the reason,
// while this server answers it as it answers any request (401, 404, 403, 400, 426, with a JSON error).
// hummingbird-websocket is pinned to 2.8.1 (Package.swift), which takes swift-websocket from 1.6.2 within 1.x: a
// change of this SPI there would fail the build, not the behaviour.
@_spi(WSInternal) import WSCore

/// `GET /jobs/{id}/events` over WebSocket: the job's `lapse run --events json` lines, one text message each (past
/// events first), then a close frame (1000, the final state as the reason) once the job has ended.
///
/// The upgrade is decided before routing (NIO answers it with 101 before the router could run), by the same token
/// rule as every endpoint; a request it does not upgrade is answered by the router like any other request, with the
/// reason (401, 404, or `API.events`'s). A client that goes away only unsubscribes: the job never waits on it.
enum EventSocket {
    /// Largest frame accepted from a client (clients have nothing to send but control frames).
    static let maxFrameSize = 1 << 14
    /// A client that stops answering pings is dropped after this (and a second period).
    static let pingPeriod: Duration = .seconds(30)
    /// How long the server waits for the client's answer to its close frame.
    static let closeTimeout: Duration = .seconds(10)

    /// The job id in an events path, `/jobs/{id}/events` (a trailing slash allowed, as the router allows it).
    static func jobID(inEventsPath path: String) -> String? {
        let parts = path.split(separator: "/")
        guard parts.count == 3, parts[0] == "jobs", parts[2] == "events" else { return nil }
        return String(parts[1])
    }

    /// True when the request carries `Upgrade: websocket` (the token is matched case-insensitively).
    static func asksForWebSocket(_ request: Request) -> Bool {
        headerTokens(request.headers[values: .upgrade]).contains("websocket")
    }

    /// Why a WebSocket upgrade on the events path of a known job cannot be made, after the token check: nil when it
    /// can. A browser page from another origin is refused: browsers apply no same-origin rule to WebSockets, so
    /// without this any page open in the user's browser could read a localhost server's events.
    static func problem(with request: Request) -> APIError? {
        if let origin = request.headers[.origin], isForeign(origin: origin, host: request.head.authority) {
            return APIError(.forbidden, "a WebSocket from another origin (\(origin)) is refused: open it from a page of this server, or from a client that sends no browser Origin")
        }
        guard headerTokens(request.headers[values: .connection]).contains("upgrade") else {
            return APIError(.badRequest, "a WebSocket upgrade needs the header \"Connection: Upgrade\"")
        }
        let versions = request.headers[values: .secWebSocketVersion]
        guard versions == ["13"] else {
            let got = versions.isEmpty ? "none" : versions.joined(separator: ", ")
            return APIError(.upgradeRequired, "WebSocket version 13 (RFC 6455) is the one supported; the request asked for \(got)",
                            headers: [.secWebSocketVersion: "13"])
        }
        let keys = request.headers[values: .secWebSocketKey]
        guard keys.count == 1, let key = Data(base64Encoded: keys[0]), key.count == 16 else {
            return APIError(.badRequest, "a WebSocket upgrade needs one header Sec-WebSocket-Key: 16 random bytes in base64 (RFC 6455 §4.1)")
        }
        return nil
    }

    /// True for a browser origin (`http://` or `https://`, or the opaque `null`) whose host and port differ from the
    /// `Host` the request was sent to. Other schemes are not set by browsers (hummingbird-websocket's client sends
    /// `ws://HOST`), and a request without `Origin` does not come from a page.
    static func isForeign(origin: String, host: String?) -> Bool {
        let lowered = origin.lowercased().trimmingCharacters(in: .whitespaces)
        let defaultPort: String
        if lowered.hasPrefix("http://") {
            defaultPort = ":80"
        } else if lowered.hasPrefix("https://") {
            defaultPort = ":443"
        } else {
            return lowered == "null"
        }
        guard let host else { return true }
        func authority(_ text: Substring) -> Substring {
            let cut = text.prefix { $0 != "/" }
            return cut.hasSuffix(defaultPort) ? cut.dropLast(defaultPort.count) : cut
        }
        let originAuthority = authority(lowered[lowered.range(of: "://")!.upperBound...])
        return originAuthority != authority(Substring(host.lowercased()))
    }

    /// The comma-separated tokens of a header's values, lowercased.
    static func headerTokens(_ values: [String]) -> Set<String> {
        Set(values.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
    }

    /// Streams `job`'s events to a client: `past` and `future` are written as text messages, then the close frame;
    /// the client's side is read meanwhile (the handler answers its pings), and when it closes or vanishes the
    /// writing stops and the subscription ends.
    static func stream(_ job: Job, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        let (past, future, stop) = job.subscribe()
        defer { stop() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // Client messages mean nothing here and are dropped; the loop ends with the client's close frame or
                // its connection.
                for try await _ in inbound {}
            }
            group.addTask {
                for line in past { try await outbound.write(.text(line)) }
                for await line in future { try await outbound.write(.text(line)) }
                // The stream also ends when this task is cancelled (the client left): nothing more to say then.
                guard !Task.isCancelled else { return }
                try await outbound.close(.normalClosure, reason: job.snapshot.state.rawValue)
                // The reader above ends with the client's answering close frame; this is the wait's upper bound.
                try await Task.sleep(for: closeTimeout)
            }
            // Whichever ends first decides: the client gone (or done answering), or the wait for its answer over.
            defer { group.cancelAll() }
            try await group.next()
        }
    }
}

/// The connection handler of `lapse serve`: HTTP/1.1, whose first request may upgrade to a WebSocket on
/// `GET /jobs/{id}/events` (see `EventSocket`); every other request goes to the router.
///
/// NIO's upgrade handler consumes the head of a request that asks for an upgrade it does not make, so such a request
/// never reaches an HTTP pipeline (hummingbird-websocket answers it with a bare 400). `FirstRequestHead` keeps that
/// head, and a refused WebSocket upgrade is answered by the router from it, as the plain request it then is.
struct LapseServerChannel: ServerChildChannel, HTTPChannelHandler {
    /// What the first request of a connection turned it into.
    enum Negotiated: Sendable {
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// A WebSocket upgrade that was not made; the request (its head) is still to be answered.
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, HTTPRequestHead)
        case webSocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, Job)
    }

    /// A connection being set up.
    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<Negotiated>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    /// The job whose events an upgrade request may stream, or nil to leave the request to the router.
    let webSocketJob: @Sendable (Request) -> Job?

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // The job found when the upgrade was granted, for the pipeline set up after the 101 response.
            let granted = NIOLockedValueBox<Job?>(nil)
            let firstHead = NIOLockedValueBox<HTTPRequestHead?>(nil)
            let upgrader = NIOTypedWebSocketServerUpgrader<Negotiated>(
                maxFrameSize: EventSocket.maxFrameSize,
                shouldUpgrade: { channel, head in
                    // nil refuses the upgrade (NIO has already checked the key and version).
                    guard let request = try? HTTPRequest(head, secure: false, splitCookie: false),
                          let job = webSocketJob(Request(head: request, body: .init(buffer: ByteBuffer()))) else {
                        return channel.eventLoop.makeSucceededFuture(nil)
                    }
                    granted.withLockedValue { $0 = job }
                    return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard let job = granted.withLockedValue({ $0 }) else { throw ChannelError.inappropriateOperationForState }
                        let socket = try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        return .webSocket(socket, job)
                    }
                })
            let http1 = HTTP1Channel.Configuration()
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<Negotiated>(
                upgradeConfiguration: .init(upgraders: [upgrader], notUpgradingCompletionHandler: { channel in
                    // The same pipeline as Hummingbird's HTTP1Channel (`.http1()`).
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPConnectionStateHandler(idleTimeout: http1.idleTimeout.map { .init($0) }, logger: logger))
                        let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        // A head that still asks for an upgrade (FirstRequestHead leaves only WebSocket ones) was
                        // consumed by NIO's upgrade handler.
                        if let head = firstHead.withLockedValue({ $0 }), head.headers.contains(name: "upgrade") {
                            return .refused(http, head)
                        }
                        return .http(http)
                    }
                }))
            configuration.enablePipelining = false  // NIOAsyncChannel serialises requests
            configuration.enableErrorHandling = false  // handleHTTP answers malformed requests
            configuration.enableResponseHeaderValidation = false  // HTTPTypes validates
            configuration.decoderConfiguration.maxHeaderFieldSize = http1.httpDecoder.maxHeaderFieldSize
            configuration.decoderConfiguration.maxHeaderListSize = http1.httpDecoder.maxHeaderListSize
            configuration.decoderConfiguration.maxHeaderFieldCount = http1.httpDecoder.maxHeaderFieldCount
            let operations = channel.pipeline.syncOperations
            let negotiated = try operations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            let upgradeHandler = try operations.context(handlerType: NIOTypedHTTPServerUpgradeHandler<Negotiated>.self).handler
            try operations.addHandler(FirstRequestHead(recorded: firstHead), position: .before(upgradeHandler))
            return Value(negotiated: negotiated, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiated.get() {
            case .http(let channel):
                await handleHTTP(asyncChannel: channel, logger: logger)
            case .refused(let channel, let head):
                try await answer(head, on: channel)
            case .webSocket(let channel, let job):
                _ = try await WebSocketHandler.handle(
                    type: .server,
                    configuration: .init(extensions: [], autoPing: .enabled(timePeriod: EventSocket.pingPeriod),
                                         closeTimeout: EventSocket.closeTimeout, validateUTF8: true,
                                         maxFrameSize: EventSocket.maxFrameSize),
                    asyncChannel: channel, context: EventSocketContext(logger: logger),
                    handler: { inbound, outbound, _ in try await EventSocket.stream(job, inbound: inbound, outbound: outbound) })
            }
        } catch {
            // A client that went away mid-handshake or mid-stream: nothing to answer, the job is unaffected.
            logger.debug("connection ended: \(error)")
        }
    }

    /// Answers a refused upgrade through the router (its token check, its 404, `API.events`'s reasons), then closes:
    /// the rest of the connection's bytes were meant for a WebSocket.
    private func answer(_ head: HTTPRequestHead, on channel: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>) async throws {
        try await channel.executeThenClose { _, outbound in
            if let request = try? HTTPRequest(head, secure: false, splitCookie: false) {
                try await responder(Request(head: request, body: .init(buffer: ByteBuffer())), ResponseWriter(outbound: outbound), channel.channel)
            } else {
                try await outbound.write(.head(HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"])))
                try await outbound.write(.end(nil))
            }
        }
    }
}

/// Keeps the head of a connection's first request for `LapseServerChannel`, then leaves the pipeline. A request
/// asking to upgrade to anything but a WebSocket (`h2c`), or with another method than GET, loses its `Upgrade`
/// header here, so it is served as plain HTTP/1.1, as Hummingbird's `.http1()` serves it, instead of being consumed
/// by NIO's upgrade handler.
final class FirstRequestHead: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    let recorded: NIOLockedValueBox<HTTPRequestHead?>

    init(recorded: NIOLockedValueBox<HTTPRequestHead?>) {
        self.recorded = recorded
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        // Only a GET can become a WebSocket; NIO would fail any other upgrade request without an answer (and one
        // with a body without reading it).
        if head.headers.contains(name: "upgrade"),
           head.method != .GET || !EventSocket.headerTokens(head.headers["upgrade"]).contains("websocket") {
            head.headers.remove(name: "upgrade")
        }
        recorded.withLockedValue { $0 = head }
        context.fireChannelRead(wrapInboundOut(.head(head)))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// The context WSCore hands the event handler (only its logger is used).
struct EventSocketContext: WebSocketContext {
    let logger: Logger
}
