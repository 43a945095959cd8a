//! Host URIs, parsed rather than prefix-checked. libvirt reads options out of a URI's
//! query (`command=` picks the program it runs, `socket=` the path it connects to,
//! `keyfile=`, `no_verify=`, `netcat=`, `proxy=`, `mode=`, ...), so a URI is an
//! instruction to the robot's machine: only the parts snaptree needs are accepted, each
//! value checked, everything else refused naming the part, and drivers get the URI
//! rebuilt from what was checked, never the text a caller sent.

use std::fmt;

use super::hyperv::Target;
use super::sim::SimParams;
use crate::domain::Hypervisor;

/// The libvirt URI parameters snaptree accepts on a KVM host, with the values allowed.
/// `no_tty=1` keeps ssh from ever asking for a password on a terminal.
const KVM_PARAMETERS: &[(&str, &[&str])] = &[("no_tty", &["1"])];

/// A host's URI, checked.
#[derive(Clone, Debug, PartialEq)]
pub enum HostUri {
    /// libvirt's own URI (`qemu:///system`, `qemu+ssh://user@host/system`).
    Kvm(KvmUri),
    /// A Windows host's SSH target, where PowerShell runs.
    Hyperv(Target),
    /// The simulated host's behaviour (delays, failures).
    Sim(SimParams),
}

/// A libvirt URI of the QEMU driver: the local daemon, or one reached over SSH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmUri {
    /// `None`: the local libvirtd.
    pub remote: Option<Remote>,
    /// `system` or `session`.
    pub instance: &'static str,
    /// `no_tty=1`.
    pub no_tty: bool,
}

/// Where an SSH-reached host is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// The SSH user; `None`: ssh's own choice (its configuration, or the local user).
    pub user: Option<String>,
    /// A host name, an IPv4 address, or an IPv6 address kept in its brackets.
    pub host: String,
    /// The SSH port (never 0); `None`: ssh's default.
    pub port: Option<u16>,
}

impl HostUri {
    /// Parses `uri` for a host of kind `kind`; the message says what is wrong.
    pub fn parse(kind: Hypervisor, uri: &str) -> Result<Self, String> {
        if uri.contains('%') {
            return Err("percent-encoded characters are not accepted in a host's URI".into());
        }
        if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a host's URI has no spaces or control characters".into());
        }
        match kind {
            Hypervisor::Kvm => KvmUri::parse(uri).map(Self::Kvm),
            Hypervisor::Hyperv => {
                let (base, query) = split_query(uri)?;
                if let Some((name, _)) = parameters(query).next() {
                    return Err(format!(
                        "the URI parameter {name:?} is not allowed: a Hyper-V host's URI takes none"
                    ));
                }
                Target::parse(base).map(Self::Hyperv)
            }
            Hypervisor::Simulated => SimParams::parse(uri).map(Self::Sim),
        }
    }
}

impl HostUri {
    /// The URI to store: rebuilt from its checked parts (a simulated host's is its
    /// parameters, checked, as given).
    pub fn canonical(&self, given: &str) -> String {
        match self {
            Self::Kvm(kvm) => kvm.to_string(),
            Self::Hyperv(target) => target.to_string(),
            Self::Sim(_) => given.to_owned(),
        }
    }
}

impl KvmUri {
    fn parse(uri: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "a KVM host's URI is qemu:///system or qemu+ssh://user@host/system, not {uri:?}"
            )
        };
        let (base, query) = split_query(uri)?;
        let mut no_tty = false;
        for (name, value) in parameters(query) {
            let Some((_, allowed)) = KVM_PARAMETERS.iter().find(|(n, _)| *n == name) else {
                return Err(format!(
                    "the URI parameter {name:?} is not allowed: snaptree accepts only no_tty=1"
                ));
            };
            if !allowed.contains(&value) {
                return Err(format!(
                    "the URI parameter {name} may only be {}, not {value:?}",
                    allowed.join(" or ")
                ));
            }
            no_tty = true;
        }
        let (remote, path) = if let Some(path) = base.strip_prefix("qemu://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{uri:?} names a host: reach a remote libvirt with qemu+ssh://"
                ));
            }
            (None, path)
        } else if let Some(rest) = base.strip_prefix("qemu+ssh://") {
            let (authority, path) = rest.split_at(rest.find('/').ok_or_else(usage)?);
            (Some(Remote::parse(authority)?), path)
        } else {
            return Err(usage());
        };
        let instance = match path {
            "/system" => "system",
            "/session" => "session",
            _ => return Err(usage()),
        };
        Ok(Self {
            remote,
            instance,
            no_tty,
        })
    }
}

