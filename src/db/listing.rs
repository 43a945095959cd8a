//! Lists a caller filters, orders and pages (CloudCIX's list routes): snapshots and
//! snapshot history. A list has a fixed set of fields, each written into SQL here and
//! nowhere else; what the caller chose is only ever a bound value. The statements are
//! never kept prepared (their text changes with the filters).

use chrono::NaiveDateTime;
use diesel::QueryableByName;
use diesel::result::QueryResult;
use diesel::sql_types::{BigInt, Bool, Text, Timestamp};
use diesel_async::RunQueryDsl;

use super::Conn;
use super::models::{HistoryEntry, Snapshot};

/// How a condition compares its field with its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Exact,
    In,
    IContains,
    IEndsWith,
    IExact,
    IStartsWith,
    Gt,
    Gte,
    Lt,
    Lte,
    Range,
    IsNull,
}

/// A value a condition compares with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Number(i64),
    Flag(bool),
    Time(NaiveDateTime),
}

/// One condition on a list's rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition<F> {
    /// The field compared.
    pub field: F,
    /// How it is compared with `values`.
    pub op: Op,
    /// One value, two for `Range`, any number for `In`; for `IsNull`, whether null.
    pub values: Vec<Value>,
    /// The rows that do not match (a null field matches no condition, so a row with one
    /// is kept: Django's `exclude`).
    pub negated: bool,
}

/// A page of a list.
#[derive(Clone, Debug)]
pub struct Listing<F> {
    /// All must hold.
    pub conditions: Vec<Condition<F>>,
    /// The field rows are ordered by; their id breaks ties.
    pub order: F,
    /// Largest first (`-field` in CloudCIX's `order`).
    pub descending: bool,
    /// Rows on the page at most (`LIMIT`).
    pub limit: i64,
    /// Rows skipped before the page (`OFFSET`; the REST routes pass page times `limit`).
    pub offset: i64,
}

/// A list's fields, as SQL.
pub trait Field: Copy {
    /// The expression the field compares as.
    fn sql(self) -> &'static str;
    /// The expression the field orders by.
    fn order_sql(self) -> &'static str {
        self.sql()
    }
}

/// What a snapshot can be listed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotField {
    Id,
    ParentId,
    State,
    VmId,
    ProjectId,
    /// The VM's host.
    HostId,
    Active,
    RemoveSubtree,
    Name,
    VmName,
    ProjectName,
    /// The creation time as the database writes it in text.
    Created,
    /// A field snaptree does not have (CloudCIX's addresses and regions): null on every
    /// row.
    Unrecorded,
}

impl Field for SnapshotField {
    fn sql(self) -> &'static str {
        match self {
            Self::Id => "snapshots.id",
            Self::ParentId => "snapshots.parent_id",
            Self::State => "snapshots.state",
            Self::VmId => "snapshots.vm_id",
            Self::ProjectId => "vms.project_id",
            Self::HostId => "vms.host_id",
            Self::Active => "snapshots.active",
            Self::RemoveSubtree => "snapshots.remove_subtree",
            Self::Name => "snapshots.name",
            Self::VmName => "vms.name",
            Self::ProjectName => "projects.name",
            Self::Created => "CAST(snapshots.created_at AS TEXT)",
            Self::Unrecorded => "NULL",
        }
    }

    fn order_sql(self) -> &'static str {
        match self {
            Self::Created => "snapshots.created_at",
            other => other.sql(),
        }
    }
}

/// What history can be listed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryField {
    Id,
    SnapshotId,
    VmId,
    ProjectId,
    Created,
    /// A field snaptree does not record (CloudCIX's user ids and billing addresses): null
    /// on every row.
    Unrecorded,
}

impl Field for HistoryField {
    fn sql(self) -> &'static str {
        match self {
            Self::Id => "snapshot_history.id",
            Self::SnapshotId => "snapshot_history.snapshot_id",
            Self::VmId => "snapshot_history.vm_id",
            Self::ProjectId => "snapshot_history.project_id",
            Self::Created => "snapshot_history.at",
            Self::Unrecorded => "NULL",
        }
    }
}

