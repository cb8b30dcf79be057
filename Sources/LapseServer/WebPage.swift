import Foundation
import Hummingbird

/// The page served at `/`: pick a ready graph or upload one, edit its parameters from the node schemas, run it,
/// watch per-node progress, see output images and videos inline, cancel. Plain HTML and JavaScript embedded in the
/// binary, using only the public API (the page is a client like any other).
///
/// With a token, open `/?token=T`: the page sends it as a Bearer header, and as `?token=` where a browser cannot set
/// headers (EventSource, `<img>`, `<video>`). `?graph=NAME&run=1` loads a ready graph and runs it at once (what the
/// browser test uses).
enum WebPage {
    static func response() -> Response {
        Response(status: .ok,
                 headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                           .contentSecurityPolicy: "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob:; media-src 'self'"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }

    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>lapse serve</title>
    <style>
      body { font: 14px/1.4 system-ui, sans-serif; margin: 0; display: grid; grid-template-columns: 22rem 1fr; min-height: 100vh; }
      aside { background: #f3f3f3; padding: 1rem; border-right: 1px solid #ddd; overflow: auto; }
      main { padding: 1rem 1.5rem; overflow: auto; }
      h1 { font-size: 1.2rem; margin: 0 0 1rem; } h2 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
      label { display: block; margin: .3rem 0; } input[type=text], input[type=number], select { width: 100%; box-sizing: border-box; }
      fieldset { border: 1px solid #ccc; margin: .6rem 0; padding: .4rem .6rem; } legend { font-weight: 600; }
      .doc { color: #666; font-size: 12px; } .error { color: #b00020; white-space: pre-wrap; font-family: monospace; }
      button { margin: .2rem .3rem .2rem 0; padding: .3rem .8rem; }
      table { border-collapse: collapse; } td, th { padding: .2rem .6rem; border-bottom: 1px solid #eee; text-align: left; }
      progress { width: 12rem; } .outputs img, .outputs video { max-width: 100%; max-height: 70vh; display: block; margin: .5rem 0; border: 1px solid #ccc; }
      #jobs li { cursor: pointer; } code { background: #eee; padding: 0 .2rem; }
    </style>
    </head>
    <body>
    <aside>
      <h1>lapse serve</h1>
      <label>Ready graph <select id="graphs"><option value="">(choose)</option></select></label>
      <label>…or upload a graph file <input type="file" id="upload" accept=".json,application/json"></label>
      <div id="params"></div>
      <button id="run" disabled>Run</button><button id="cancel" disabled>Cancel</button>
      <div id="problems" class="error"></div>
      <h2>Jobs</h2>
      <ul id="jobs"></ul>
    </aside>
    <main>
      <div id="job"><p>Pick a graph, adjust its parameters and run it.</p></div>
    </main>
    <script>
    "use strict";
    const query = new URLSearchParams(location.search);
    const token = query.get("token") || "";
    const headers = token ? { "Authorization": "Bearer " + token } : {};
    const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
    const $ = (id) => document.getElementById(id);
    const el = (tag, props = {}, ...children) => { const e = document.createElement(tag); Object.assign(e, props); e.append(...children); return e; };
    let schemas = {}, graph = null, currentJob = null, source = null, polling = null;

    async function api(method, path, body) {
      const response = await fetch(path, { method, headers: body === undefined ? headers : { ...headers, "Content-Type": "application/json" },
                                           body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await response.text();
      let json = null; try { json = JSON.parse(text); } catch (_) {}
      if (!response.ok) { const e = new Error((json && json.error && json.error.message) || response.statusText); e.json = json; throw e; }
      return json;
    }

    async function init() {
      const nodes = await api("GET", "/nodes");
      for (const n of nodes.nodes) schemas[n.type] = n;
      const list = await api("GET", "/graphs");
      for (const name of list.graphs) $("graphs").append(el("option", { value: name, textContent: name }));
      refreshJobs();
      if (query.get("graph")) {
        $("graphs").value = query.get("graph");
        await loadReady(query.get("graph"));
        if (query.get("run") === "1") await run();
      }
    }

    async function loadReady(name) {
      if (!name) return;
      const response = await fetch(withToken("/graphs/" + encodeURIComponent(name)), { headers });
      setGraph(JSON.parse(await response.text()));
    }

    function setGraph(g) {
      graph = g;
      $("problems").textContent = "";
      const box = $("params"); box.replaceChildren();
      if (graph.description) box.append(el("p", { className: "doc", textContent: graph.description }));
      for (const [id, node] of Object.entries(graph.nodes || {})) {
        const schema = schemas[node.type];
        const set = el("fieldset", {}, el("legend", { textContent: `${id} (${node.type})` }));
        if (!schema) { set.append(el("div", { className: "error", textContent: "unknown node type" })); box.append(set); continue; }
        const linked = node.inputs || {};
        for (const input of schema.inputs) {
          if (input.kind !== "value" || linked[input.name] !== undefined) continue;
          node.params = node.params || {};
          const value = node.params[input.name] !== undefined ? node.params[input.name] : input.default;
          let field;
          if (input.allowed) {
            field = el("select");
            for (const option of input.allowed) field.append(el("option", { value: option, textContent: option }));
            field.value = value === undefined ? "" : String(value);
          } else if (input.type === "Bool") {
            field = el("input", { type: "checkbox", checked: !!value });
          } else if (input.type === "Int" || input.type === "Float") {
            field = el("input", { type: "number", step: input.type === "Int" ? "1" : "any", value: value === undefined ? "" : value });
            if (input.min !== undefined) field.min = input.min;
            if (input.max !== undefined) field.max = input.max;
          } else {
            field = el("input", { type: "text", value: value === undefined ? "" : value });
          }
          field.dataset.node = id; field.dataset.param = input.name; field.dataset.type = input.type;
          field.addEventListener("change", () => {
            let v = field.type === "checkbox" ? field.checked : field.value;
            if (input.type === "Int") v = parseInt(v, 10); else if (input.type === "Float") v = parseFloat(v);
            if (v === "" && !input.required && input.default === undefined) delete node.params[input.name]; else node.params[input.name] = v;
          });
          set.append(el("label", {}, `${input.name} `, field, el("div", { className: "doc", textContent: input.doc || "" })));
        }
        box.append(set);
      }
      $("run").disabled = false;
    }

    async function run() {
      if (!graph) return;
      $("problems").textContent = "";
      try {
        const job = await api("POST", "/jobs", { graph });
        watch(job.id);
        refreshJobs();
      } catch (e) {
        const errors = (e.json && e.json.errors) || [];
        $("problems").textContent = e.message + (errors.length ? "\n" + errors.map((d) => d.text).join("\n") : "");
      }
    }

    function watch(id) {
      currentJob = id;
      if (source) source.close();
      if (polling) clearInterval(polling);
      $("cancel").disabled = false;
      show(id);
      source = new EventSource(withToken(`/jobs/${id}/events`));
      let pending = false;
      source.onmessage = () => { if (!pending) { pending = true; setTimeout(() => { pending = false; show(id); }, 250); } };
      source.addEventListener("end", () => { source.close(); source = null; show(id); refreshJobs(); });
      source.onerror = () => { if (source) { source.close(); source = null; } polling = setInterval(() => show(id), 1000); };
    }

    async function show(id) {
      const job = await api("GET", `/jobs/${id}`);
      if (id !== currentJob) return;
      const finished = ["done", "failed", "cancelled"].includes(job.state);
      if (finished) { $("cancel").disabled = true; if (polling) { clearInterval(polling); polling = null; } }
      const rows = job.nodes.map((n) => el("tr", {},
        el("td", {}, el("code", { textContent: n.id })), el("td", { textContent: n.type }), el("td", { textContent: n.state }),
        el("td", {}, n.total ? el("progress", { max: n.total, value: n.step }) : "", n.total ? ` ${n.unit} ${n.step}/${n.total}` : (n.step ? ` ${n.unit} ${n.step}` : "")),
        el("td", { textContent: n.seconds !== undefined ? n.seconds.toFixed(2) + " s" : "" })));
      const outputs = el("div", { className: "outputs" });
      for (const output of job.outputs) {
        const url = withToken(output.url);
        const lower = output.name.toLowerCase();
        outputs.append(el("h2", {}, el("a", { href: url, textContent: output.name, target: "_blank" }), ` (${output.bytes} bytes)`));
        if (/\.(png|jpe?g|gif|webp)$/.test(lower)) {
          const img = el("img", { src: url, alt: output.name });
          img.addEventListener("load", () => { img.dataset.width = img.naturalWidth; img.dataset.height = img.naturalHeight; img.dataset.loaded = "1"; });
          outputs.append(img);
        } else if (/\.(mp4|webm|mov|m4v|mkv)$/.test(lower)) {
          outputs.append(el("video", { src: url, controls: true, loop: true }));
        }
      }
      const box = $("job");
      box.replaceChildren(
        el("h2", {}, "Job ", el("code", { textContent: job.id }), " ", el("span", { id: "state", textContent: job.state })),
        job.error ? el("div", { className: "error", textContent: job.error.text }) : "",
        el("table", {}, el("tr", {}, ...["node", "type", "state", "progress", "time"].map((h) => el("th", { textContent: h }))), ...rows),
        outputs);
      box.dataset.state = job.state;
    }

    async function refreshJobs() {
      const list = await api("GET", "/jobs");
      $("jobs").replaceChildren(...list.jobs.slice(-20).reverse().map((j) =>
        el("li", { onclick: () => watch(j.id) }, el("code", { textContent: j.id.slice(0, 8) }), ` ${j.state}`)));
    }

    $("graphs").addEventListener("change", (e) => loadReady(e.target.value));
    $("upload").addEventListener("change", async (e) => {
      const file = e.target.files[0]; if (!file) return;
      try { setGraph(JSON.parse(await file.text())); } catch (err) { $("problems").textContent = "not a JSON graph: " + err.message; }
    });
    $("run").addEventListener("click", run);
    $("cancel").addEventListener("click", async () => { if (currentJob) { try { await api("DELETE", `/jobs/${currentJob}`); } catch (_) {} show(currentJob); } });
    init().catch((e) => { $("problems").textContent = e.message; });
    </script>
    </body>
    </html>
    """#
}
