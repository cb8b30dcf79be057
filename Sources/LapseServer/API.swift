import Foundation
import Hummingbird
import LapseGraph

/// The endpoint handlers; each returns a response or throws an `APIError`.
struct API: Sendable {
    let queue: JobQueue
    let maxBodyBytes: Int

    var workspace: Workspace { queue.workspace }
    var registry: NodeRegistry { queue.registry }

    // MARK: - Node types and ready graphs

    func nodes() -> Response {
        let text = SchemaJSON.render(registry.all, single: false) + "\n"
        return Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
                        body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// The ready graphs in the workspace's `graphs/` folder (for the web page's picker).
    func graphs() throws -> Response {
        let folder = workspace.root.appendingPathComponent("graphs").path
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
            .filter { $0.hasSuffix(".json") && !$0.hasPrefix(".") }.sorted()
        return JSONResponse.make(.obj([("graphs", .arr(names.map(JSONValue.str)))]))
    }

    /// One ready graph's text, as stored.
    func graph(named name: String) throws -> Response {
        guard name.hasSuffix(".json"), !name.contains("/"), !name.hasPrefix("."), !name.utf8.contains(0) else {
            throw APIError(.badRequest, "a graph name is a .json file name in the workspace's graphs/ folder")
        }
        let path = workspace.root.appendingPathComponent("graphs").appendingPathComponent(name).path
        guard let resolved = Workspace.realPath(path), Workspace.isInside(resolved, workspace.root.path) else {
            throw APIError(.notFound, "no graph \"\(name)\" in \(workspace.root.path)/graphs")
        }
        let data: Data
        do {
            let size = try InputFile.check(resolved)
            guard size <= maxBodyBytes else { throw APIError(.contentTooLarge, "graph \"\(name)\" is larger than \(maxBodyBytes) bytes") }
            data = try InputFile.read(resolved)
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError(.notFound, error.localizedDescription)
        }
        return Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    // MARK: - Validation and submission

    /// A request body: a graph, or `{"graph": GRAPH, "set": [...]}`, plus `?set=` query overrides.
    struct Submission {
        var graph: JSONValue
        var overrides: [ParamOverride]
        var problems: [Diagnostic]
    }

    /// Reads and parses the body (size-capped) and its overrides.
    func submission(_ request: Request) async throws -> Submission {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: maxBodyBytes)
        } catch {
            throw APIError(.contentTooLarge, "the request body is larger than \(maxBodyBytes) bytes (lapse serve --max-body-bytes)")
        }
        guard buffer.readableBytes > 0 else {
            throw APIError(.badRequest, "the request body is empty; send a graph (JSON) or {\"graph\": …, \"set\": […]}")
        }
        let json: JSONValue
        do {
            json = try JSONParser.parse(Data(buffer.readableBytesView))
        } catch {
            throw APIError(.badRequest, "the body is not valid JSON: \(error.message) (line \(error.location.line), column \(error.location.column))",
                           extra: [("line", .int(error.location.line)), ("column", .int(error.location.column))])
        }
        var texts = request.uri.queryParameters.getAll("set")
        var overrides: [ParamOverride] = []
        var graph = json
        if case .object(let members) = json.kind, let wrapped = json["graph"] {
            for (key, _) in members where key != "graph" && key != "set" {
                throw APIError(.badRequest, "unknown key \"\(key)\" in the request; expected \"graph\" and optionally \"set\"")
            }
            graph = wrapped
            switch json["set"]?.kind {
            case nil, .null?:
                break
            case .array(let items)?:
                for item in items {
                    guard case .string(let text) = item.kind else {
                        throw APIError(.badRequest, "\"set\" lists overrides as strings \"ID.PARAM=VALUE\", as lapse run --set takes them")
                    }
                    texts.append(text)
                }
            case .object(let members)?:
                // {"up.tile": 128}: the value is already JSON, so it is used as is rather than re-parsed from text.
                for (target, value) in members {
                    let parts = target.split(separator: ".", maxSplits: 1).map(String.init)
                    guard parts.count == 2, GraphDocument.isValidID(parts[0]), !parts[1].isEmpty else {
                        throw APIError(.badRequest, "\"set\" key \"\(target)\" must be ID.PARAM")
                    }
                    overrides.append(ParamOverride(nodeID: parts[0], param: parts[1], value: value))
                }
            default:
                throw APIError(.badRequest, "\"set\" is a list of \"ID.PARAM=VALUE\" strings or an object {\"ID.PARAM\": value}")
            }
        }
        let (parsed, problems) = ParamOverride.parseAll(texts)
        return Submission(graph: graph, overrides: parsed + overrides, problems: problems)
    }