/// SQL text with its bound values, placeholders written for one backend.
struct Sql {
    /// The statement so far, with a placeholder where each bound value goes.
    text: String,
    /// The values bound, in placeholder order.
    binds: Vec<Value>,
    /// PostgreSQL numbers its placeholders; SQLite takes `?`.
    numbered: bool,
}

impl Sql {
    fn new(conn: &Conn<'_>, text: &str) -> Self {
        Self {
            text: text.to_owned(),
            binds: Vec::new(),
            numbered: matches!(conn, Conn::Pg(_)),
        }
    }

    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn bind(&mut self, value: Value) {
        self.binds.push(value);
        if self.numbered {
            self.text.push_str(&format!("${}", self.binds.len()));
        } else {
            self.text.push('?');
        }
    }

    /// ` AND <condition>` for each of `conditions`.
    fn conditions<F: Field>(&mut self, conditions: &[Condition<F>]) {
        for condition in conditions {
            self.push(" AND ");
            if condition.negated {
                self.push("NOT COALESCE((");
            } else {
                self.push("(");
            }
            self.condition(condition);
            self.push(if condition.negated { "), FALSE)" } else { ")" });
        }
    }

    /// `condition`'s test with its values bound, without its negation (`conditions` adds that).
    /// Long because it is a list: one arm per `Op`, each the SQL it writes.
    fn condition<F: Field>(&mut self, condition: &Condition<F>) {
        let field = condition.field.sql();
        let mut values = condition.values.iter().cloned();
        let mut next = || values.next().unwrap_or(Value::Flag(false));
        let compare = |sql: &mut Self, operator: &str, value: Value| {
            sql.push(field);
            sql.push(operator);
            sql.bind(value);
        };
        match condition.op {
            Op::Exact => compare(self, " = ", next()),
            Op::Gt => compare(self, " > ", next()),
            Op::Gte => compare(self, " >= ", next()),
            Op::Lt => compare(self, " < ", next()),
            Op::Lte => compare(self, " <= ", next()),
            Op::Range => {
                compare(self, " BETWEEN ", next());
                self.push(" AND ");
                self.bind(next());
            }
            Op::IsNull => {
                self.push(field);
                self.push(match next() {
                    Value::Flag(false) => " IS NOT NULL",
                    _ => " IS NULL",
                });
            }
            Op::In if condition.values.is_empty() => self.push("1 = 0"),
            Op::In => {
                self.push(field);
                self.push(" IN (");
                for (i, value) in condition.values.iter().enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.bind(value.clone());
                }
                self.push(")");
            }
            Op::IExact | Op::IContains | Op::IStartsWith | Op::IEndsWith => {
                let text = match next() {
                    Value::Text(text) => text,
                    _ => String::new(),
                };
                self.push("LOWER(");
                self.push(field);
                self.push(")");
                if condition.op == Op::IExact {
                    self.push(" = LOWER(");
                    self.bind(Value::Text(text));
                    self.push(")");
                    return;
                }
                let escaped = text
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                let pattern = match condition.op {
                    Op::IContains => format!("%{escaped}%"),
                    Op::IStartsWith => format!("{escaped}%"),
                    _ => format!("%{escaped}"),
                };
                self.push(" LIKE LOWER(");
                self.bind(Value::Text(pattern));
                self.push(") ESCAPE '\\'");
            }
        }
    }

    /// ` ORDER BY ... LIMIT ... OFFSET ...`, the rows' id breaking ties.
    fn page<F: Field>(&mut self, listing: &Listing<F>, id: &str) {
        let direction = if listing.descending { "DESC" } else { "ASC" };
        self.push(&format!(
            " ORDER BY {} {direction}, {id} {direction} LIMIT ",
            listing.order.order_sql()
        ));
        self.bind(Value::Number(listing.limit));
        self.push(" OFFSET ");
        self.bind(Value::Number(listing.offset));
    }

    async fn load<T>(self, conn: &mut Conn<'_>) -> QueryResult<Vec<T>>
    where
        T: QueryableByName<diesel::sqlite::Sqlite>
            + QueryableByName<diesel::pg::Pg>
            + Send
            + 'static,
    {
        macro_rules! bound {
            ($backend:ty) => {{
                let mut query = diesel::sql_query(self.text).into_boxed::<$backend>();
                for value in self.binds {
                    query = match value {
                        Value::Text(v) => query.bind::<Text, _>(v),
                        Value::Number(v) => query.bind::<BigInt, _>(v),
                        Value::Flag(v) => query.bind::<Bool, _>(v),
                        Value::Time(v) => query.bind::<Timestamp, _>(v),
                    };
                }
                query
            }};
        }
        match conn {
            Conn::Sqlite(c) => bound!(diesel::sqlite::Sqlite).load(&mut **c).await,
            Conn::Pg(c) => bound!(diesel::pg::Pg).load(&mut **c).await,
        }
    }
}

