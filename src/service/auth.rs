//! Who is calling, and what they may do. A token belongs to one project and has a role:
//! ADMIN (everything, every project), OPERATOR (read and act on its project's VMs) or
//! VIEWER (read its project's VMs). A VM of another project does not exist for a caller.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Admin, Core, Service};
use crate::db::models::Actor;
use crate::db::models::{NewToken, Project, Token};
use crate::db::{self, Conn, Tx, projects, tokens};
use crate::domain::offer::Blocked;
use crate::domain::{Reason, Role, names};
use crate::error::{AppError, AppResult};

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's id.
    pub token_id: i64,
    /// The token's name: the actor in snapshot history.
    pub name: String,
    /// The token's project.
    pub project_id: i64,
    /// The token's role.
    pub role: Role,
    /// When the token stops being accepted; `None`: never.
    pub expires_at: Option<chrono::NaiveDateTime>,
    /// Why it acts, as the history of what it changes says: [`Reason::User`] for a
    /// token's own requests.
    pub reason: Reason,
}

/// The token id of snaptree's own work (no token has it: ids start at 1).
pub const SNAPTREE_TOKEN: i64 = 0;

impl Caller {
    /// snaptree itself, acting in project `project_id` as `name` for `reason` (the
    /// expiry sweep): an OPERATOR of that project that no revocation ends.
    pub fn snaptree(project_id: i64, name: &str, reason: Reason) -> Self {
        Self {
            token_id: SNAPTREE_TOKEN,
            name: name.to_owned(),
            project_id,
            role: Role::Operator,
            expires_at: None,
            reason,
        }
    }

    /// Whether this is snaptree's own work rather than a token's.
    pub fn is_snaptree(&self) -> bool {
        self.token_id == SNAPTREE_TOKEN
    }

    /// Who its changes are recorded as in snapshot history, and why.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            name: &self.name,
            reason: self.reason,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The one project the caller sees, or `None` for all of them (ADMIN).
    pub fn scope(&self) -> Option<i64> {
        (!self.is_admin()).then_some(self.project_id)
    }

    pub fn can_see(&self, project_id: i64) -> bool {
        self.is_admin() || self.project_id == project_id
    }

    /// Acting on snapshots: ADMIN or OPERATOR.
    pub fn require_operator(&self) -> AppResult<()> {
        if self.role.may_act() {
            Ok(())
        } else {
            Err(Blocked::Role.into())
        }
    }

    /// Administration: ADMIN only.
    pub fn require_admin(&self) -> AppResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AppError::forbidden(
                "administer snaptree (that needs ADMIN)",
            ))
        }
    }
}

/// Prefix of every token, so that secret scanners can recognise one.
const TOKEN_PREFIX: &str = "snaptree_";

/// A new random token: 256 bits from the operating system's generator.
fn generate_token() -> String {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the operating system's random generator works");
    format!("{TOKEN_PREFIX}{}", hex::encode(secret))
}

