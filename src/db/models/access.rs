//! Projects and their tokens.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::*;
use crate::db::stamp::Stamp;
use crate::domain::Role;

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = projects)]
pub struct Project {
    /// Its id; tokens, VMs and policies belong to a project through it.
    pub id: i64,
    /// Unique among projects.
    pub name: String,
    /// When it was created (UTC, as every timestamp in these rows).
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// The most non-closed snapshots across the project's VMs; `None`: no quota.
    pub max_snapshots: Option<i32>,
    /// The longest a new snapshot lives, in hours: its expiry by default and at the
    /// latest; `None`: no maximum.
    pub max_lifetime_hours: Option<i32>,
}

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = tokens)]
pub struct Token {
    /// Its id; a policy acts as the token its `token_id` names.
    pub id: i64,
    /// The project it belongs to: the only one an OPERATOR or VIEWER token sees (an ADMIN
    /// token sees every project).
    pub project_id: i64,
    /// Who holds it, in words; not unique. Tasks and history name their caller by it
    /// (`requested_by`, `actor`).
    pub name: String,
    /// `ADMIN`, `OPERATOR` or `VIEWER` (a CHECK holds it to these); see [`Token::role`].
    pub role: String,
    /// Hex SHA-256 of the secret, which is never stored; a request's token is found by it.
    pub secret_hash: String,
    /// When it was made.
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    /// When it was revoked; `None`: not revoked. A revoked token is refused, and the
    /// policies that act as it make nothing.
    pub revoked_at: Option<NaiveDateTime>,
    /// When it stops being accepted; `None`: never.
    pub expires_at: Option<NaiveDateTime>,
}

impl Token {
    /// Whether it is accepted at `now`: neither revoked nor expired.
    pub fn is_live_at(&self, now: NaiveDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|end| end > now)
    }

    pub fn role(&self) -> Role {
        self.role
            .parse()
            .expect("tokens.role is checked by the database")
    }
}

#[derive(Insertable)]
#[diesel(table_name = tokens)]
pub struct NewToken<'a> {
    /// The project it belongs to.
    pub project_id: i64,
    /// Who holds it, in words.
    pub name: &'a str,
    /// `ADMIN`, `OPERATOR` or `VIEWER`.
    pub role: &'a str,
    /// Hex SHA-256 of the secret, which is never stored.
    pub secret_hash: &'a str,
    /// When it is made.
    pub created_at: NaiveDateTime,
    /// When it stops being accepted; `None`: never.
    pub expires_at: Option<NaiveDateTime>,
}
