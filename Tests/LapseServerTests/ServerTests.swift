import Foundation
import LapseGraph
import LapseServer
import LapseTestSupport
import Testing

/// A graph writing `value` twice (lines "0 VALUE", "1 VALUE") through `TestWriteFile` after `steps` slow steps.
func writeGraph(path: String = "out/result.txt", value: Int = 7, steps: Int = 3, group: String = "serve") -> String {
    """
    {"version": 1, "nodes": {
      "slow": {"type": "TestSlow", "params": {"steps": \(steps), "in": \(value), "group": "\(group)"}},
      "save": {"type": "TestWriteFile", "inputs": {"value": "slow"}, "params": {"path": "\(path)", "lines": 2, "group": "\(group)"}}
    }}
    """
}

@Suite("lapse serve: endpoints")
struct ServerEndpointTests {
    @Test("POST /jobs runs a graph; GET /jobs/{id} reports per-node progress; the output file is served")
    func submitRunAndFetch() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let id = try await server.submit(writeGraph(value: 42))
        let job = try await server.waitForEnd(id)
        #expect(job["state"]?.stringValue == "done")
        let nodes = job["nodes"]?.arrayValue ?? []
        #expect(nodes.map { $0["id"]?.stringValue } == ["slow", "save"])
        #expect(nodes.allSatisfy { $0["state"]?.stringValue == "done" })
        #expect(nodes.first?["step"]?.intValue == 3 && nodes.first?["total"]?.intValue == 3)
        let outputs = job["outputs"]?.arrayValue ?? []
        #expect(outputs.map { $0["name"]?.stringValue } == ["out/result.txt"])
        // The relative output path landed in the job's own folder.
        let onDisk = try String(contentsOf: server.workspace.appendingPathComponent("jobs/\(id)/out/result.txt"), encoding: .utf8)
        #expect(onDisk == "0 42\n1 42\n")
        let file = try await server.request("GET", "/jobs/\(id)/outputs/out/result.txt")
        #expect(file.status == 200)
        #expect(file.text == onDisk)
        // By file name too, when unique.
        #expect(try await server.request("GET", "/jobs/\(id)/outputs/result.txt").text == onDisk)
        // Only the job's own files.
        try Data("secret".utf8).write(to: server.workspace.appendingPathComponent("secret.txt"))
        #expect(try await server.request("GET", "/jobs/\(id)/outputs/secret.txt").status == 404)
        #expect(try await server.request("GET", "/jobs/\(id)/outputs/..%2F..%2Fsecret.txt").status == 404)
        #expect(try await server.request("GET", "/jobs/\(id)/outputs/../../secret.txt").status == 404)
    }

    @Test("GET /jobs lists jobs; GET /jobs/{unknown} is a JSON 404")
    func listAndUnknown() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let first = try await server.submit(writeGraph())
        let second = try await server.submit(writeGraph())
        let list = try await server.request("GET", "/jobs")
        #expect(list.status == 200)
        let ids = list.json?["jobs"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
        #expect(ids == [first, second])
        let missing = try await server.request("GET", "/jobs/0123")
        #expect(missing.status == 404)
        #expect(missing.json?["error"]?["message"]?.stringValue?.contains("no job") == true)
        let noRoute = try await server.request("GET", "/nothing-here")
        #expect(noRoute.status == 404)
        #expect(noRoute.json?["error"] != nil)
        _ = try await server.waitForEnd(second)
    }

    @Test("GET /nodes answers what lapse nodes --json prints")
    func nodes() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let response = try await server.request("GET", "/nodes")
        #expect(response.status == 200)
        #expect(response.text == SchemaJSON.render(SyntheticNodes.registry().all, single: false) + "\n")
        let types = response.json?["nodes"]?.arrayValue?.compactMap { $0["type"]?.stringValue } ?? []
        #expect(types.contains("TestSlow") && types.contains("TestWriteFile"))
    }

    @Test("POST /validate: valid graphs, and every problem of an invalid one as lapse validate words it")
    func validate() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let good = try await server.request("POST", "/validate", body: writeGraph())
        #expect(good.status == 200)
        #expect(good.json?["valid"]?.boolValue == true)
        #expect(good.json?["text"]?.stringValue == "graph: valid (2 nodes, 2 to run)")

        let bad = """
        {"version": 1, "nodes": {
          "slow": {"type": "TestSlo", "params": {"steps": 3}},
          "save": {"type": "TestWriteFile", "inputs": {"value": "slow"}, "params": {"path": "x.txt", "lines": "two"}}
        }}
        """
        let response = try await server.request("POST", "/validate", body: bad)
        #expect(response.status == 422)
        #expect(response.json?["valid"]?.boolValue == false)
        let texts = response.json?["errors"]?.arrayValue?.compactMap { $0["text"]?.stringValue } ?? []
        // The same lines GraphValidator gives `lapse validate`.
        let expected = GraphValidator(registry: SyntheticNodes.registry()).validate(data: Data(bad.utf8), name: "graph", overrideTexts: [])
        guard case .failure(let failure) = expected else { Issue.record("expected failure"); return }
        #expect(texts == failure.diagnostics.map(\.description))
        #expect(texts.contains { $0.contains("unknown node type \"TestSlo\"") })

        // Overrides as lapse run --set takes them, in the body and in the query.
        let overridden = try await server.request("POST", "/validate", body: #"{"graph": \#(writeGraph()), "set": ["save.lines=\"x\""]}"#)
        #expect(overridden.status == 422)
        #expect(overridden.json?["errors"]?.arrayValue?.first?["path"]?.stringValue == "nodes.save.params.lines")
        let malformedSet = try await server.request("POST", "/validate?set=nodot", body: writeGraph())
        #expect(malformedSet.json?["errors"]?.arrayValue?.first?["text"]?.stringValue == "error: --set nodot: expected ID.PARAM=VALUE")
    }

    @Test("POST /jobs with set overrides applies them")
    func overridesApply() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let list = try await server.submit(#"{"graph": \#(writeGraph(path: "a.txt")), "set": ["slow.in=5", "save.path=b.txt"]}"#)
        let object = try await server.submit(#"{"graph": \#(writeGraph(path: "a.txt")), "set": {"slow.in": 4}}"#)
        let listed = try await server.waitForEnd(list)
        #expect(listed["outputs"]?.arrayValue?.compactMap { $0["name"]?.stringValue } == ["b.txt"])
        #expect(try await server.request("GET", "/jobs/\(list)/outputs/b.txt").text == "0 5\n1 5\n")
        _ = try await server.waitForEnd(object)
        #expect(try await server.request("GET", "/jobs/\(object)/outputs/a.txt").text == "0 4\n1 4\n")
    }

    @Test("GET /jobs/{id}/events streams the --events json lines over SSE, replayed for late clients")
    func events() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let id = try await server.submit(writeGraph(steps: 4))
        let stream = try await server.request("GET", "/jobs/\(id)/events")  // reads until the job ends
        #expect(stream.status == 200)
        #expect(stream.headers["content-type"] == "text/event-stream")
        let data = stream.text.components(separatedBy: "\n").filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
        let events = data.compactMap { try? JSONParser.parse($0) }
        #expect(events.first?["event"]?.stringValue == "nodeStarted")
        #expect(events.contains { $0["event"]?.stringValue == "progress" && $0["node"]?.stringValue == "slow" })
        #expect(events.filter { $0["event"]?.stringValue == "nodeFinished" }.count == 2)
        // The run's per-node summary closes the node events, as with `lapse run --events json`.
        let summary = events.last { $0["event"] != nil }  // the last data line is the end event's state
        #expect(summary?["event"]?.stringValue == "summary")
        #expect(summary?["nodes"]?.arrayValue?.count == 2)
        #expect(stream.text.contains("event: end\ndata: {\"state\":\"done\"}"))
        // A client arriving after the end gets the same events, as JSON lines with ?format=jsonl.
        let lines = try await server.request("GET", "/jobs/\(id)/events?format=jsonl")
        #expect(lines.text.split(separator: "\n").count == data.count - 1)  // minus the end event's data line
    }

    @Test("a failing node: state failed, the error names the node as lapse run does")
    func failure() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let id = try await server.submit("""
        {"version": 1, "nodes": {"bad": {"type": "TestFail"}, "save": {"type": "TestWriteFile", "inputs": {"value": "bad"}, "params": {"path": "x.txt"}}}}
        """)
        let job = try await server.waitForEnd(id)
        #expect(job["state"]?.stringValue == "failed")
        #expect(job["error"]?["node"]?.stringValue == "bad")
        #expect(job["error"]?["text"]?.stringValue == "error: node \"bad\" (TestFail): synthetic failure")
        #expect(job["nodes"]?.arrayValue?.first?["state"]?.stringValue == "failed")
    }
}