impl Remote {
    /// `[user@]host[:port]`: a user and a host name or address that no program could
    /// take for an option.
    fn parse(authority: &str) -> Result<Self, String> {
        let (user, address) = match authority.rsplit_once('@') {
            Some((user, address)) => (Some(user), address),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = address.strip_prefix('[') {
            let (host, rest) = v6
                .split_once(']')
                .ok_or_else(|| format!("{address:?} is not a host address"))?;
            if host.is_empty() || !host.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                return Err(format!("{host:?} is not an IPv6 address"));
            }
            (format!("[{host}]"), rest.strip_prefix(':'))
        } else {
            let (host, port) = match address.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            };
            let fine = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
            if host.is_empty() || host.starts_with(['-', '.']) || !host.chars().all(fine) {
                return Err(format!("{host:?} is not a host name or address"));
            }
            (host.to_owned(), port)
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("{p:?} is not a port"))
            })
            .transpose()?;
        let user = user
            .map(|u| {
                let fine = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
                if u.is_empty() || u.starts_with('-') || !u.chars().all(fine) {
                    Err(format!("{u:?} is not a user name"))
                } else {
                    Ok(u.to_owned())
                }
            })
            .transpose()?;
        Ok(Self { user, host, port })
    }
}

/// The URI as libvirt takes it, rebuilt from its checked parts.
impl fmt::Display for KvmUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.remote {
            None => write!(f, "qemu:///{}", self.instance)?,
            Some(remote) => {
                f.write_str("qemu+ssh://")?;
                if let Some(user) = &remote.user {
                    write!(f, "{user}@")?;
                }
                f.write_str(&remote.host)?;
                if let Some(port) = remote.port {
                    write!(f, ":{port}")?;
                }
                write!(f, "/{}", self.instance)?;
            }
        }
        if self.no_tty {
            f.write_str("?no_tty=1")?;
        }
        Ok(())
    }
}

/// Splits off the query; a fragment is refused.
fn split_query(uri: &str) -> Result<(&str, &str), String> {
    if uri.contains('#') {
        return Err("a host's URI has no fragment (#...)".into());
    }
    Ok(uri.split_once('?').unwrap_or((uri, "")))
}

/// The `name=value` pairs of a query (`value` empty when there is no `=`).
fn parameters(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvm(uri: &str) -> Result<String, String> {
        match HostUri::parse(Hypervisor::Kvm, uri)? {
            HostUri::Kvm(k) => Ok(k.to_string()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn accepts_what_snaptree_needs_and_rebuilds_it() {
        assert_eq!(kvm("qemu:///system").unwrap(), "qemu:///system");
        assert_eq!(
            kvm("qemu+ssh://snap@kvm-1.example:2222/system?no_tty=1").unwrap(),
            "qemu+ssh://snap@kvm-1.example:2222/system?no_tty=1"
        );
        assert_eq!(
            kvm("qemu+ssh://[::1]/session").unwrap(),
            "qemu+ssh://[::1]/session"
        );
    }

    #[test]
    fn refuses_every_other_libvirt_parameter_by_name() {
        for param in [
            "command=/tmp/x",
            "socket=/tmp/s",
            "keyfile=/root/.ssh/id",
            "no_verify=1",
            "netcat=/bin/nc",
            "proxy=netcat",
            "mode=legacy",
            "name=qemu:///system",
            "pkipath=/tmp",
            "known_hosts=/tmp/k",
            "sshauth=privkey",
        ] {
            let name = param.split('=').next().unwrap();
            for uri in [
                format!("qemu+ssh://localhost/system?{param}"),
                format!("qemu:///system?{param}"),
                format!("qemu+ssh://localhost/system?no_tty=1&{param}"),
                format!("qemu+ssh://localhost/system?no_tty=1;{param}"),
            ] {
                let err = kvm(&uri).unwrap_err();
                assert!(err.contains(&format!("{name:?}")), "{uri}: {err}");
            }
        }
        assert!(kvm("qemu+ssh://localhost/system?no_tty=0").is_err());
        assert!(kvm("qemu+ssh://localhost/system?comm%61nd=/x").is_err());
    }

    #[test]
    fn refuses_hosts_and_users_that_look_like_options() {
        for uri in [
            "qemu+ssh://-oProxyCommand=x/system",
            "qemu+ssh://u@-oProxyCommand=x/system",
            "qemu+ssh://-l@host/system",
            "qemu+ssh://host:0/system",
            "qemu+ssh://host:x/system",
            "qemu+ssh://ho st/system",
            "qemu+ssh://host/system#frag",
            "qemu+ssh://host/other",
            "qemu+tcp://host/system",
            "qemu+ext:///system",
            "qemu://host/system",
            "qemu:///system/../x",
            "xen:///system",
        ] {
            assert!(kvm(uri).is_err(), "{uri}");
        }
    }

    #[test]
    fn hyperv_uris_take_no_parameters() {
        let err = HostUri::parse(Hypervisor::Hyperv, "ssh://admin@hv1?ProxyCommand=x").unwrap_err();
        assert!(err.contains("\"ProxyCommand\""), "{err}");
        assert!(HostUri::parse(Hypervisor::Hyperv, "ssh://admin@hv1:2222").is_ok());
    }
}