    /// Validates a submission for a job that would write into `jobFolder`.
    func validated(_ submission: Submission, jobFolder: URL) -> Result<ValidatedGraph, ValidationFailure> {
        let validator = GraphValidator(registry: registry, searchPath: workspace.inputSearchPath, checkInputFiles: true)
        let workspace = self.workspace, registry = self.registry
        return validator.validate(json: submission.graph, overrides: submission.overrides, preceding: submission.problems) { document in
            workspace.confine(document, registry: registry, jobFolder: jobFolder)
        }
    }

    func validate(_ request: Request) async throws -> Response {
        let submission = try await submission(request)
        // Output paths are checked as a new job's would be.
        switch validated(submission, jobFolder: workspace.jobFolder("validate")) {
        case .success(let graph):
            let running = graph.requiredOrder.count
            return JSONResponse.make(.obj([
                ("valid", .bool(true)), ("nodes", .int(graph.nodes.count)), ("toRun", .int(running)),
                ("text", .str("graph: valid (\(graph.nodes.count) node\(graph.nodes.count == 1 ? "" : "s"), \(running) to run)")),
            ]))
        case .failure(let failure):
            throw API.invalid(failure)
        }
    }

    func submit(_ request: Request) async throws -> Response {
        let submission = try await submission(request)
        let id = JobQueue.newID()
        switch validated(submission, jobFolder: workspace.jobFolder(id)) {
        case .success(let graph):
            guard let job = queue.submit(graph, id: id) else {
                throw APIError(.serviceUnavailable, "the queue is full (\(queue.maxQueued) jobs waiting); try again later")
            }
            return JSONResponse.make(.obj([("id", .str(job.id)), ("state", .str(job.snapshot.state.rawValue)),
                                           ("url", .str("/jobs/\(job.id)"))]), status: .created)
        case .failure(let failure):
            throw API.invalid(failure)
        }
    }

    /// 422 with every diagnostic, as `lapse validate` prints them (`text`) and in parts.
    static func invalid(_ failure: ValidationFailure) -> APIError {
        let count = failure.diagnostics.count
        return APIError(.unprocessableContent, "the graph is invalid: \(count) error\(count == 1 ? "" : "s")",
                        extra: [("valid", .bool(false)), ("errors", .arr(failure.diagnostics.map(diagnostic)))])
    }

    static func diagnostic(_ d: Diagnostic) -> JSONValue {
        var members: [(key: String, value: JSONValue)] = [("path", .str(d.path))]
        if let node = d.nodeID { members.append(("node", .str(node))) }
        members.append(("message", .str(d.message)))
        if let location = d.location { members += [("line", .int(location.line)), ("column", .int(location.column))] }
        members.append(("text", .str(d.description)))
        return .obj(members)
    }

    // MARK: - Jobs

    func list() -> Response {
        JSONResponse.make(.obj([("jobs", .arr(queue.jobs.map { summary($0) }))]))
    }

    func job(_ id: String) throws -> Job {
        guard let job = queue.job(id) else { throw APIError(.notFound, "no job \"\(id)\"") }
        return job
    }

    func describe(_ id: String) throws -> Response {
        JSONResponse.make(detail(try job(id)))
    }

    func cancel(_ id: String) throws -> Response {
        let job = try job(id)
        guard queue.cancel(job) else {
            throw APIError(.conflict, "job \(id) already ended (\(job.snapshot.state.rawValue)); nothing to cancel")
        }
        return JSONResponse.make(detail(job), status: .accepted)
    }

    func summary(_ job: Job) -> JSONValue {
        let state = job.snapshot
        var members: [(key: String, value: JSONValue)] = [
            ("id", .str(job.id)), ("state", .str(state.state.rawValue)), ("created", .str(API.time(job.created))),
        ]
        if let started = state.started { members.append(("started", .str(API.time(started)))) }
        if let finished = state.finished { members.append(("finished", .str(API.time(finished)))) }
        if let description = job.graph.document.description { members.append(("description", .str(description))) }
        return .obj(members)
    }

    func detail(_ job: Job) -> JSONValue {
        let state = job.snapshot
        guard case .object(var members) = summary(job).kind else { return summary(job) }
        if state.state == .queued, let position = queue.queuePosition(of: job.id) { members.append(("queuePosition", .int(position))) }
        if state.cancelRequested { members.append(("cancelRequested", .bool(true))) }
        if let error = state.error {
            var fields: [(key: String, value: JSONValue)] = [("message", .str(error.message)), ("text", .str("error: \(error.message)"))]
            if let node = error.nodeID { fields.insert(("node", .str(node)), at: 0) }
            members.append(("error", .obj(fields)))
        }
        let nodes: [JSONValue] = job.graph.requiredOrder.compactMap { id in
            guard let node = state.nodes[id] else { return nil }
            var fields: [(key: String, value: JSONValue)] = [("id", .str(id)), ("type", .str(node.type)), ("state", .str(node.state))]
            if node.step > 0 || node.total > 0 {
                fields += [("step", .int(node.step)), ("total", .int(node.total)), ("unit", .str(node.unit))]
            }
            if let seconds = node.seconds { fields.append(("seconds", .num((seconds * 1e6).rounded() / 1e6))) }
            return .obj(fields)
        }
        members.append(("nodes", .arr(nodes)))
        members.append(("outputs", .arr(state.outputs.map { output in
            .obj([("name", .str(output.name)), ("bytes", .int(output.bytes)),
                  ("url", .str("/jobs/\(job.id)/outputs/" + API.escapePath(output.name)))])
        })))
        members.append(("events", .int(state.events.count + state.droppedEvents)))
        return .obj(members)
    }

