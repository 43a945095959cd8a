//! The configuration file (issue 31): every flag can be set in a TOML file by its long
//! name; the environment overrides the file, and a flag overrides both. Checked with
//! the binary itself: `snaptree migrate` makes its database where the winning setting
//! says.

use std::path::Path;
use std::process::{Command, Output};

fn snaptree(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snaptree"))
        .args(args)
        .env_remove("SNAPTREE_DATABASE_URL")
        .env_remove("SNAPTREE_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("snaptree runs")
}

fn url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(name).display())
}

#[test]
fn the_file_sets_flags_the_environment_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = d.join("snaptree.toml");
    std::fs::write(
        &file,
        format!(
            "database-url = \"{}\"\nlog-format = \"json\"\n",
            url(d, "from-file.db")
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();

    let out = snaptree(&["migrate", "--config", config], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.join("from-file.db").exists(), "the file's database");

    let env_url = url(d, "from-env.db");
    let out = snaptree(
        &["migrate"],
        &[
            ("SNAPTREE_CONFIG", config),
            ("SNAPTREE_DATABASE_URL", &env_url),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        d.join("from-env.db").exists(),
        "the environment over the file"
    );

    let flag_url = url(d, "from-flag.db");
    let out = snaptree(
        &["migrate", "--config", config, "--database-url", &flag_url],
        &[("SNAPTREE_DATABASE_URL", &env_url)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.join("from-flag.db").exists(), "the flag over both");
}

#[test]
fn a_setting_no_flag_has_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snaptree.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1\"\ndatabse-url = \"sqlite://x.db\"\n",
    )
    .unwrap();
    let out = snaptree(&["migrate", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"databse-url\""), "{err}");
    let out = snaptree(&["migrate", "--config", "/nonexistent/snaptree.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
}