/// What is stored of a token. Tokens carry 256 random bits, so a fast hash is enough.
fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` has the form of a token this service makes.
fn well_formed(token: &str) -> bool {
    token
        .strip_prefix(TOKEN_PREFIX)
        .is_some_and(|secret| secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Tokens recently found unknown or revoked, by hash: asked again, they are refused
/// without a lookup. A token that was refused is never accepted later (a revocation is
/// final, and an unknown secret is never issued: tokens are random), so keeping one a
/// while is always right.
pub(crate) struct Rejected {
    /// Hash, and when it was found bad.
    seen: Mutex<HashMap<String, Instant>>,
}

impl Rejected {
    /// How long a refused token is remembered.
    const KEEP: Duration = Duration::from_secs(60);
    /// Most remembered at once (about 1 MiB): past it, the expired ones are dropped,
    /// and if none were, all of them (a flood of distinct tokens is held back by the
    /// addresses' budgets, not by this).
    const MOST: usize = 10_000;

    pub(crate) fn new() -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn contains(&self, hash: &str) -> bool {
        let seen = self.seen.lock().unwrap();
        seen.get(hash).is_some_and(|at| at.elapsed() < Self::KEEP)
    }

    fn insert(&self, hash: String) {
        let mut seen = self.seen.lock().unwrap();
        if seen.len() >= Self::MOST {
            seen.retain(|_, at| at.elapsed() < Self::KEEP);
            if seen.len() >= Self::MOST {
                seen.clear();
            }
        }
        seen.insert(hash, Instant::now());
    }
}

impl Service {
    /// The caller holding `token`, sent from `peer`, or UNAUTHENTICATED. An address
    /// that has failed too often is refused (RATE_LIMITED) before its token is looked
    /// at, and a token refused a moment ago is refused again without a lookup.
    pub async fn authenticate(&self, token: &str, peer: IpAddr) -> AppResult<Caller> {
        let throttle = &self.core.throttle;
        throttle.may_log_in(peer)?;
        let refused = || {
            throttle.failed_login(peer);
            Err(AppError::unauthenticated())
        };
        if !well_formed(token) {
            return refused();
        }
        let hash = hash_token(token);
        if self.core.rejected.contains(&hash) {
            return refused();
        }
        let found = tokens::by_hash(&mut self.core.db.reader().await?.conn(), &hash).await?;
        let now = self.core.clock.now_naive();
        match found {
            Some(token) if token.is_live_at(now) => Ok(Caller {
                token_id: token.id,
                name: token.name.clone(),
                project_id: token.project_id,
                role: token.role(),
                expires_at: token.expires_at,
                reason: Reason::User,
            }),
            _ => {
                self.core.rejected.insert(hash);
                refused()
            }
        }
    }

    /// Checks that `caller`'s token is still live, neither revoked nor expired (for
    /// connections that authenticated once and run many operations).
    pub async fn check_live(&self, caller: &Caller) -> AppResult<()> {
        let now = self.core.clock.now_naive();
        let mut pooled = self.core.db.reader().await?;
        let live = tokens::is_live(&mut pooled.conn(), caller.token_id, now).await?;
        if live {
            Ok(())
        } else {
            Err(AppError::revoked())
        }
    }
}

impl Core {
    /// Starts a write transaction on `caller`'s behalf, refused if its token has been
    /// revoked or has expired: nothing a token asks for runs after its revocation has
    /// committed, or after its end.
    pub(crate) async fn begin_for(&self, caller: &Caller) -> AppResult<Tx> {
        let mut tx = self.db.begin().await?;
        let now = self.clock.now_naive();
        match tokens::is_live(&mut tx.conn(), caller.token_id, now).await {
            Ok(true) => Ok(tx),
            Ok(false) => tx.finish(Err(AppError::revoked())).await,
            Err(err) => tx.finish(Err(err.into())).await,
        }
    }
}

impl Admin {
    /// A new token for project `project_id`, accepted until `expires_at` (for an
    /// OPERATOR or VIEWER token without one, the deployment's default lifetime); the
    /// secret is returned once, here.
    pub async fn create_token(
        &self,
        caller: &Caller,
        project_id: i64,
        name: &str,
        role: Role,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> AppResult<(Token, String)> {
        caller.require_admin()?;
        let name = names::name("token name", name)?;
        let now = self.core.clock.now();
        let expires_at = match expires_at {
            Some(at) if at <= now => {
                return Err(AppError::validation("expiresAt must be in the future."));
            }
            Some(at) => Some(at.naive_utc()),
            None if role == Role::Admin => None,
            None => self
                .core
                .limits
                .token_lifetime
                .and_then(|life| chrono::Duration::from_std(life).ok())
                .map(|life| (now + life).naive_utc()),
        };
        let mut tx = self.core.begin_for(caller).await?;
        let result = async {
            let mut conn = tx.conn();
            let project = projects::by_id(&mut conn, project_id)
                .await?
                .ok_or_else(|| AppError::not_found("project", project_id))?;
            insert_token(&mut conn, &project, &name, role, expires_at).await
        }
        .await;
        tx.finish(result).await
    }

    /// Revokes token `id`: true when it was live, false when already revoked.
    /// Its open connections, here and in other processes, are closed.
    pub async fn revoke_token(&self, caller: &Caller, id: i64) -> AppResult<bool> {
        caller.require_admin()?;
        let mut tx = self.core.begin_for(caller).await?;
        let result = async {
            let mut conn = tx.conn();
            if tokens::revoke(&mut conn, id).await? {
                Ok(true)
            } else if tokens::exists(&mut conn, id).await? {
                Ok(false) // already revoked
            } else {
                Err(AppError::not_found("token", id))
            }
        }
        .await;
        let revoked = tx.finish(result).await?;
        self.core.sessions.revoke(id);
        Ok(revoked)
    }

    /// For the command line: a token for project `project`, created if new.
    pub async fn bootstrap_token(
        &self,
        project: &str,
        role: Role,
        name: &str,
    ) -> AppResult<String> {
        let project = names::name("project name", project)?;
        let name = names::name("token name", name)?;
        let mut tx = self.core.db.begin().await?;
        let result = async {
            let mut conn = tx.conn();
            let project = match projects::by_name(&mut conn, &project).await? {
                Some(found) => found,
                None => projects::insert(&mut conn, &project).await?,
            };
            insert_token(&mut conn, &project, &name, role, None).await
        }
        .await;
        let (_, secret) = tx.finish(result).await?;
        Ok(secret)
    }
}

async fn insert_token(
    conn: &mut Conn<'_>,
    project: &Project,
    name: &str,
    role: Role,
    expires_at: Option<chrono::NaiveDateTime>,
) -> AppResult<(Token, String)> {
    let secret = generate_token();
    let hash = hash_token(&secret);
    let token = tokens::insert(
        conn,
        NewToken {
            project_id: project.id,
            name,
            role: role.as_str(),
            secret_hash: &hash,
            created_at: db::now(),
            expires_at,
        },
    )
    .await?;
    Ok((token, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert!(!hash_token(&a).contains(&a[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn roles_decide_what_a_caller_may_do() {
        let caller = |role| Caller {
            token_id: 1,
            name: "t".into(),
            project_id: 7,
            role,
            expires_at: None,
            reason: Reason::User,
        };
        assert_eq!(caller(Role::Admin).scope(), None);
        assert_eq!(caller(Role::Viewer).scope(), Some(7));
        assert!(caller(Role::Operator).can_see(7) && !caller(Role::Operator).can_see(8));
        assert_eq!(
            caller(Role::Viewer).require_operator().unwrap_err().code(),
            "FORBIDDEN"
        );
        assert_eq!(
            caller(Role::Operator).require_admin().unwrap_err().code(),
            "FORBIDDEN"
        );
    }
}