@Suite("lapse serve: security")
struct ServerSecurityTests {
    @Test("a token is checked on every endpoint: missing or wrong is 401 with a JSON body")
    func token() async throws {
        let server = try await TestServer.start { $0.token = "s3cret-token" }
        defer { Task { await server.stop() } }
        let id = try await server.submit(writeGraph())
        for (method, path) in [("GET", "/"), ("GET", "/nodes"), ("GET", "/jobs"), ("GET", "/jobs/\(id)"), ("POST", "/jobs"),
                               ("POST", "/validate"), ("DELETE", "/jobs/\(id)"), ("GET", "/jobs/\(id)/events"),
                               ("GET", "/jobs/\(id)/outputs/out/result.txt"), ("GET", "/graphs"), ("GET", "/missing")] {
            let none = try await server.request(method, path, body: method == "POST" ? writeGraph() : nil, authorized: false)
            #expect(none.status == 401, "\(method) \(path) without a token")
            #expect(none.json?["error"]?["message"]?.stringValue != nil)
            #expect(none.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
            let wrong = try await server.request(method, path, body: method == "POST" ? writeGraph() : nil,
                                           headers: ["Authorization": "Bearer s3cret-tokeN"], authorized: false)
            #expect(wrong.status == 401, "\(method) \(path) with a wrong token")
            let short = try await server.request(method, path, headers: ["Authorization": "Bearer s3cret"], authorized: false)
            #expect(short.status == 401)
        }
        #expect(try await server.request("GET", "/nodes").status == 200)
        #expect(try await server.request("GET", "/nodes?token=s3cret-token", authorized: false).status == 200)
        let job = try await server.waitForEnd(id)
        #expect(job["state"]?.stringValue == "done")
    }

