import Foundation
import LapseCLI
import LapseGraph
import LapseServer
import LapseTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A `LapseHTTPServer` on an ephemeral loopback port, in this process, over a temporary workspace.
final class TestServer: @unchecked Sendable {
    let port: Int
    let workspace: URL
    let token: String?
    let queue: JobQueue
    private let shutdown = CancellationToken()
    private let task: Task<Void, any Error>

    private init(port: Int, workspace: URL, token: String?, queue: JobQueue, task: Task<Void, any Error>) {
        self.port = port
        self.workspace = workspace
        self.token = token
        self.queue = queue
        self.task = task
    }

    /// Starts a server; `configure` adjusts options (token, body cap, …) before it starts.
    static func start(registry: NodeRegistry = SyntheticNodes.registry(), workspace: URL? = nil, modelsFolders: [URL] = [],
                      maxJobs: Int = 1, configure: (inout ServerOptions) -> Void = { _ in }) async throws -> TestServer {
        let root = try workspace ?? TestSupport.makeTemporaryDirectory()
        var options = ServerOptions()
        options.port = 0
        options.maxJobs = maxJobs
        options.modelMemoryBytes = nil  // the process-wide model cache is left to the test that measures it
        configure(&options)
        let queue = JobQueue(registry: registry, workspace: try Workspace(root: root, readOnlyFolders: modelsFolders),
                             maxRunning: options.maxJobs,
                             maxQueued: options.maxQueued)
        let server = try LapseHTTPServer(options: options, queue: queue)
        let shutdown = CancellationToken()
        let port = PortBox()
        let task = Task { try await server.run(shutdown: shutdown) { port.set($0) } }
        // A hang guard, not a timing: on 2 cores the suite's other tests can hold the pool's threads for a while.
        let deadline = Date().addingTimeInterval(120)
        while port.value == nil {
            guard Date() < deadline else { throw HTTPTestError("the server did not start within 120 s") }
            try await Task.sleep(for: .milliseconds(20))
        }
        let started = TestServer(port: port.value!, workspace: URL(fileURLWithPath: queue.workspace.root.path),
                                 token: options.token, queue: queue, task: task)
        started.shutdownToken = shutdown
        return started
    }

    private var shutdownToken: CancellationToken?

    /// Stops the server (cancelling jobs) and removes the workspace.
    func stop(removeWorkspace: Bool = true) async {
        shutdownToken?.cancel()
        _ = try? await task.value
        if removeWorkspace { try? FileManager.default.removeItem(at: workspace) }
    }

    /// A request with the server's token (unless `authorized` is false).
    func request(_ method: String, _ path: String, body: String? = nil, headers: [String: String] = [:],
                 authorized: Bool = true) async throws -> HTTPTestResponse {
        var all = headers
        if authorized, let token { all["Authorization"] = "Bearer \(token)" }
        return try await HTTPTestClient.request(port: port, method: method, path: path, headers: all,
                                                body: body.map { Data($0.utf8) })
    }

