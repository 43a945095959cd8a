//! Unit tests of `kvm`.

use super::*;

fn failure(stderr: &str) -> Failure {
    Failure::from_lines(stderr.lines())
}

#[test]
fn sorts_virsh_failures() {
    let down = failure(
        "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n",
    );
    assert!(matches!(down.into_error("vm"), DriverError::Unreachable(_)));
    let remote = failure(
        "error: failed to connect to the hypervisor\nerror: Cannot recv data: ssh: connect to host h port 22: Connection refused\n",
    );
    assert!(matches!(
        remote.into_error("vm"),
        DriverError::Unreachable(_)
    ));
    let shell = failure(
        "error: Failed to reconnect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory",
    );
    assert!(matches!(
        shell.into_error("vm"),
        DriverError::Unreachable(_)
    ));
    let busy = failure("error: Timed out during operation: cannot acquire state change lock");
    assert!(matches!(busy.into_error("vm"), DriverError::Transient(_)));
    let missing = failure("error: failed to get domain 'web'\n");
    assert_eq!(
        missing.into_error("web"),
        DriverError::NoSuchVm(
            "the host has no VM named \"web\" (failed to get domain 'web')".into()
        )
    );
    assert!(
        failure("error: Domain snapshot not found: no domain snapshot with matching name 'S'")
            .no_snapshot()
    );
}

#[test]
fn maps_domain_states() {
    assert_eq!(CAPABILITIES.state("running"), vm_state::RUNNING);
    assert_eq!(CAPABILITIES.state("shut off"), vm_state::QUIESCED);
    assert_eq!(CAPABILITIES.state("paused"), vm_state::RUNNING);
}

#[test]
fn shell_lines_quote_every_argument_and_refuse_what_would_end_a_quote() {
    assert_eq!(
        shell_line(&["domstate", "--domain", "web 1; list"]).unwrap(),
        "'domstate' '--domain' 'web 1; list'"
    );
    for bad in ["it's", "a\\b", "two\nlines"] {
        assert!(shell_line(&["domstate", bad]).is_err(), "{bad:?}");
    }
}

#[test]
fn of_every_character_from_1_to_255_only_printable_ascii_reaches_the_shell() {
    for code in 1u32..=255 {
        let c = char::from_u32(code).unwrap();
        let name = format!("a{c}b");
        let expected = (0x20..=0x7e).contains(&code) && c != '\\' && c != '\'';
        assert_eq!(shell_line(&[&name]).is_ok(), expected, "U+{code:04X}");
        assert_eq!(passable(&name).is_ok(), expected, "U+{code:04X}");
    }
}

#[test]
fn answers_drop_the_shells_prompts() {
    let text = "\nvirsh # 'domstate' '--domain' 'web'\nrunning\nvirsh # echo 'SNAPTREE-END-''3'\n";
    assert_eq!(answer_lines(text), ["running"]);
    // snapshot-parent's answer ends without a newline: the next prompt follows it.
    let glued = "virsh # 'snapshot-parent' '--domain' 'web' '--snapshotname' 'b'\navirsh # echo 'SNAPTREE-END-''4'\n";
    assert_eq!(answer_lines(glued), ["a"]);
}
