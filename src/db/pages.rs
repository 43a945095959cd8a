//! Pages of many scopes in one statement. A scope's page (its rows after a cursor, in id
//! order, at most so many) is its own `SELECT ... ORDER BY id LIMIT n` on an index that
//! starts with the scope, and the pages of a request's scopes are joined with `UNION
//! ALL`: what a request reads is what it returns, however long a VM's past.

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};

/// One scope's page: at most `first` rows of `scope`, either the oldest after a cursor
/// or the newest, and always handed back oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Page {
    /// The id of what the rows belong to (a task, a snapshot, a VM).
    pub scope: i64,
    /// Where the page is.
    pub at: At,
    /// The most rows on the page.
    pub first: i64,
}

/// Where in its scope a page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum At {
    /// The oldest rows with ids after this one (0: from the very first).
    After(i64),
    /// The newest rows.
    Newest,
}

impl Page {
    /// The oldest `first` rows of `scope` after `after` (`None`: from the first).
    pub fn oldest(scope: i64, after: Option<i64>, first: i64) -> Self {
        // Ids are positive, so "after 0" is "from the first row".
        let at = At::After(after.unwrap_or(0));
        Self { scope, at, first }
    }

    /// The newest `first` rows of `scope`.
    pub fn newest(scope: i64, first: i64) -> Self {
        let at = At::Newest;
        Self { scope, at, first }
    }

    /// The rows of `rows` (any order, any scopes, duplicates allowed) on this page,
    /// oldest first. A page's rows are consecutive in id order, so whatever other pages
    /// of the same scope brought, the first `first` from its end are this page's.
    pub fn pick<T: Clone>(
        &self,
        rows: &[T],
        scope: impl Fn(&T) -> i64,
        id: impl Fn(&T) -> i64,
    ) -> Vec<T> {
        let mut mine: Vec<&T> = rows
            .iter()
            .filter(|r| scope(r) == self.scope)
            .filter(|r| match self.at {
                At::After(after) => id(r) > after,
                At::Newest => true,
            })
            .collect();
        mine.sort_by_key(|r| id(r));
        mine.dedup_by_key(|r| id(r));
        let n = usize::try_from(self.first).unwrap_or(0);
        let skip = match self.at {
            At::After(_) => 0,
            At::Newest => mine.len().saturating_sub(n),
        };
        mine.into_iter().skip(skip).take(n).cloned().collect()
    }
}

/// Orders and bounds one page's query (a boxed select of a table with an `id`
/// column, already filtered to the page's scope): `page!(query, id_column, page)`.
macro_rules! page {
    ($query:expr, $id:expr, $page:expr) => {{
        let page: $crate::db::pages::Page = $page;
        let query = $query.limit(page.first);
        match page.at {
            $crate::db::pages::At::After(after) => query.filter($id.gt(after)).order($id.asc()),
            $crate::db::pages::At::Newest => query.order($id.desc()),
        }
    }};
}
pub(crate) use page;

/// Reads `pages` of a table, [`ARMS`] pages to a statement: `read_pages!(conn, pages,
/// table, scope_column, id_column, Row)`, each page's rows those whose `scope_column` is
/// its scope. Empty pages ask nothing.
macro_rules! read_pages {
    ($conn:expr, $pages:expr, $table:expr, $scope:expr, $id:expr, $row:ty) => {{
        let pages: &[$crate::db::pages::Page] = $pages;
        let mut rows: Vec<$row> = Vec::new();
        for chunk in pages.chunks($crate::db::pages::ARMS) {
            let read: diesel::QueryResult<Vec<$row>> = $crate::db::run!($conn, |c| {
                let arms = chunk
                    .iter()
                    .map(|p| {
                        let query = $table
                            .filter($scope.eq(p.scope))
                            .select(<$row>::as_select())
                            .into_boxed();
                        $crate::db::pages::page!(query, $id, *p)
                    })
                    .collect();
                $crate::db::pages::UnionAll(arms).load(c).await
            });
            rows.extend(read?);
        }
        Ok(rows)
    }};
}
pub(crate) use read_pages;

/// Most pages one statement reads: SQLite refuses a compound of more than 500 terms, and
/// a request may ask for many pages (a page per alias, per task, per snapshot).
pub const ARMS: usize = 200;

/// Queries of one row type joined with `UNION ALL`, each in a sub-select of its own so
/// that its `ORDER BY` and `LIMIT` apply to it alone (SQLite refuses them on a compound
/// member otherwise). Never empty: the callers answer an empty list themselves.
pub struct UnionAll<Q>(pub Vec<Q>);

impl<Q, DB> QueryFragment<DB> for UnionAll<Q>
where
    DB: Backend,
    Q: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        for (i, query) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_sql(" UNION ALL ");
            }
            out.push_sql("SELECT * FROM (");
            query.walk_ast(out.reborrow())?;
            out.push_sql(") AS page");
        }
        Ok(())
    }
}

impl<Q> QueryId for UnionAll<Q> {
    type QueryId = ();
    // The text depends on how many pages there are.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for UnionAll<Q> {
    type SqlType = Q::SqlType;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_picked_from_rows_other_pages_brought_too() {
        // (scope, id): the rows three pages of scope 1 and one of scope 2 brought.
        let rows = [
            (1, 2),
            (1, 3),
            (2, 4),
            (1, 5),
            (1, 3),
            (1, 7),
            (1, 5),
            (1, 9),
        ];
        let first_two = Page::oldest(1, None, 2);
        let after_three = Page::oldest(1, Some(3), 3);
        let newest_two = Page::newest(1, 2);
        let ids = |page: Page| -> Vec<i64> {
            page.pick(&rows, |r| r.0, |r| r.1)
                .into_iter()
                .map(|r| r.1)
                .collect()
        };
        assert_eq!(ids(first_two), [2, 3]);
        assert_eq!(ids(after_three), [5, 7, 9]);
        assert_eq!(ids(newest_two), [7, 9]);
        assert_eq!(ids(Page::newest(2, 5)), [4]);
        assert_eq!(ids(Page::oldest(2, None, 0)), Vec::<i64>::new());
    }
}