    /// Submits a graph and returns the job id, failing the test on anything but 201.
    func submit(_ graph: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> String {
        let response = try await request("POST", "/jobs", body: graph)
        #expect(response.status == 201, "POST /jobs: \(response.text)", sourceLocation: sourceLocation)
        guard let id = response.json?["id"]?.stringValue else { throw HTTPTestError("no id in \(response.text)") }
        return id
    }

    /// Polls `GET /jobs/{id}` until the job has ended; returns its last description.
    func waitForEnd(_ id: String, timeout: TimeInterval = 120) async throws -> JSONValue {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let response = try await request("GET", "/jobs/\(id)")
            if let json = response.json, let state = json["state"]?.stringValue, ["done", "failed", "cancelled"].contains(state) {
                return json
            }
            guard Date() < deadline else { throw HTTPTestError("job \(id) did not end within \(timeout) s: \(response.text)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

private final class PortBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Int?
    func set(_ port: Int) { lock.lock(); stored = port; lock.unlock() }
    var value: Int? { lock.lock(); defer { lock.unlock() }; return stored }
}

struct HTTPTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A response as read off the socket.
struct HTTPTestResponse {
    var status: Int
    var headers: [String: String]
    var body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: JSONValue? { try? JSONParser.parse(body) }
}

extension JSONValue {
    var stringValue: String? { if case .string(let s) = kind { s } else { nil } }
    var intValue: Int? { if case .number(_, let i?) = kind { i } else { nil } }
    var boolValue: Bool? { if case .bool(let b) = kind { b } else { nil } }
    var arrayValue: [JSONValue]? { if case .array(let a) = kind { a } else { nil } }
}

/// A minimal HTTP/1.1 client over a POSIX socket, so tests control exactly what is sent (oversized and malformed
/// bodies) and can drop a connection half-way (an event stream).
enum HTTPTestClient {
    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HTTPTestError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard status == 0 else {
            close(fd)
            throw HTTPTestError("connect to port \(port): \(String(cString: strerror(errno)))")
        }
        var timeout = timeval(tv_sec: 120, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func send(_ fd: Int32, _ data: Data) throws {
        var offset = 0
        while offset < data.count {
            let n = data.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, data.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw HTTPTestError("send: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
    }

    static func head(method: String, path: String, headers: [String: String], bodyLength: Int?) -> Data {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if let bodyLength { text += "Content-Length: \(bodyLength)\r\n" }
        return Data((text + "\r\n").utf8)
    }

    /// Sends one request and reads the whole response (the server closes the connection after it).
    static func request(port: Int, method: String, path: String, headers: [String: String] = [:], body: Data? = nil) async throws -> HTTPTestResponse {
        try await TestSupport.offPool { try requestBlocking(port: port, method: method, path: path, headers: headers, body: body) }
    }

    static func requestBlocking(port: Int, method: String, path: String, headers: [String: String], body: Data?) throws -> HTTPTestResponse {
        let fd = try connect(port: port)
        defer { close(fd) }
        try send(fd, head(method: method, path: path, headers: headers, bodyLength: body?.count ?? (method == "GET" ? nil : 0)))
        // A server may answer (413) before reading a large body and close; what it sent is still read.
        if let body { try? send(fd, body) }
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            received.append(contentsOf: buffer[..<n])
        }
        return try parse(received)
    }

    static func parse(_ data: Data) throws -> HTTPTestResponse {
        guard let split = data.range(of: Data("\r\n\r\n".utf8)) else {
            throw HTTPTestError("no complete response head in \(data.count) bytes: \(String(decoding: data.prefix(200), as: UTF8.self))")
        }
        let lines = String(decoding: data[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw HTTPTestError("bad status line \(lines[0])") }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(data[split.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" { body = try dechunk(body) }
        return HTTPTestResponse(status: status, headers: headers, body: body)
    }

    static func dechunk(_ data: Data) throws -> Data {
        var result = Data()
        var index = data.startIndex
        while index < data.endIndex {
            guard let lineEnd = data[index...].range(of: Data("\r\n".utf8)) else { break }
            let sizeText = String(decoding: data[index..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";")[0]
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else {
                throw HTTPTestError("bad chunk size \(sizeText)")
            }
            if size == 0 { break }
            let start = lineEnd.upperBound
            guard data.endIndex >= start + size else { break }
            result.append(data[start..<(start + size)])
            index = start + size + 2
        }
        return result
    }
}

extension TestServer {
    /// The port an in-process `lapse serve --port 0` printed to `console` (its "http://127.0.0.1:PORT" line), waited
    /// for up to 120 s (a hang guard, as in `start`).
    static func listeningPort(printedTo console: CapturedConsole) async throws -> Int {
        let deadline = Date().addingTimeInterval(120)
        var port: Int?
        while port == nil, Date() < deadline {
            if let range = console.standardOutput.range(of: #"http://127\.0\.0\.1:[0-9]+"#, options: .regularExpression) {
                port = Int(console.standardOutput[range].split(separator: ":").last!)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try #require(port, "no listening line: \(console.standardOutput) \(console.standardError)")
    }
}

/// The exit code of `LapseCLI.run` on a detached thread, once it has returned.
final class ExitBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Int32?
    func set(_ value: Int32) { lock.lock(); stored = value; lock.unlock() }
    var value: Int32? { lock.lock(); defer { lock.unlock() }; return stored }
}