    static func time(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    static func escapePath(_ name: String) -> String {
        name.split(separator: "/", omittingEmptySubsequences: false).map {
            $0.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? String($0)
        }.joined(separator: "/")
    }

    // MARK: - Events

    /// The `lapse run --events json` stream: Server-Sent Events (one `data:` line per event, then an `end` event with
    /// the final state), or with `?format=jsonl` the bare JSON lines. Past events are replayed first. The WebSocket
    /// form is served by `EventSocket` before routing; a WebSocket upgrade that reaches this handler was not made,
    /// and is answered with the reason rather than with a stream the client did not ask for.
    func events(_ id: String, _ request: Request) throws -> Response {
        let job = try job(id)
        if EventSocket.asksForWebSocket(request) {
            throw EventSocket.problem(with: request)
                ?? APIError(.badRequest, "the WebSocket upgrade was not made: send it as the first request of a new connection",
                            headers: [.connection: "close"])
        }
        let lines = request.uri.queryParameters.get("format") == "jsonl"
        let (past, future, stop) = job.subscribe()
        let headers: HTTPFields = [
            .contentType: lines ? "application/x-ndjson" : "text/event-stream",
            .cacheControl: "no-store",
        ]
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            defer { stop() }
            func frame(_ line: String) -> ByteBuffer { ByteBuffer(string: lines ? line + "\n" : "data: \(line)\n\n") }
            // A client that goes away makes a write throw; the job itself never waits on a client.
            try await writer.write(contentsOf: past.map(frame))
            for await line in future { try await writer.write(frame(line)) }
            if !lines {
                let end = JSONValue.obj([("state", .str(job.snapshot.state.rawValue))]).jsonText
                try await writer.write(ByteBuffer(string: "event: end\ndata: \(end)\n\n"))
            }
            try await writer.finish(nil)
        })
    }

    // MARK: - Outputs

    /// A file the job wrote, by its name in the job's `outputs` (or by file name when that is unique).
    func output(_ id: String, name raw: String, context: some RequestContext) async throws -> Response {
        let job = try job(id)
        let name = raw.removingPercentEncoding ?? raw
        let outputs = job.snapshot.outputs
        let output = outputs.first { $0.name == name }
            ?? { let byFile = outputs.filter { ($0.name as NSString).lastPathComponent == name }; return byFile.count == 1 ? byFile[0] : nil }()
        guard let output else {
            let state = job.snapshot.state
            let hint = state.isFinished ? "its outputs: \(outputs.map(\.name).joined(separator: ", "))" : "it is still \(state.rawValue)"
            throw APIError(.notFound, "job \(id) wrote no file \"\(name)\" (\(outputs.isEmpty && state.isFinished ? "it wrote none" : hint))")
        }
        // Re-checked at serving time: the file must still be a regular file inside the workspace.
        var info = stat()
        guard lstat(output.path, &info) == 0, info.st_mode & S_IFMT == S_IFREG,
              let resolved = Workspace.realPath(output.path), Workspace.isInside(resolved, workspace.root.path) else {
            throw APIError(.gone, "the output \"\(name)\" is no longer in the workspace")
        }
        let body = try await FileIO().loadFile(path: resolved, context: context)
        return Response(status: .ok, headers: [.contentType: API.mediaType(of: name),
                                               .contentDisposition: "inline; filename=\"\((name as NSString).lastPathComponent.replacingOccurrences(of: "\"", with: ""))\""],
                        body: body)
    }

    static func mediaType(of name: String) -> String {
        switch (name as NSString).pathExtension.lowercased() {
        case "png": "image/png"
        case "jpg", "jpeg": "image/jpeg"
        case "gif": "image/gif"
        case "webp": "image/webp"
        case "mp4", "m4v": "video/mp4"
        case "webm": "video/webm"
        case "mkv": "video/x-matroska"
        case "mov": "video/quicktime"
        case "json": "application/json"
        case "txt": "text/plain; charset=utf-8"
        default: "application/octet-stream"
        }
    }
}
