//! `serve --demo`: a project, a simulated host and a few VMs, seeded once, and a fresh
//! token each start so that a newcomer can try everything at once.

use crate::domain::{Hypervisor, Role};
use crate::error::AppResult;
use crate::service::{Caller, Service};

/// The demo project's name.
pub const PROJECT: &str = "demo";
/// The demo host: slow enough that progress is visible.
const HOST: (&str, &str) = ("sim-1", "sim://?latency_ms=800");
const VMS: &[(&str, &str)] = &[
    ("web-1", "demo-web-1"),
    ("db-1", "demo-db-1"),
    ("build-1", "demo-build-1"),
];

/// Seeds the demo (unless the project exists) and returns a new OPERATOR token for it.
pub async fn seed(service: &Service) -> AppResult<String> {
    let token = service
        .admin()
        .bootstrap_token(PROJECT, Role::Operator, "demo")
        .await?;
    let operator = service
        .authenticate(&token, std::net::Ipv4Addr::LOCALHOST.into())
        .await?;
    // Seeding is administration; the demo acts as an ADMIN of its own project.
    let admin = Caller {
        role: Role::Admin,
        ..operator.clone()
    };
    let already = !service.reads().hosts(&operator).await?.is_empty();
    if !already {
        let host = service
            .admin()
            .create_host(&admin, HOST.0, Hypervisor::Simulated, HOST.1, None, None)
            .await?;
        for (name, identifier) in VMS {
            service
                .admin()
                .create_vm(&admin, host.id, operator.project_id, name, identifier)
                .await?;
        }
    }
    Ok(token)
}
