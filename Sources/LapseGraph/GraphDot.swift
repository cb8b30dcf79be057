import Foundation

/// Graphviz rendering of graphs, for `lapse graph GRAPH --dot`.
extension ValidatedGraph {
    /// The graph in DOT: one box per node (id and type; output nodes doubled), one edge per link labelled
    /// `output → port`, literal parameters listed under the type.
    public func dot(name: String = "lapse") -> String {
        func q(_ s: String) -> String {
            "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        var lines = ["digraph \(q(name)) {", "  rankdir=LR;", "  node [shape=box, fontname=\"Helvetica\"];"]
        for id in order {
            guard let node = nodes[id], let written = document.node(id) else { continue }
            var label = "\(id)\\n\(node.type)"
            for (param, value) in written.params { label += "\\n\(param)=\(value.jsonText)" }
            let escaped = label.replacingOccurrences(of: "\"", with: "\\\"")
            let style = node.schema.isOutput ? ", peripheries=2" : ""
            lines.append("  \(q(id)) [label=\"\(escaped)\"\(style)];")
        }
        for id in order {
            guard let node = nodes[id] else { continue }
            for link in node.links {
                lines.append("  \(q(link.nodeID)) -> \(q(id)) [label=\(q("\(link.output) → \(link.port)"))];")
            }
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }
}
