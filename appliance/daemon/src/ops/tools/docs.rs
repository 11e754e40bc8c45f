//! `decision_gate_docs_search`: searches the built-in operator and authoring notes so an
//! agent can look up how to use the tools without network access.

use serde::Deserialize;
use serde_json::{json, Value};

use super::parse_args;
use crate::wire::WireError;

/// A built-in document: id, title, role, markdown.
struct Doc {
    id: &'static str,
    title: &'static str,
    role: &'static str,
    text: &'static str,
}

const DOCS: [Doc; 4] = [
    Doc {
        id: "evidence-flow",
        title: "Evidence flow",
        role: "reasoning",
        text: include_str!("../../../docs/evidence-flow.md"),
    },
    Doc {
        id: "ret-logic",
        title: "Requirement logic",
        role: "ontology",
        text: include_str!("../../../docs/ret-logic.md"),
    },
    Doc { id: "tooling", title: "Tool workflow", role: "pattern", text: include_str!("../../../docs/tooling.md") },
    Doc {
        id: "security",
        title: "Security posture",
        role: "decision",
        text: include_str!("../../../docs/security.md"),
    },
];

#[derive(Deserialize)]
struct SearchArgs {
    query: String,
    #[serde(default)]
    max_sections: Option<u64>,
}

/// Splits a document into `(heading, content)` sections at `## ` headings.
fn sections(doc: &Doc) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut heading = doc.title.to_string();
    let mut content = String::new();
    for line in doc.text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            if !content.trim().is_empty() {
                out.push((heading.clone(), content.trim().to_string()));
            }
            heading = h.trim().to_string();
            content.clear();
        } else if !line.starts_with("# ") {
            content.push_str(line);
            content.push('\n');
        }
    }
    if !content.trim().is_empty() {
        out.push((heading, content.trim().to_string()));
    }
    out
}

pub(super) fn search(args: Value) -> Result<Value, WireError> {
    let args: SearchArgs = parse_args(args)?;
    let max = usize::try_from(args.max_sections.unwrap_or(3).clamp(1, 10)).unwrap_or(3);
    let terms: Vec<String> = args
        .query
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|t| t.len() > 1)
        .map(String::from)
        .collect();
    let mut scored = Vec::new();
    for doc in &DOCS {
        for (heading, content) in sections(doc) {
            let haystack = format!("{heading}\n{content}").to_lowercase();
            let heading_lower = heading.to_lowercase();
            let score: usize = terms
                .iter()
                .map(|term| haystack.matches(term.as_str()).count() + 3 * heading_lower.matches(term.as_str()).count())
                .sum();
            scored.push((score, doc, heading, content));
        }
    }
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(b.1.id)).then_with(|| a.2.cmp(&b.2)));
    let chosen: Vec<_> = scored.into_iter().take(max).collect();
    let sections: Vec<Value> = chosen
        .iter()
        .enumerate()
        .map(|(rank, (_, doc, heading, content))| {
            json!({"rank": rank, "doc_id": doc.id, "doc_title": doc.title, "doc_role": doc.role, "heading": heading, "content": content})
        })
        .collect();
    let mut covered: Vec<Value> = Vec::new();
    for (_, doc, _, _) in &chosen {
        let entry = json!({"doc_id": doc.id, "doc_title": doc.title, "doc_role": doc.role});
        if !covered.contains(&entry) {
            covered.push(entry);
        }
    }
    Ok(json!({
        "sections": sections,
        "docs_covered": covered,
        "suggested_followups": ["How do trust lanes affect gate outcomes?", "How do I export and verify a runpack?"],
    }))
}

/// This family's handler of `operation`, when it is one of its tools (`super::handler`).
pub(super) fn handler(operation: dg_identity::Operation) -> Option<super::Handler> {
    Some(match operation {
        dg_identity::Operation::DocsSearch => |_, args| search(args),
        _ => return None,
    })
}
