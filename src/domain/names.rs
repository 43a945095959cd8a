//! Name rules: what users may call things, and what snaptree calls them on a host.

use super::Rejection;

/// Longest snapshot (and project, host, VM) name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest snapshot description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// Trims `raw` and checks it is 1 to 128 characters, as snapshots.md says, on one line of
/// plain text: no control character (C0, DEL or C1), which could clear a terminal, forge
/// a row in a listing, or (NUL) not be stored at all. Names never reach a host, so quotes
/// or `$(...)` are just text. `what` names the field ("snapshot name").
pub fn name(what: &'static str, raw: &str) -> Result<String, Rejection> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err(Rejection::EmptyName { what });
    }
    if chars > MAX_NAME_CHARS {
        return Err(Rejection::LongName {
            what,
            chars,
            max: MAX_NAME_CHARS,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(Rejection::ControlInName { what });
    }
    Ok(name.to_owned())
}

/// Checks an optional description: up to 1024 characters; blank means none.
pub fn description(raw: Option<&str>) -> Result<Option<String>, Rejection> {
    let Some(text) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Rejection::ControlInDescription);
    }
    let chars = text.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(Rejection::LongDescription {
            chars,
            max: MAX_DESCRIPTION_CHARS,
        });
    }
    Ok(Some(text.to_owned()))
}

/// The snapshot's name on the host. Generated, never user text, as CloudCIX does.
pub fn host_snapshot_name(vm_id: i64, snapshot_id: i64) -> String {
    format!("{vm_id}_{snapshot_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            name("snapshot name", "  before upgrade ").unwrap(),
            "before upgrade"
        );
        assert_eq!(
            name("snapshot name", "   "),
            Err(Rejection::EmptyName {
                what: "snapshot name"
            })
        );
        assert!(name("snapshot name", &"é".repeat(128)).is_ok());
        assert_eq!(
            name("snapshot name", &"é".repeat(129)),
            Err(Rejection::LongName {
                what: "snapshot name",
                chars: 129,
                max: 128
            })
        );
        for forged in [
            "a\nb",
            "\u{1b}]0;x\u{7}\u{1b}[2J",
            "a\u{9b}2J",
            "a\u{7f}",
            "a\0",
        ] {
            assert_eq!(
                name("snapshot name", forged),
                Err(Rejection::ControlInName {
                    what: "snapshot name"
                })
            );
        }
        assert_eq!(
            description(Some("two\nlines\twith a tab"))
                .unwrap()
                .unwrap(),
            "two\nlines\twith a tab"
        );
        assert_eq!(
            description(Some("a\u{1b}[2J")),
            Err(Rejection::ControlInDescription)
        );
        assert!(name("snapshot name", "a\0b").is_err());
    }

    #[test]
    fn descriptions_are_optional_and_bounded() {
        assert_eq!(description(None).unwrap(), None);
        assert_eq!(description(Some("  ")).unwrap(), None);
        assert_eq!(description(Some(" x ")).unwrap().as_deref(), Some("x"));
        assert!(description(Some(&"x".repeat(1025))).is_err());
    }

    #[test]
    fn host_names_come_from_ids_only() {
        assert_eq!(host_snapshot_name(7, 42), "7_42");
    }
}
