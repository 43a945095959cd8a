//! Unit tests of `hyperv`.

use super::*;

#[test]
fn literals_double_every_kind_of_single_quote() {
    assert_eq!(literal("plain"), "'plain'");
    assert_eq!(literal("it's"), "'it''s'");
    assert_eq!(literal("a\u{2019}b"), "'a\u{2019}\u{2019}b'");
    // Nothing else is special inside a single-quoted literal.
    assert_eq!(literal("$(rm -rf /); `x`"), "'$(rm -rf /); `x`'");
}

#[test]
fn of_every_character_from_1_to_255_no_line_break_reaches_a_script() {
    for code in 1u32..=255 {
        let c = char::from_u32(code).unwrap();
        let name = format!("a{c}b");
        let filled = fill(statements::CHECKPOINT, "vm", &name);
        // Every control character (C0, DEL, C1) is refused; the rest is one literal.
        assert_eq!(filled.is_ok(), !c.is_control(), "U+{code:04X}");
        if let Ok(line) = filled {
            assert_eq!(line.lines().count(), 1, "U+{code:04X}");
        }
    }
    assert!(fill(statements::CHECKPOINT, "vm", "a\u{2028}b").is_err());
    assert!(fill(statements::CHECKPOINT, "vm\n\nStop-Computer", "a").is_err());
}

#[test]
fn parses_ssh_uris_and_refuses_option_injection() {
    assert_eq!(
        Target::parse("ssh://admin@hv1.example:2222").unwrap(),
        Target {
            user: "admin".into(),
            host: "hv1.example".into(),
            port: Some(2222)
        }
    );
    assert!(Target::parse("ssh://admin@-oProxyCommand=x").is_err());
    assert!(Target::parse("ssh://hv1").is_err());
    assert!(Target::parse("ssh://a b@hv1").is_err());
}

#[test]
fn scripts_are_one_block_ending_in_a_blank_line() {
    let s = script(&[fill(statements::START, "web", "").unwrap()], 7);
    assert!(s.starts_with("& {\n$ErrorActionPreference = 'Stop'\n"));
    assert!(s.contains("\nStart-VM -Name 'web'\n"));
    assert!(s.ends_with("}\n}\n\nWrite-Output ('SNAPTREE-END ' + '7.')\n"));
    assert!(
        !s.contains(&end_marker(7)),
        "the marker is only in the output"
    );
}
