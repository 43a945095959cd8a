//! Shell completions and the manual page, made from the command line's own definition
//! (issue 31): bash completes snaptree's commands and flags from what the binary prints,
//! and groff reads its pages without a warning.

use std::io::Write;
use std::process::{Command, Stdio};

/// What `snaptree ARGS` prints; it must succeed.
fn printed(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_snaptree"))
        .args(args)
        .output()
        .expect("snaptree runs");
    assert!(out.status.success(), "snaptree {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// What bash offers for the words typed so far (the last one being completed), with
/// the completions the binary prints loaded.
fn completed(words: &[&str]) -> Vec<String> {
    let script = printed(&["completions", "bash"]);
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "{script}\nCOMP_WORDS=({words}); COMP_CWORD={cword}; \
         _snaptree snaptree '{current}' '{previous}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = quoted.join(" "),
        cword = words.len() - 1,
        current = words[words.len() - 1],
        previous = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &program])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_commands_and_flags() {
    assert_eq!(completed(&["snaptree", "sn"]), ["snapshot"]);
    assert_eq!(completed(&["snaptree", "snapshot", "ex"]), ["expire"]);
    let flags = completed(&["snaptree", "serve", "--keep-"]);
    for flag in ["--keep-tasks", "--keep-events", "--keep-history"] {
        assert!(flags.iter().any(|f| f == flag), "{flag} in {flags:?}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(
            printed(&["completions", shell]).contains("snapshot"),
            "{shell}"
        );
    }
}

#[test]
fn the_manual_pages_are_roff_that_groff_reads_cleanly() {
    for (args, title) in [
        (vec!["man"], ".TH snaptree 1"),
        (vec!["man", "serve"], ".TH snaptree-serve 1"),
        (vec!["man", "snapshot"], ".TH snaptree-snapshot 1"),
    ] {
        let page = printed(&args);
        assert!(page.contains(title), "{args:?}:\n{page}");
        if Command::new("groff").arg("--version").output().is_err() {
            continue;
        }
        let mut groff = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let out = groff.wait_with_output().unwrap();
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.is_empty(),
            "{args:?}: {warnings}"
        );
    }
    let serve = printed(&["man", "serve"]);
    assert!(serve.contains("keep\\-tasks"), "every flag is on its page");
    let unknown = Command::new(env!("CARGO_BIN_EXE_snaptree"))
        .args(["man", "nope"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}
