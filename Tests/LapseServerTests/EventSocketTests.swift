import Foundation
import HTTPTypes
import HummingbirdWSClient
import LapseGraph
import LapseServer
import LapseTestSupport
import Logging
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `GET /jobs/{id}/events` over WebSocket, read with hummingbird-websocket's `WebSocketClient` and, where the test
/// needs exact bytes (malformed upgrades, a connection cut without a close frame), with a raw socket.
@Suite("lapse serve: events over WebSocket")
struct EventSocketTests {
    @Test("a WebSocket gets the same events as SSE, one text message each, then a close frame with the final state")
    func sameEventsAsSSE() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let id = try await server.submit(writeGraph(steps: 300))
        // Both connect while the job runs (the past events replayed, the rest live), and both read until it ends.
        async let socket = EventSocketClient.read(server, "/jobs/\(id)/events")
        async let sse = server.request("GET", "/jobs/\(id)/events")
        let (live, stream) = try await (socket, sse)
        let sseEvents = EventSocketClient.sseData(stream.text)
        #expect(sseEvents.count >= 4)  // nodeStarted, progress…, nodeFinished ×2
        #expect(live.messages == sseEvents)
        #expect(live.messages.allSatisfy { (try? JSONParser.parse($0))?["event"]?.stringValue != nil })
        #expect(live.close?.closeCode == .normalClosure)
        #expect(live.close?.reason == "done")
        #expect(live.binaryMessages == 0)
        // A client arriving after the end gets the same replay, and the close at once.
        let late = try await EventSocketClient.read(server, "/jobs/\(id)/events")
        #expect(late.messages == sseEvents)
        #expect(late.close?.reason == "done")
        #expect(server.queue.job(id)?.eventSubscribers == 0)
        // A plain GET still gets Server-Sent Events.
        let plain = try await server.request("GET", "/jobs/\(id)/events")
        #expect(plain.headers["content-type"] == "text/event-stream")
        #expect(EventSocketClient.sseData(plain.text) == sseEvents)
    }

    @Test("a failed job's stream ends with its error event and the close reason failed")
    func failedJob() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let id = try await server.submit("""
        {"version": 1, "nodes": {"bad": {"type": "TestFail"}, "save": {"type": "TestWriteFile", "inputs": {"value": "bad"}, "params": {"path": "x.txt"}}}}
        """)
        _ = try await server.waitForEnd(id)
        let read = try await EventSocketClient.read(server, "/jobs/\(id)/events")
        #expect(read.close?.reason == "failed")
        let last = read.messages.last.flatMap { try? JSONParser.parse($0) }
        #expect(last?["event"]?.stringValue == "error")
        #expect(last?["node"]?.stringValue == "bad")
    }

    @Test("the upgrade passes the token check of every endpoint: missing or wrong is 401, header or ?token= passes")
    func token() async throws {
        let server = try await TestServer.start { $0.token = "s3cret-token" }
        defer { Task { await server.stop() } }
        let id = try await server.submit(writeGraph())
        for headers in [[:], ["Authorization": "Bearer s3cret-tokeN"], ["Authorization": "Bearer s3cret"]] {
            let refused = try await RawUpgrade.send(port: server.port, path: "/jobs/\(id)/events", extra: headers)
            #expect(refused.response.status == 401, "\(headers)")
            #expect(refused.response.json?["error"]?["message"]?.stringValue != nil)
            #expect(refused.response.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
            await #expect(throws: WebSocketClientError.webSocketUpgradeFailed) {
                _ = try await EventSocketClient.read(server, "/jobs/\(id)/events", headers: headers)
            }
        }
        let wrongQuery = try await RawUpgrade.send(port: server.port, path: "/jobs/\(id)/events?token=nope")
        #expect(wrongQuery.response.status == 401)
        // The right token, as the header or (browsers' WebSocket cannot send headers) in the query.
        let byHeader = try await EventSocketClient.read(server, "/jobs/\(id)/events", headers: ["Authorization": "Bearer s3cret-token"])
        #expect(byHeader.close?.reason == "done")
        let byQuery = try await EventSocketClient.read(server, "/jobs/\(id)/events?token=s3cret-token")
        #expect(byQuery.messages == byHeader.messages)
        #expect(!byQuery.messages.isEmpty)
    }

    @Test("an unknown job id is 404 with a JSON error, as over HTTP")
    func unknownJob() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let missing = try await RawUpgrade.send(port: server.port, path: "/jobs/0123456789abcdef0123456789abcdef/events")
        #expect(missing.response.status == 404)
        #expect(missing.response.json?["error"]?["message"]?.stringValue?.contains("no job") == true)
        await #expect(throws: WebSocketClientError.webSocketUpgradeFailed) {
            _ = try await EventSocketClient.read(server, "/jobs/0123456789abcdef0123456789abcdef/events")
        }
    }

    @Test("malformed or foreign upgrades get a 4xx JSON error, never a crash; a well-formed one gets 101")
    func malformed() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let id = try await server.submit(writeGraph())
        _ = try await server.waitForEnd(id)
        let path = "/jobs/\(id)/events"
        let cases: [(String, [String: String?], Int, String)] = [
            ("no key", ["Sec-WebSocket-Key": nil], 400, "Sec-WebSocket-Key"),
            ("a key that is not 16 bytes", ["Sec-WebSocket-Key": "c2hvcnQ="], 400, "Sec-WebSocket-Key"),
            ("version 8", ["Sec-WebSocket-Version": "8"], 426, "version 13"),
            ("no version", ["Sec-WebSocket-Version": nil], 426, "version 13"),
            ("no Connection: Upgrade", ["Connection": "keep-alive"], 400, "Connection: Upgrade"),
            ("another site's page", ["Origin": "http://evil.example"], 403, "another origin"),
            ("another port's page", ["Origin": "http://127.0.0.1:1"], 403, "another origin"),
            ("an opaque origin", ["Origin": "null"], 403, "another origin"),
        ]
        for (name, changes, status, words) in cases {
            let refused = try await RawUpgrade.send(port: server.port, path: path, changes: changes)
            #expect(refused.response.status == status, "\(name): \(refused.response.text.prefix(200))")
            #expect(refused.response.json?["error"]?["message"]?.stringValue?.contains(words) == true, "\(name): \(refused.response.text.prefix(200))")
        }
        let version = try await RawUpgrade.send(port: server.port, path: path, changes: ["Sec-WebSocket-Version": "8"])
        #expect(version.response.headers["sec-websocket-version"] == "13")
        // A page of this server may open it, as may a client sending no Origin.
        for origin in ["http://127.0.0.1:\(server.port)", nil] {
            let accepted = try await RawUpgrade.send(port: server.port, path: path, changes: ["Origin": origin])
            #expect(accepted.response.status == 101, "Origin \(origin ?? "none")")
            // RFC 6455 §1.3's worked example: this key's accept value.
            #expect(accepted.response.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            let frames = try await TestSupport.offPool { try RawUpgrade.readFrames(accepted.fd, initial: accepted.leftover) }
            close(accepted.fd)
            #expect(frames.last?.opcode == 0x8)  // close, after the text messages
            #expect(frames.dropLast().allSatisfy { $0.opcode == 0x1 })
        }
        // Upgrades elsewhere, or to another protocol, are ordinary requests.
        let nodes = try await RawUpgrade.send(port: server.port, path: "/nodes")
        #expect(nodes.response.status == 200)
        #expect(nodes.response.json?["nodes"] != nil)
        let h2c = try await RawUpgrade.send(port: server.port, path: path, changes: ["Upgrade": "h2c"])
        #expect(h2c.response.status == 200)
        #expect(h2c.response.headers["content-type"] == "text/event-stream")
        // The server still works.
        #expect(try await server.request("GET", "/jobs").status == 200)
    }

    @Test("a client dropping its WebSocket mid-job unsubscribes at once; the job finishes and can still be read")
    func droppedSocket() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        // At least 15 s of 1 ms steps: long enough that, even on a loaded machine, the drops below happen while it
        // runs (5 s was not, under a full parallel test run on 2 cores).
        let id = try await server.submit(writeGraph(steps: 15000))
        let job = try #require(server.queue.job(id))
        // A clean close after three messages.
        let seen = LockedBox<Int?>(nil)
        let closed = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(server.port)/jobs/\(id)/events", logger: EventSocketClient.logger) { inbound, _, _ in
            var count = 0
            for try await _ in inbound.messages(maxSize: 1 << 20) {
                count += 1
                if count == 3 { break }
            }
            seen.withLock { $0 = job.eventSubscribers }
        }
        #expect(seen.withLock { $0 } == 1)  // subscribed while connected
        #expect(closed?.closeCode == .normalClosure)
        try await EventSocketTests.waitForNoSubscribers(job)
        // On a loaded machine (the whole suite in parallel on 2 cores) the job may already have finished; what a
        // drop must never do is fail or cancel it.
        let stillOK = { (state: String?) in state == "running" || state == "done" }
        #expect(stillOK(try await server.request("GET", "/jobs/\(id)").json?["state"]?.stringValue))

        // A connection cut without a close frame.
        let cut = try await RawUpgrade.send(port: server.port, path: "/jobs/\(id)/events")
        #expect(cut.response.status == 101)
        _ = try await TestSupport.offPool { try RawUpgrade.readFrames(cut.fd, initial: cut.leftover, atMost: 2) }
        // A finished job's stream closes on its own, so no subscriber is right only once the job is done. Counted
        // before the state is asked: the other order races with a job finishing in between.
        let subscribers = job.eventSubscribers
        let state = try await server.request("GET", "/jobs/\(id)").json?["state"]?.stringValue
        #expect(subscribers == 1 || state == "done", "\(subscribers) subscribers while the job is \(state ?? "?")")
        close(cut.fd)
        try await EventSocketTests.waitForNoSubscribers(job)
        #expect(stillOK(try await server.request("GET", "/jobs/\(id)").json?["state"]?.stringValue))

        // Neither failed nor cancelled the job.
        let ended = try await server.waitForEnd(id)
        #expect(ended["state"]?.stringValue == "done")
        #expect(try await server.request("GET", "/jobs/\(id)/outputs/out/result.txt").status == 200)
        let late = try await EventSocketClient.read(server, "/jobs/\(id)/events")
        #expect(late.close?.reason == "done")
        #expect(late.messages.count == ended["events"]?.intValue)
    }

    /// Polls until no event stream is subscribed to `job` (10 s at most).
    static func waitForNoSubscribers(_ job: Job, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let deadline = Date().addingTimeInterval(10)
        while job.eventSubscribers > 0 {
            guard Date() < deadline else {
                Issue.record("still \(job.eventSubscribers) subscriber(s) 10 s after the client left", sourceLocation: sourceLocation)
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// Reads an event stream with hummingbird-websocket's client.
enum EventSocketClient {
    struct Read: Sendable {
        var messages: [String]
        var binaryMessages: Int
        var close: WebSocketCloseFrame?
    }

    static let logger: Logger = {
        var logger = Logger(label: "lapse.test.ws")
        logger.logLevel = .critical
        return logger
    }()

    /// Connects to `path`, collects every message until the server closes, and returns them with its close frame.
    static func read(_ server: TestServer, _ path: String, headers: [String: String] = [:]) async throws -> Read {
        var fields = HTTPFields()
        for (name, value) in headers { fields[HTTPField.Name(name)!] = value }
        let collected = LockedBox(Read(messages: [], binaryMessages: 0))
        let close = try await WebSocketClient.connect(url: "ws://127.0.0.1:\(server.port)\(path)",
                                                      configuration: .init(maxFrameSize: 1 << 20, additionalHeaders: fields),
                                                      logger: logger) { inbound, _, _ in
            for try await message in inbound.messages(maxSize: 1 << 20) {
                switch message {
                case .text(let text): collected.withLock { $0.messages.append(text) }
                case .binary: collected.withLock { $0.binaryMessages += 1 }
                }
            }
        }
        var read = collected.withLock { $0 }
        read.close = close
        return read
    }

    /// The `data` of each Server-Sent Event but the final `end` event.
    static func sseData(_ text: String) -> [String] {
        text.components(separatedBy: "\n\n").compactMap { block in
            let lines = block.split(separator: "\n")
            guard !lines.contains("event: end") else { return nil }
            return lines.first { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
        }
    }
}

/// A WebSocket upgrade written byte by byte, for the requests no well-behaved client sends.
enum RawUpgrade {
    /// RFC 6455 §1.3's sample key: 16 bytes in base64.
    static let key = "dGhlIHNhbXBsZSBub25jZQ=="

    struct Answer: @unchecked Sendable {
        var fd: Int32
        var response: HTTPTestResponse
        /// Bytes after the response head (WebSocket frames after a 101).
        var leftover: Data
    }

    /// Sends a well-formed upgrade for `path`, with header values replaced or removed (nil) by `changes` and the
    /// `extra` headers added; reads the response head and, unless it is 101, its body (Content-Length). The caller
    /// closes `fd` after a 101; a refused upgrade's socket is closed here.
    static func send(port: Int, path: String, changes: [String: String?] = [:], extra: [String: String] = [:]) async throws -> Answer {
        var fields: [(String, String?)] = [("Host", "127.0.0.1:\(port)"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                           ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
        for (name, value) in changes {
            if let index = fields.firstIndex(where: { $0.0 == name }) { fields[index].1 = value } else { fields.append((name, value)) }
        }
        var text = "GET \(path) HTTP/1.1\r\n"
        for (name, value) in fields { if let value { text += "\(name): \(value)\r\n" } }
        for (name, value) in extra { text += "\(name): \(value)\r\n" }
        let head = Data((text + "\r\n").utf8)
        return try await TestSupport.offPool {
            let fd = try HTTPTestClient.connect(port: port)
            do {
                try HTTPTestClient.send(fd, head)
                var received = Data()
                var split: Range<Data.Index>?
                while split == nil {
                    guard try receive(fd, into: &received) else { break }
                    split = received.range(of: Data("\r\n\r\n".utf8))
                }
                guard let split else { throw HTTPTestError("no response head: \(String(decoding: received, as: UTF8.self))") }
                var response = try HTTPTestClient.parse(Data(received[..<split.upperBound]))
                let rest = Data(received[split.upperBound...])
                if response.status == 101 { return Answer(fd: fd, response: response, leftover: rest) }
                defer { close(fd) }
                var body = rest
                let length = Int(response.headers["content-length"] ?? "") ?? 0
                while body.count < length, try receive(fd, into: &body) {}
                response.body = body
                return Answer(fd: -1, response: response, leftover: Data())
            } catch {
                close(fd)
                throw error
            }
        }
    }

    /// Appends what the socket has to `data`; false at the end of the stream.
    static func receive(_ fd: Int32, into data: inout Data) throws -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw HTTPTestError("recv: \(String(cString: strerror(errno)))") }
            data.append(contentsOf: buffer[..<n])
            return n > 0
        }
    }

    /// Reads server frames (unmasked) until a close frame, the end of the stream, or `atMost` frames.
    static func readFrames(_ fd: Int32, initial: Data, atMost: Int = .max) throws -> [(opcode: UInt8, payload: Data)] {
        var data = initial
        var frames: [(opcode: UInt8, payload: Data)] = []
        var offset = 0
        while frames.count < atMost {
            // Header: FIN/opcode, then a 7-bit length or 126 (16-bit) or 127 (64-bit); servers never mask.
            func available(_ n: Int) throws -> Bool {
                while data.count - offset < n { guard try receive(fd, into: &data) else { return false } }
                return true
            }
            guard try available(2) else { break }
            let bytes = [UInt8](data[(data.startIndex + offset)...])
            let opcode = bytes[0] & 0x0f
            var length = Int(bytes[1] & 0x7f), header = 2
            if length == 126 {
                guard try available(4) else { break }
                let b = [UInt8](data[(data.startIndex + offset)...])
                length = Int(b[2]) << 8 | Int(b[3])
                header = 4
            } else if length == 127 {
                guard try available(10) else { break }
                let b = [UInt8](data[(data.startIndex + offset)...])
                length = (2..<10).reduce(0) { $0 << 8 | Int(b[$1]) }
                header = 10
            }
            guard try available(header + length) else { break }
            let start = data.startIndex + offset + header
            frames.append((opcode, Data(data[start..<(start + length)])))
            offset += header + length
            if opcode == 0x8 { break }
        }
        return frames
    }
}

/// A value shared with a client's handler closure.
final class LockedBox<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<T: Sendable>(_ body: (inout Value) -> T) -> T { mutex.withLock { body(&$0) } }
}
