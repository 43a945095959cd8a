//! Why a task failed, in two voices. Snaptree's own words and a stable code are what every
//! token of the project sees; the host's own output (ssh's, virsh's, PowerShell's) may
//! name the infrastructure behind a host (host names, addresses, paths) that a tenant on
//! a shared host must not learn, so it is kept apart, for ADMIN tokens and the log.

/// A stable reason for a failed or cancelled task, for scripts to branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCode {
    /// The host, or the connection to it, could not be reached.
    HostUnreachable,
    /// The host was busy, or did not answer in time.
    HostBusy,
    /// The host refused the operation.
    HostRefused,
    /// The host has no such VM.
    NoSuchVm,
    /// The task's runs kept being cut short (its robots stopped or lost it).
    CutShort,
    /// Cancelled on request.
    Cancelled,
}

impl FailureCode {
    /// The code as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HostUnreachable => "HOST_UNREACHABLE",
            Self::HostBusy => "HOST_BUSY",
            Self::HostRefused => "HOST_REFUSED",
            Self::NoSuchVm => "NO_SUCH_VM",
            Self::CutShort => "CUT_SHORT",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// What it means, in a few words that never change.
    pub fn sentence(self) -> &'static str {
        match self {
            Self::HostUnreachable => "the host could not be reached",
            Self::HostBusy => "the host was busy or did not answer in time",
            Self::HostRefused => "the host refused the operation",
            Self::NoSuchVm => "the host has no such VM",
            Self::CutShort => "its runs were cut short",
            Self::Cancelled => "cancelled on request",
        }
    }
}

/// A failure: its code, snaptree's sentence for it, and what the host said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The stable reason.
    pub code: FailureCode,
    /// What tenants see: snaptree's words only.
    pub message: String,
    /// The host's own output, for ADMIN tokens and the log.
    pub detail: Option<String>,
}

impl Failure {
    /// A failure of `code`, in its own sentence, with what the host said.
    pub fn new(code: FailureCode, detail: Option<String>) -> Self {
        Self {
            code,
            message: code.sentence().to_owned(),
            detail,
        }
    }

    /// The same failure, its message preceded by `context` (snaptree's words).
    pub fn context(self, context: &str) -> Self {
        Self {
            message: format!("{context}: {}", self.message),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_sees_the_code_and_its_sentence_never_the_host() {
        let detail = "ssh: connect to host 10.1.2.3 port 22: Connection refused".to_owned();
        let failure = Failure::new(FailureCode::HostUnreachable, Some(detail.clone()))
            .context("gave up after 8 attempts");
        assert_eq!(
            failure.message,
            "gave up after 8 attempts: the host could not be reached"
        );
        assert_eq!(failure.code.as_str(), "HOST_UNREACHABLE");
        assert_eq!(failure.detail, Some(detail));
    }
}
