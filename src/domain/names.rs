//! Name rules: what users may call things, and what snaptree calls them on a host.

use crate::error::{AppError, AppResult};

/// Longest snapshot (and project, host, VM) name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest snapshot description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// Trims `raw` and checks it is 1 to 128 characters, as snapshots.md says. Any character
/// is fine but NUL, which PostgreSQL cannot store: names never reach a host, so quotes,
/// `$(...)` or newlines are just text. `what` names the field ("snapshot name").
pub fn name(what: &str, raw: &str) -> AppResult<String> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err(AppError::validation(format!(
            "The {what} must not be empty."
        )));
    }
    if chars > MAX_NAME_CHARS {
        return Err(AppError::validation(format!(
            "The {what} is {chars} characters long; at most {MAX_NAME_CHARS} are allowed."
        )));
    }
    if name.contains('\0') {
        return Err(AppError::validation(format!(
            "The {what} must not contain a NUL character."
        )));
    }
    Ok(name.to_owned())
}

/// Checks an optional description: up to 1024 characters; blank means none.
pub fn description(raw: Option<&str>) -> AppResult<Option<String>> {
    let Some(text) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.contains('\0') {
        return Err(AppError::validation(
            "The description must not contain a NUL character.",
        ));
    }
    let chars = text.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(AppError::validation(format!(
            "The description is {chars} characters long; at most {MAX_DESCRIPTION_CHARS} are allowed."
        )));
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
            name("snapshot name", "   ").unwrap_err().code(),
            "VALIDATION"
        );
        assert!(name("snapshot name", &"é".repeat(128)).is_ok());
        assert_eq!(
            name("snapshot name", &"é".repeat(129)).unwrap_err().code(),
            "VALIDATION"
        );
        assert_eq!(name("snapshot name", "a\nb").unwrap(), "a\nb");
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
