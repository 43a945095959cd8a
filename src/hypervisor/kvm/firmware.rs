//! Whether libvirt takes internal snapshots of a domain, from its firmware. A UEFI guest
//! boots from pflash firmware whose variables (NVRAM) live in a file of their own:
//! libvirt refuses internal snapshots of such a domain ("internal snapshots of a VM with
//! pflash based firmware are not supported") until 10.9 (creating) and 10.10 (reverting
//! and deleting), and from then on only when the NVRAM file is qcow2, which can hold
//! the snapshot's copy of it.

/// The first libvirt that creates, reverts to and deletes internal snapshots of a
/// pflash guest (with qcow2 NVRAM).
pub const PFLASH_SNAPSHOTS: (u32, u32, u32) = (10, 10, 0);

/// The domain of `xml` (its `virsh dumpxml --inactive`) boots from pflash firmware.
pub fn pflash(xml: &str) -> bool {
    firmware(xml).is_some_and(|(pflash, _)| pflash)
}

/// Whether the domain of `xml` boots from pflash (UEFI) firmware, and whether its NVRAM
/// is a qcow2 file; `None` when `xml` is no domain.
fn firmware(xml: &str) -> Option<(bool, bool)> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let os = doc.descendants().find(|n| n.has_tag_name("os"))?;
    let child = |tag: &str| os.children().find(|n| n.has_tag_name(tag));
    let pflash = child("loader").and_then(|l| l.attribute("type")) == Some("pflash")
        || os.attribute("firmware") == Some("efi");
    let qcow2 = child("nvram").and_then(|n| n.attribute("format")) == Some("qcow2");
    Some((pflash, qcow2))
}

/// Why libvirt `daemon` (its version) cannot snapshot the domain of `xml` (its
/// `virsh dumpxml --inactive`); `None`: it can.
pub fn unsupported(xml: &str, daemon: Option<(u32, u32, u32)>) -> Option<String> {
    let (pflash, qcow2) = firmware(xml)?;
    if !pflash {
        return None;
    }
    let (major, minor, micro) = PFLASH_SNAPSHOTS;
    let version = match daemon {
        Some((a, b, c)) => format!("{a}.{b}.{c}"),
        None => "of unknown version".to_owned(),
    };
    match daemon {
        Some(v) if v >= PFLASH_SNAPSHOTS && qcow2 => None,
        Some(v) if v >= PFLASH_SNAPSHOTS => Some(
            "This VM boots with UEFI firmware whose variables (NVRAM) are not in a qcow2 file; \
             libvirt takes internal snapshots of such a VM only when they are. Convert its NVRAM \
             to qcow2 on the host to snapshot it here."
                .to_owned(),
        ),
        _ => Some(format!(
            "This VM boots with UEFI firmware, and its host's libvirt ({version}) takes no \
             internal snapshots of such a VM; libvirt {major}.{minor}.{micro} and later do \
             (with its NVRAM in a qcow2 file)."
        )),
    }
}

/// The daemon's version in `virsh version --daemon`'s answer ("Running against daemon:
/// 9.0.0").
pub fn daemon_version(answer: &str) -> Option<(u32, u32, u32)> {
    let line = answer
        .lines()
        .find(|l| l.trim_start().starts_with("Running against daemon:"))?;
    let mut parts = line.rsplit(':').next()?.trim().split('.');
    let mut next = || parts.next().and_then(|p| p.trim().parse::<u32>().ok());
    Some((next()?, next().unwrap_or(0), next().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIOS: &str = "<domain type='qemu'><name>a</name><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>";
    const UEFI: &str = "<domain type='qemu'><name>a</name><os><type arch='x86_64' machine='pc'>hvm</type>\
        <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\
        <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/a_VARS.fd</nvram></os></domain>";
    const UEFI_QCOW2: &str = "<domain type='kvm'><name>a</name><os firmware='efi'><type arch='x86_64'>hvm</type>\
        <nvram format='qcow2'>/var/lib/libvirt/qemu/nvram/a_VARS.qcow2</nvram></os></domain>";

    #[test]
    fn bios_guests_are_always_supported() {
        assert_eq!(unsupported(BIOS, Some((9, 0, 0))), None);
        assert!(!pflash(BIOS) && pflash(UEFI) && pflash(UEFI_QCOW2));
    }

    #[test]
    fn uefi_guests_need_libvirt_10_10_and_qcow2_nvram() {
        let old = unsupported(UEFI, Some((9, 0, 0))).unwrap();
        assert!(
            old.contains("libvirt (9.0.0)") && old.contains("10.10.0"),
            "{old}"
        );
        assert!(unsupported(UEFI, Some((10, 9, 0))).is_some());
        let raw = unsupported(UEFI, Some((10, 10, 0))).unwrap();
        assert!(raw.contains("not in a qcow2 file"), "{raw}");
        assert_eq!(unsupported(UEFI_QCOW2, Some((11, 0, 0))), None);
        assert!(unsupported(UEFI_QCOW2, Some((10, 0, 0))).is_some());
        assert!(
            unsupported(UEFI_QCOW2, None)
                .unwrap()
                .contains("unknown version")
        );
    }

    #[test]
    fn the_daemons_version_is_read_from_virsh() {
        let answer = "Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\n\
            Using API: QEMU 9.0.0\nRunning hypervisor: QEMU 7.2.22\nRunning against daemon: 9.0.0\n";
        assert_eq!(daemon_version(answer), Some((9, 0, 0)));
        assert_eq!(
            daemon_version("Running against daemon: 10.10"),
            Some((10, 10, 0))
        );
        assert_eq!(daemon_version("nothing"), None);
    }
}
