import APISRPlugin
import Foundation
import LapseCLI
import LapseGraph
import LapseServer
import LapseTestSupport
import MediaPlugin
import Testing

/// Debian's headless Chromium (scripts/install-deps.sh installs it), if present.
let chromiumPath: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
    .first { FileManager.default.isExecutableFile(atPath: $0) }

@Suite("lapse serve: the web page")
struct BrowserTests {
    @Test("in headless Chromium the page runs the ready upscale graph and shows the ×4 image",
          .enabled(if: chromiumPath != nil, "chromium is not installed (apt-get install chromium, or scripts/install-deps.sh)"))
    func pageRunsUpscale() async throws {
        let registry = try LapseCLI.registry(plugins: [MediaPlugin.self, APISRPlugin.self])
        let server = try await TestServer.start(registry: registry, workspace: try ServerEndToEndTests.upscaleWorkspace()) {
            $0.token = "page-token"
        }
        defer { Task { await server.stop() } }
        let page = try await server.request("GET", "/")
        #expect(page.status == 200 && page.headers["content-type"]?.hasPrefix("text/html") == true)

        let profile = try TestSupport.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: profile) }
        let url = "http://127.0.0.1:\(server.port)/?token=page-token&graph=upscale-image.json&run=1"
        // Virtual time does not advance while a fetch is pending, so the dump waits for the job's event stream to end,
        // then for the job's description and the image to load.
        let arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                         "--user-data-dir=\(profile.path)", "--virtual-time-budget=900000", "--dump-dom", url]
        let dom = try await TestSupport.offPool { () throws -> String in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: chromiumPath!)
            process.arguments = arguments
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
        let jobs = try await server.request("GET", "/jobs").json?["jobs"]?.arrayValue ?? []
        #expect(jobs.count == 1, "the page submitted \(jobs.count) jobs")
        let id = try #require(jobs.first?["id"]?.stringValue)
        let job = try await server.waitForEnd(id, timeout: 600)
        #expect(job["state"]?.stringValue == "done")
        // What the browser saw: the finished job, its node table, and the output image loaded at 2048×2048.
        #expect(dom.contains(#"data-state="done""#), "\(dom.suffix(3000))")
        #expect(dom.contains(#"<span id="state">done</span>"#))
        #expect(dom.contains("out/astronaut_x4.png"))
        let image = dom.range(of: #"<img[^>]*astronaut_x4\.png[^>]*>"#, options: .regularExpression).map { String(dom[$0]) } ?? ""
        #expect(image.contains(#"data-loaded="1""#) && image.contains(#"data-width="2048""#) && image.contains(#"data-height="2048""#),
                "image element: \(image)")
        print("serve browser test: the page ran job \(id) and showed \(image)")
    }
}
