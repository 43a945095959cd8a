//! Unit tests of `sim`.

use std::time::Duration;

use super::*;

#[test]
fn parses_its_uri() {
    let p =
        SimParams::parse("sim://?latency_ms=50&fail_rate=0.1&flaky_rate=0.2&domains=a,b").unwrap();
    assert_eq!(p.latency, Duration::from_millis(50));
    assert_eq!((p.fail_rate, p.flaky_rate), (0.1, 0.2));
    assert_eq!(p.domains, ["a", "b"]);
    assert_eq!(SimParams::parse("sim://").unwrap(), SimParams::default());
    assert!(SimParams::parse("sim://?fail_rate=2").is_err());
    let p = SimParams::parse("sim://?fail_rate=1&fail_on=create,delete").unwrap();
    assert_eq!(p.fail_on, vec![Op::Create, Op::Delete]);
    assert!(SimParams::parse("sim://?fail_on=reboot").is_err());
    assert!(SimParams::parse("sim://?colour=red").is_err());
    assert!(SimParams::parse("qemu:///system").is_err());
}

fn names(d: &Domain) -> Vec<(String, Option<String>, bool)> {
    d.list()
        .into_iter()
        .map(|s| (s.name, s.parent, s.current))
        .collect()
}

fn s(name: &str) -> Option<String> {
    Some(name.to_owned())
}

#[test]
fn behaves_like_libvirt() {
    let mut d = Domain::new();
    d.create("a");
    d.create("b");
    d.create("b"); // idempotent
    d.current = s("a");
    d.create("c");
    // a -> {b, c}, current c
    d.delete("a", false);
    assert_eq!(
        names(&d),
        vec![("b".into(), None, false), ("c".into(), None, true)]
    );
    d.create("d");
    d.create("e");
    d.delete("c", true);
    assert_eq!(names(&d), vec![("b".into(), None, false)]);
    assert_eq!(d.current, None, "current was inside the deleted subtree");
    d.delete("zzz", false); // idempotent
}

#[tokio::test]
async fn keeps_its_state_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let host = SimDriver::new("sim://", dir.path()).unwrap();
    host.create("vm", "1_1", &Progress::ignore()).await.unwrap();
    host.create("vm", "1_2", &Progress::ignore()).await.unwrap();
    host.apply("vm", "1_1", &Progress::ignore()).await.unwrap();
    let again = SimDriver::new("sim://", dir.path()).unwrap();
    let list = again.list("vm").await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().any(|s| s.name == "1_1" && s.current));
    assert_eq!(
        again.apply("vm", "9_9", &Progress::ignore()).await,
        Err(DriverError::Permanent(
            "the host has no snapshot 9_9 of VM vm".into()
        ))
    );
}

#[tokio::test]
async fn journals_each_operation_as_it_begins_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let host = SimDriver::new("sim://?journal=1&latency_ms=400", dir.path()).unwrap();
    host.create("vm", "1_1", &Progress::ignore()).await.unwrap();
    // Dropped midway, as a robot cuts a call.
    let ignore = Progress::ignore();
    let cut = host.create("vm", "1_2", &ignore);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), cut)
            .await
            .is_err()
    );
    let failing = SimDriver::new("sim://?journal=1&fail_rate=1", dir.path()).unwrap();
    assert!(
        failing
            .delete("vm", "1_1", false, &Progress::ignore())
            .await
            .is_err()
    );
    let pid = std::process::id();
    let journal = std::fs::read_to_string(dir.path().join("journal.log")).unwrap();
    assert_eq!(
        journal,
        format!(
            "began create vm 1_1 {pid}\ndone create vm 1_1 {pid}\n\
             began create vm 1_2 {pid}\ncut create vm 1_2 {pid}\n\
             began delete vm 1_1 {pid}\nfailed delete vm 1_1 {pid}\n"
        )
    );
    // Nothing of the cut create reached the host.
    assert_eq!(host.list("vm").await.unwrap().len(), 1);
    // Hosts keep no journal unless asked.
    assert!(SimParams::parse("sim://?journal=yes").is_err());
    assert!(!SimParams::parse("sim://").unwrap().journal);
}

#[tokio::test]
async fn fails_as_told() {
    let dir = tempfile::tempdir().unwrap();
    let broken = SimDriver::new("sim://?fail_rate=1", dir.path()).unwrap();
    assert!(matches!(
        broken.create("vm", "1_1", &Progress::ignore()).await,
        Err(DriverError::Permanent(_))
    ));
    let flaky = SimDriver::new("sim://?flaky_rate=1", dir.path()).unwrap();
    assert!(matches!(
        flaky.create("vm", "1_1", &Progress::ignore()).await,
        Err(DriverError::Transient(_))
    ));
    // An outage, while its file is there.
    let down = SimDriver::new("sim://", dir.path()).unwrap();
    std::fs::write(dir.path().join(OUTAGE_FILE), "").unwrap();
    assert!(matches!(
        down.check().await,
        Err(DriverError::Unreachable(_))
    ));
    assert!(matches!(
        down.vm_state("vm").await,
        Err(DriverError::Unreachable(_))
    ));
    assert!(matches!(
        down.create("vm", "1_1", &Progress::ignore()).await,
        Err(DriverError::Unreachable(_))
    ));
    std::fs::remove_file(dir.path().join(OUTAGE_FILE)).unwrap();
    assert!(down.check().await.is_ok());
    // Nothing was created by the failed operations.
    let fine = SimDriver::new("sim://", dir.path()).unwrap();
    assert!(fine.list("vm").await.unwrap().is_empty());
}
