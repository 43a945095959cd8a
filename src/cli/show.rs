//! How the command line shows things to people: a VM's tree and list as text, and a
//! task's progress (a bar on a terminal, one line per event otherwise).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// `text` safe to print on a terminal: control characters (C0, DEL, C1) and the
/// characters that reorder text (bidirectional overrides and isolates) are shown as
/// escapes (`\u{1b}`), so that a name or a host's message can neither drive the
/// terminal (clear it, retitle it) nor forge a line of a listing.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The string at `value`, printable (empty if it is not a string).
pub fn field(value: &Value) -> Cow<'_, str> {
    printable(value.as_str().unwrap_or_default())
}

/// A task's progress as it is followed.
pub struct Progress {
    /// On a terminal: a bar; otherwise each event is a line on stderr.
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(100);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos:>3}% {msg}").expect("a valid template"),
            );
            bar
        });
        Self { bar }
    }

    pub fn event(&mut self, event: &Value) {
        let state = field(&event["state"]);
        let words = match event["phase"].as_str().or(event["message"].as_str()) {
            Some(words) => printable(words),
            None => state.clone(),
        };
        let percent = event["progress"].as_u64();
        match &self.bar {
            Some(bar) => {
                if let Some(p) = percent {
                    bar.set_position(p.min(100));
                }
                bar.set_message(words.into_owned());
            }
            // A closed stderr (a script that stopped reading) is no reason to stop.
            None => {
                let line = match percent {
                    Some(p) => format!("{state} {p}% {words}"),
                    None => format!("{state} {words}"),
                };
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Each snapshot with its `children`, from the flat list (parents first).
pub fn nest(snapshots: &[Value]) -> Vec<Value> {
    let children = children_of(snapshots);
    fn build(s: &Value, children: &HashMap<Option<String>, Vec<&Value>>) -> Value {
        let id = s["id"].as_str().map(str::to_owned);
        let kids: Vec<Value> = children
            .get(&id)
            .map(|k| k.iter().map(|c| build(c, children)).collect())
            .unwrap_or_default();
        let mut node = s.clone();
        if let Some(object) = node.as_object_mut() {
            object.remove("parent");
            object.insert("children".into(), json!(kids));
        }
        node
    }
    children
        .get(&None)
        .map(|roots| roots.iter().map(|r| build(r, &children)).collect())
        .unwrap_or_default()
}

fn children_of(snapshots: &[Value]) -> HashMap<Option<String>, Vec<&Value>> {
    let mut children: HashMap<Option<String>, Vec<&Value>> = HashMap::new();
    for s in snapshots {
        let parent = s["parent"]["id"].as_str().map(str::to_owned);
        children.entry(parent).or_default().push(s);
    }
    children
}

/// One snapshot's marks after its name.
fn marks(s: &Value) -> String {
    let mut marks = format!("[{}]", field(&s["id"]));
    let state = field(&s["state"]);
    if state != "RUNNING" {
        marks.push(' ');
        marks.push_str(&state.to_lowercase());
    }
    if s["active"] == true {
        marks.push_str(" *current");
    }
    if s["protected"] == true {
        marks.push_str(" (protected)");
    }
    if let Some(at) = s["expiresAt"].as_str() {
        marks.push_str(&format!(" (expires {at})"));
    }
    if s["stale"] == true {
        marks.push_str(" (stale)");
    }
    marks
}

/// The tree, indented as `virsh snapshot-list --tree` draws it.
pub fn tree_text(snapshots: &[Value]) -> String {
    if snapshots.is_empty() {
        return "(no snapshots)".into();
    }
    let children = children_of(snapshots);
    let mut out = String::new();
    fn walk(
        s: &Value,
        prefix: &str,
        last: bool,
        root: bool,
        children: &HashMap<Option<String>, Vec<&Value>>,
        out: &mut String,
    ) {
        let name = field(&s["name"]);
        if root {
            out.push_str(&format!("{name} {}\n", marks(s)));
        } else {
            let branch = if last { "`- " } else { "+- " };
            out.push_str(&format!("{prefix}{branch}{name} {}\n", marks(s)));
        }
        let below = if root {
            String::new()
        } else if last {
            format!("{prefix}   ")
        } else {
            format!("{prefix}|  ")
        };
        let id = s["id"].as_str().map(str::to_owned);
        let kids = children.get(&id).cloned().unwrap_or_default();
        for (i, kid) in kids.iter().enumerate() {
            walk(kid, &below, i + 1 == kids.len(), false, children, out);
        }
    }
    for root in children.get(&None).cloned().unwrap_or_default() {
        walk(root, "", true, true, &children, &mut out);
    }
    out
}

/// One line per snapshot: id, name, state, created, marks.
pub fn list_text(snapshots: &[Value]) -> String {
    let mut out = format!(
        "{:<8} {:<32} {:<12} {:<25} {}\n",
        "ID", "NAME", "STATE", "CREATED", ""
    );
    for s in snapshots {
        let mut flags = Vec::new();
        let expires = s["expiresAt"].as_str().map(|at| format!("expires {at}"));
        if s["active"] == true {
            flags.push("current");
        }
        if s["protected"] == true {
            flags.push("protected");
        }
        if s["stale"] == true {
            flags.push("stale");
        }
        flags.extend(expires.as_deref());
        out.push_str(&format!(
            "{:<8} {:<32} {:<12} {:<25} {}\n",
            field(&s["id"]),
            field(&s["name"]),
            field(&s["state"]),
            field(&s["createdAt"]),
            flags.join(",")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, parent: Option<&str>, active: bool) -> Value {
        json!({ "id": id, "name": format!("s{id}"), "state": "RUNNING", "active": active,
                "stale": false, "parent": parent.map(|p| json!({ "id": p })) })
    }

    #[test]
    fn names_cannot_drive_the_terminal_or_forge_a_row() {
        let forged = "\u{1b}]0;x\u{7}\u{1b}[2J";
        assert_eq!(printable(forged), "\\u{1b}]0;x\\u{7}\\u{1b}[2J");
        assert_eq!(printable("a\n42  root"), "a\\u{a}42  root");
        assert_eq!(printable("a\u{9b}b\u{202e}c"), "a\\u{9b}b\\u{202e}c");
        assert!(matches!(printable("plain é"), Cow::Borrowed("plain é")));
        let list = [json!({ "id": "7", "name": "x\n8        forged", "state": "RUNNING" })];
        assert_eq!(list_text(&list).lines().count(), 2);
        let tree = [json!({ "id": "7", "name": forged, "state": "RUNNING", "parent": null })];
        assert!(!tree_text(&tree).contains('\u{1b}'));
    }

    #[test]
    fn trees_draw_as_virsh_draws_them() {
        let list = [
            s("1", None, false),
            s("2", Some("1"), false),
            s("3", Some("2"), true),
            s("4", Some("1"), false),
        ];
        assert_eq!(
            tree_text(&list),
            "s1 [1]\n+- s2 [2]\n|  `- s3 [3] *current\n`- s4 [4]\n"
        );
        let nested = nest(&list);
        assert_eq!(nested[0]["children"][0]["children"][0]["id"], "3");
        assert_eq!(nested[0]["children"][1]["id"], "4");
    }
}
