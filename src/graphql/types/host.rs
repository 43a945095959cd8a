//! A host and its health as this process's calls find it.

use super::*;

pub struct Host(pub models::Host);

/// A hypervisor server.
#[Object]
impl Host {
    async fn id(&self) -> ID {
        self.0.id.into()
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn hypervisor(&self) -> Hypervisor {
        self.0.hypervisor().into()
    }

    /// Most non-closed snapshots a VM of this host may have; null = no limit.
    async fn max_snapshots_per_vm(&self) -> Option<i32> {
        self.0.max_snapshots_per_vm
    }

    /// Tasks that may run on this host at once, across every robot; the rest wait in
    /// order.
    async fn max_concurrent_tasks(&self) -> i32 {
        self.0.max_concurrent_tasks
    }

    /// Whether snaptree's connections reach the host, as the robots last found it; null
    /// until a robot has called it.
    async fn health(&self, ctx: &Context<'_>) -> Result<Option<HostHealth>> {
        maybe(ctx, HealthOf(self.0.id))
            .await
            .map(|h| h.map(HostHealth))
    }

    /// The host's VMs that the caller may see, by id: `first` of them after `after`.
    async fn vms(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "DEFAULT_PAGE")] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<Vm>> {
        let page = Page::new(first, after.as_ref()).extend()?;
        let vms = list(ctx, VmsOn(self.0.id)).await?;
        Ok(page.of(&vms, |v| v.id, Vm))
    }
}

pub struct HostHealth(pub models::HostHealth);

/// A host's health: whether it answers now, since when, and the last failure to reach it.
#[Object]
impl HostHealth {
    /// Whether the host answered the last call.
    async fn reachable(&self) -> bool {
        self.0.reachable
    }

    /// When it last became reachable, or unreachable.
    async fn since(&self) -> DateTime<Utc> {
        at(self.0.since)
    }

    /// The last failure to reach the host, kept after it recovers (ADMIN only: it names
    /// the infrastructure behind the host; null for other tokens).
    async fn last_error(&self, ctx: &Context<'_>) -> Option<&str> {
        let caller = ctx.data_unchecked::<Caller>();
        caller
            .is_admin()
            .then_some(self.0.last_error.as_deref())
            .flatten()
    }
}
