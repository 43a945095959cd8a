//! The configuration file: every flag of `serve` and `robot` (and the global ones) can
//! be set in a TOML file, by its long name (`listen = "0.0.0.0:8080"`,
//! `database-url = "postgres://..."`, `keep-tasks = "30d"`). The file is the lowest
//! layer: the environment overrides it, and a flag overrides both. It works by setting
//! each setting's environment variable (every such flag reads one) when the environment
//! does not set it already, before the command line is parsed.
//!
//! The file is `--config FILE` or `SNAPTREE_CONFIG`; without either,
//! `/etc/snaptree/snaptree.toml` when it exists (what the Debian package installs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the package's file lives.
pub const DEFAULT: &str = "/etc/snaptree/snaptree.toml";

/// The file named by `--config` among `args`, or by `SNAPTREE_CONFIG`, or the default
/// when it exists; `None`: no file.
pub fn locate(args: &[String]) -> Option<PathBuf> {
    let mut named = None;
    for (i, arg) in args.iter().enumerate() {
        if let Some(path) = arg.strip_prefix("--config=") {
            named = Some(PathBuf::from(path));
        } else if arg == "--config" {
            named = args.get(i + 1).map(PathBuf::from);
        }
    }
    named
        .or_else(|| std::env::var_os("SNAPTREE_CONFIG").map(PathBuf::from))
        .or_else(|| Path::new(DEFAULT).exists().then(|| PathBuf::from(DEFAULT)))
}

/// The environment variables the settings of `text` (the file at `path`) stand for,
/// given `known`, each flag's long name and its variable. Unknown names, and values that
/// are not strings, numbers, booleans or lists of them, are refused, naming them.
pub fn settings(
    path: &Path,
    text: &str,
    known: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{} is not valid TOML: {e}", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let Some(variable) = known.get(&key) else {
            return Err(format!(
                "{}: no flag is named {key:?} (a setting is a flag's long name, such as listen or database-url)",
                path.display()
            ));
        };
        let text = match &value {
            toml::Value::Array(items) => items
                .iter()
                .map(|v| scalar(&key, v))
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => scalar(&key, other)?,
        };
        out.push((variable.clone(), text));
    }
    Ok(out)
}

/// A setting's value as its variable holds it.
fn scalar(key: &str, value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!(
            "the setting {key:?} must be a string, a number, a boolean or a list of them"
        )),
    }
}

/// Each flag's long name and its environment variable, over `command` and its
/// subcommands (the same name reads the same variable wherever it appears).
pub fn known(command: &clap::Command) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![command];
    while let Some(c) = pending.pop() {
        for arg in c.get_arguments() {
            if let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) {
                out.insert(long.to_owned(), env.to_string_lossy().into_owned());
            }
        }
        pending.extend(c.get_subcommands());
    }
    out.remove("config");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeMap<String, String> {
        [
            ("listen", "SNAPTREE_LISTEN"),
            ("hosts", "SNAPTREE_HOSTS"),
            ("demo", "SNAPTREE_DEMO"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn settings_become_their_flags_variables() {
        let text = "listen = \"0.0.0.0:8080\"\nhosts = [\"kvm-1\", \"kvm-2\"]\ndemo = true\n";
        let mut got = settings(Path::new("f.toml"), text, &known()).unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                ("SNAPTREE_DEMO".to_string(), "true".to_string()),
                ("SNAPTREE_HOSTS".into(), "kvm-1,kvm-2".into()),
                ("SNAPTREE_LISTEN".into(), "0.0.0.0:8080".into()),
            ]
        );
    }

    #[test]
    fn unknown_names_and_tables_are_refused() {
        let err = settings(Path::new("f.toml"), "lisen = \"x\"", &known()).unwrap_err();
        assert!(err.contains("\"lisen\""), "{err}");
        let err = settings(Path::new("f.toml"), "listen = { a = 1 }", &known()).unwrap_err();
        assert!(err.contains("\"listen\""), "{err}");
        assert!(settings(Path::new("f.toml"), "listen = ", &known()).is_err());
    }

    #[test]
    fn the_file_is_the_flag_then_the_variable_then_the_default() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            locate(&args(&["snaptree", "serve", "--config", "/x.toml"])),
            Some(PathBuf::from("/x.toml"))
        );
        assert_eq!(
            locate(&args(&["snaptree", "--config=/y.toml", "serve"])),
            Some(PathBuf::from("/y.toml"))
        );
    }
}