    @Test("no token on a non-loopback address: refused before listening")
    func tokenRequiredOffLocalhost() throws {
        var options = ServerOptions()
        options.host = "0.0.0.0"
        #expect(throws: ServerError.self) { try options.check() }
        options.token = "t"
        try options.check()
        options.host = "127.0.0.1"
        options.token = nil
        try options.check()
        #expect(ServerOptions.isLoopback("::1") && ServerOptions.isLoopback("localhost") && !ServerOptions.isLoopback("192.168.1.2"))
    }

    @Test("a path leaving the workspace through .. is refused, naming the node, parameter and path")
    func dotDotEscape() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let outside = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: outside) }
        try Data("x".utf8).write(to: outside.appendingPathComponent("in.bin"))
        let relative = "../\(outside.lastPathComponent)/in.bin"
        // Workspaces and the outside folder are siblings in the temporary folder.
        let read = try await server.request("POST", "/jobs", body: """
        {"version": 1, "nodes": {"load": {"type": "TestLoad", "params": {"path": "\(relative)"}},
          "save": {"type": "TestWriteFile", "inputs": {"value": "load"}, "params": {"path": "ok.txt"}}}}
        """)
        #expect(read.status == 422)
        let error = read.json?["errors"]?.arrayValue?.first
        #expect(error?["node"]?.stringValue == "load")
        #expect(error?["path"]?.stringValue == "nodes.load.params.path")
        #expect(error?["message"]?.stringValue?.contains(relative) == true)
        #expect(error?["message"]?.stringValue?.contains("outside the workspace") == true)

        // Relative outputs resolve in WORKSPACE/jobs/ID/, so three levels up leave the workspace.
        for path in ["../../../escape.txt", "/tmp/escape-\(UUID().uuidString).txt", "a/../../../../escape.txt"] {
            let write = try await server.request("POST", "/jobs", body: writeGraph(path: path))
            #expect(write.status == 422, "output \(path)")
            #expect(write.json?["errors"]?.arrayValue?.first?["path"]?.stringValue == "nodes.save.params.path")
        }
        // Absolute paths inside the workspace are fine.
        let inside = server.workspace.appendingPathComponent("abs/out.txt").path
        let id = try await server.submit(writeGraph(path: inside))
        let job = try await server.waitForEnd(id)
        #expect(job["outputs"]?.arrayValue?.compactMap { $0["name"]?.stringValue } == ["abs/out.txt"])
    }

    @Test("a path leaving the workspace through a symbolic link is refused (reading and writing)")
    func symlinkEscape() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let outside = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: outside) }
        try Data("x".utf8).write(to: outside.appendingPathComponent("in.bin"))
        let fm = FileManager.default
        try fm.createSymbolicLink(atPath: server.workspace.appendingPathComponent("link-dir").path, withDestinationPath: outside.path)
        try fm.createSymbolicLink(atPath: server.workspace.appendingPathComponent("link-file.bin").path,
                                  withDestinationPath: outside.appendingPathComponent("in.bin").path)
        try fm.createSymbolicLink(atPath: server.workspace.appendingPathComponent("dangling.txt").path,
                                  withDestinationPath: outside.appendingPathComponent("new.txt").path)
        for input in ["link-dir/in.bin", "link-file.bin"] {
            let response = try await server.request("POST", "/jobs", body: """
            {"version": 1, "nodes": {"load": {"type": "TestLoad", "params": {"path": "\(input)"}},
              "save": {"type": "TestWriteFile", "inputs": {"value": "load"}, "params": {"path": "ok.txt"}}}}
            """)
            #expect(response.status == 422, "input \(input)")
            let message = response.json?["errors"]?.arrayValue?.first?["message"]?.stringValue ?? ""
            #expect(message.contains(input) && message.contains("resolves to \(Workspace.canonical(outside.path))"), "\(message)")
        }
        for output in ["\(server.workspace.path)/link-dir/out.txt", "\(server.workspace.path)/dangling.txt"] {
            let response = try await server.request("POST", "/jobs", body: writeGraph(path: output))
            #expect(response.status == 422, "output \(output)")
        }
        #expect(!fm.fileExists(atPath: outside.appendingPathComponent("new.txt").path))
        #expect(!fm.fileExists(atPath: outside.appendingPathComponent("out.txt").path))
        // A link that stays inside the workspace is fine.
        try Data("abc".utf8).write(to: server.workspace.appendingPathComponent("real.bin"))
        try fm.createSymbolicLink(atPath: server.workspace.appendingPathComponent("inner.bin").path, withDestinationPath: "real.bin")
        let id = try await server.submit("""
        {"version": 1, "nodes": {"load": {"type": "TestLoad", "params": {"path": "inner.bin"}},
          "save": {"type": "TestWriteFile", "inputs": {"value": "load"}, "params": {"path": "size.txt", "lines": 1}}}}
        """)
        let job = try await server.waitForEnd(id)
        #expect(job["state"]?.stringValue == "done")
        #expect(try await server.request("GET", "/jobs/\(id)/outputs/size.txt").text == "0 3\n")
    }

    @Test("an oversized body is 413 with a JSON error; malformed requests are 4xx with a JSON error")
    func oversizedAndMalformed() async throws {
        let server = try await TestServer.start { $0.maxBodyBytes = 4096 }
        defer { Task { await server.stop() } }
        let big = #"{"version": 1, "description": ""# + String(repeating: "x", count: 10_000) + #"", "nodes": {}}"#
        let oversized = try await server.request("POST", "/jobs", body: big)
        #expect(oversized.status == 413)
        #expect(oversized.json?["error"]?["message"]?.stringValue?.contains("larger than 4096") == true)
        let cases: [(String, String, String?, Int)] = [
            ("POST", "/jobs", "{\"version\": 1, \"nodes\": {", 400),
            ("POST", "/jobs", "not json at all", 400),
            ("POST", "/jobs", "", 400),
            ("POST", "/jobs", "[1, 2, 3]", 422),
            ("POST", "/jobs", #"{"graph": 5}"#, 422),
            ("POST", "/jobs", #"{"graph": {"version": 1, "nodes": {}}, "set": 5}"#, 400),
            ("POST", "/jobs", #"{"graph": {"version": 1, "nodes": {}}, "oops": 1}"#, 400),
            ("POST", "/validate", String(repeating: "[", count: 3000), 400),
            ("DELETE", "/jobs/nope", nil, 404),
            ("GET", "/jobs/x/outputs/y", nil, 404),
            ("PUT", "/jobs", "{}", 404),
        ]
        for (method, path, body, status) in cases {
            let response = try await server.request(method, path, body: body)
            #expect(response.status == status, "\(method) \(path) \(body?.prefix(40) ?? ""): \(response.text.prefix(200))")
            #expect(response.json?["error"]?["message"]?.stringValue != nil, "\(method) \(path): \(response.text.prefix(200))")
        }
        // The server still works.
        let id = try await server.submit(writeGraph())
        #expect(try await server.waitForEnd(id)["state"]?.stringValue == "done")
    }
}

@Suite("lapse serve: queue")
struct ServerQueueTests {
    @Test("DELETE cancels a running job at its next step and a queued one at once")
    func cancel() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let running = try await server.submit(writeGraph(path: "slow.txt", steps: 200_000))
        let queued = try await server.submit(writeGraph(path: "never.txt"))
        // Wait until the slow node is really running.
        let deadline = Date().addingTimeInterval(30)
        while true {
            let job = try await server.request("GET", "/jobs/\(running)").json
            if let step = job?["nodes"]?.arrayValue?.first?["step"]?.intValue, step > 5 { break }
            #expect(Date() < deadline)
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(try await server.request("GET", "/jobs/\(queued)").json?["state"]?.stringValue == "queued")
        let cancelQueued = try await server.request("DELETE", "/jobs/\(queued)")
        #expect(cancelQueued.status == 202)
        #expect(cancelQueued.json?["state"]?.stringValue == "cancelled")
        let cancelRunning = try await server.request("DELETE", "/jobs/\(running)")
        #expect(cancelRunning.status == 202)
        let job = try await server.waitForEnd(running, timeout: 30)
        #expect(job["state"]?.stringValue == "cancelled")
        #expect(job["outputs"]?.arrayValue?.isEmpty == true)
        let steps = job["nodes"]?.arrayValue?.first?["step"]?.intValue ?? 0
        #expect(steps < 200_000)
        #expect(!FileManager.default.fileExists(atPath: server.workspace.appendingPathComponent("jobs/\(running)/slow.txt").path))
        let again = try await server.request("DELETE", "/jobs/\(running)")
        #expect(again.status == 409)
        // The events end with the cancellation, as lapse run --events json does.
        let events = try await server.request("GET", "/jobs/\(running)/events?format=jsonl").text
        #expect(events.split(separator: "\n").last?.contains(#""event":"error","message":"cancelled""#) == true)
    }

    @Test("50 queued jobs all complete, in order, one at a time")
    func fiftyJobs() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        var ids: [String] = []
        for n in 0..<50 { ids.append(try await server.submit(writeGraph(path: "out.txt", value: n, steps: 2))) }
        var finishedAt: [Date] = []
        var startedAt: [Date] = []
        for (n, id) in ids.enumerated() {
            let job = try await server.waitForEnd(id)
            #expect(job["state"]?.stringValue == "done", "job \(n)")
            #expect(try await server.request("GET", "/jobs/\(id)/outputs/out.txt").text == "0 \(n)\n1 \(n)\n")
            let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
            startedAt.append(try style.parse(job["started"]?.stringValue ?? ""))
            finishedAt.append(try style.parse(job["finished"]?.stringValue ?? ""))
        }
        // One at a time: each job started after the previous one finished.
        for n in 1..<50 { #expect(startedAt[n] >= finishedAt[n - 1]) }
        #expect(try await server.request("GET", "/jobs").json?["jobs"]?.arrayValue?.count == 50)
    }

    @Test("a full queue answers 503 with a JSON error; cancelling makes room")
    func queueFull() async throws {
        let server = try await TestServer.start { $0.maxQueued = 2 }
        defer { Task { await server.stop() } }
        let running = try await server.submit(writeGraph(path: "a.txt", steps: 200_000))
        while try await server.request("GET", "/jobs/\(running)").json?["state"]?.stringValue != "running" {
            try await Task.sleep(for: .milliseconds(10))
        }
        let waiting = try await server.submit(writeGraph(path: "b.txt"))
        _ = try await server.submit(writeGraph(path: "c.txt"))
        let refused = try await server.request("POST", "/jobs", body: writeGraph(path: "d.txt"))
        #expect(refused.status == 503)
        #expect(refused.json?["error"]?["message"]?.stringValue?.contains("queue is full") == true)
        #expect(try await server.request("DELETE", "/jobs/\(waiting)").status == 202)
        _ = try await server.submit(writeGraph(path: "d.txt"))
        #expect(try await server.request("DELETE", "/jobs/\(running)").status == 202)
    }

    @Test("--max-jobs 2 runs two jobs at once")
    func twoAtOnce() async throws {
        let server = try await TestServer.start(maxJobs: 2)
        defer { Task { await server.stop() } }
        // Each job's barrier passes only if the other job is running at the same time.
        let graph = { (path: String) in """
        {"version": 1, "nodes": {"b": {"type": "TestBarrier", "params": {"group": "serve-two", "timeout_ms": 20000}},
          "save": {"type": "TestWriteFile", "inputs": {"value": "b"}, "params": {"path": "\(path)"}}}}
        """ }
        let a = try await server.submit(graph("a.txt")), b = try await server.submit(graph("b.txt"))
        #expect(try await server.waitForEnd(a)["state"]?.stringValue == "done")
        #expect(try await server.waitForEnd(b)["state"]?.stringValue == "done")
    }

    @Test("a client dropping its event stream does not hurt the job")
    func droppedStream() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let id = try await server.submit(writeGraph(steps: 1500))
        let port = server.port
        for _ in 0..<3 {
            let seen = try await TestSupport.offPool { () throws -> String in
                let fd = try HTTPTestClient.connect(port: port)
                defer { close(fd) }  // gone half-way through the stream
                try HTTPTestClient.send(fd, HTTPTestClient.head(method: "GET", path: "/jobs/\(id)/events", headers: [:], bodyLength: nil))
                var buffer = [UInt8](repeating: 0, count: 4096)
                var seen = ""
                while !seen.contains("data: ") {
                    let n = recv(fd, &buffer, buffer.count, 0)
                    if n <= 0 { break }
                    seen += String(decoding: buffer[..<n], as: UTF8.self)
                }
                return seen
            }
            #expect(seen.contains("text/event-stream"))
        }
        // Neither failed nor cancelled by the dropped streams (how far it got meanwhile depends on the machine's load).
        let state = try await server.request("GET", "/jobs/\(id)").json?["state"]?.stringValue
        #expect(["queued", "running", "done"].contains(state ?? "none"), "state \(state ?? "none") after the streams dropped")
        let job = try await server.waitForEnd(id)
        #expect(job["state"]?.stringValue == "done")
        #expect(try await server.request("GET", "/jobs/\(id)/outputs/out/result.txt").status == 200)
        // The server still answers.
        #expect(try await server.request("GET", "/jobs").status == 200)
    }
}

@Suite("Workspace")
struct WorkspaceTests {
    @Test("read-only model folders may be read, never written; missing folders and .. resolve as the kernel will")
    func readOnlyFolders() throws {
        let root = try TestSupport.makeTemporaryDirectory(), models = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: models) }
        let space = try Workspace(root: root, readOnlyFolders: [models])
        let job = space.jobFolder("j")
        let model = Workspace.canonical(models.path) + "/m.bin"
        #expect(try space.resolve(model, isOutput: false, jobFolder: job).get() == model)
        #expect(throws: Workspace.Refusal.self) { try space.resolve(model, isOutput: true, jobFolder: job).get() }
        #expect(try space.resolve("a/b/../c.png", isOutput: true, jobFolder: job).get() == space.root.path + "/jobs/j/a/c.png")
        #expect(try space.resolve("frames/f_%05d.png", isOutput: false, jobFolder: job).get() == space.root.path + "/frames/f_%05d.png")
        #expect(throws: Workspace.Refusal.self) { try space.resolve("x\u{0}.png", isOutput: false, jobFolder: job).get() }
        #expect(throws: ServerError.self) { try Workspace(root: root.appendingPathComponent("missing")) }
    }
}