#[derive(QueryableByName)]
struct Total {
    /// How many rows match the conditions, ignoring the page.
    #[diesel(sql_type = BigInt)]
    total: i64,
}

/// A table and how a caller's scope and a row's id are named in it.
struct Source {
    /// `FROM ... WHERE 1 = 1`.
    from: &'static str,
    /// The rows' columns.
    rows: &'static str,
    /// The rows' id column, which breaks ties in the order.
    id: &'static str,
    /// The project column a caller's scope filters on.
    project: &'static str,
}

const SNAPSHOTS: Source = Source {
    from: " FROM snapshots JOIN vms ON vms.id = snapshots.vm_id \
           JOIN projects ON projects.id = vms.project_id WHERE 1 = 1",
    rows: "SELECT snapshots.*",
    id: "snapshots.id",
    project: "vms.project_id",
};

const HISTORY: Source = Source {
    from: " FROM snapshot_history WHERE 1 = 1",
    rows: "SELECT snapshot_history.*",
    id: "snapshot_history.id",
    project: "snapshot_history.project_id",
};

/// A page of `source`'s rows, in `project` only when given, and how many match in all.
async fn page_of<T, F: Field>(
    conn: &mut Conn<'_>,
    source: &Source,
    project: Option<i64>,
    listing: &Listing<F>,
) -> QueryResult<(Vec<T>, i64)>
where
    T: QueryableByName<diesel::sqlite::Sqlite> + QueryableByName<diesel::pg::Pg> + Send + 'static,
{
    let query = |conn: &Conn<'_>, head: &str| {
        let mut sql = Sql::new(conn, head);
        sql.push(source.from);
        if let Some(project) = project {
            sql.push(&format!(" AND {} = ", source.project));
            sql.bind(Value::Number(project));
        }
        sql.conditions(&listing.conditions);
        sql
    };
    let mut rows = query(conn, source.rows);
    rows.page(listing, source.id);
    let rows = rows.load::<T>(conn).await?;
    let total = query(conn, "SELECT COUNT(*) AS total")
        .load::<Total>(conn)
        .await?;
    Ok((rows, total.into_iter().next().map_or(0, |t| t.total)))
}

/// A page of snapshots, in `project` only when given, and how many match in all.
pub async fn snapshots(
    conn: &mut Conn<'_>,
    project: Option<i64>,
    listing: &Listing<SnapshotField>,
) -> QueryResult<(Vec<Snapshot>, i64)> {
    page_of(conn, &SNAPSHOTS, project, listing).await
}

/// A page of snapshot history, in `project` only when given, and how many rows match.
pub async fn history(
    conn: &mut Conn<'_>,
    project: Option<i64>,
    listing: &Listing<HistoryField>,
) -> QueryResult<(Vec<HistoryEntry>, i64)> {
    page_of(conn, &HISTORY, project, listing).await
}
