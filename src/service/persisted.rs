//! Automatic persisted queries, as Apollo's clients use them: a client sends a query's
//! SHA-256 alone, and its document only when the server does not know the hash yet.
//! Documents live in the database, so that every server sharing it knows a hash that
//! one of them was sent, and a few in each process's memory. Both are bounded: the
//! memory to [`CACHED`] documents, the database to the newest [`KEPT`] (retention
//! trims the rest). A document is stored only once it was admitted (it parsed and fit
//! the gate), so that a hash stands only for a document that can run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Service;
use crate::db;
use crate::error::AppResult;

/// The most documents each process keeps in memory.
const CACHED: usize = 1_000;
/// The most documents the database keeps.
pub const KEPT: i64 = 10_000;

/// This process's documents, by hash.
#[derive(Default)]
pub struct Cache(Mutex<HashMap<String, Arc<str>>>);

impl Cache {
    fn get(&self, hash: &str) -> Option<Arc<str>> {
        self.0.lock().expect("not poisoned").get(hash).cloned()
    }

    fn put(&self, hash: &str, document: Arc<str>) {
        let mut cached = self.0.lock().expect("not poisoned");
        if cached.len() >= CACHED && !cached.contains_key(hash) {
            // Any one goes: the database still has it.
            if let Some(gone) = cached.keys().next().cloned() {
                cached.remove(&gone);
            }
        }
        cached.insert(hash.to_owned(), document);
    }
}

/// The SHA-256 of `document`, in lower-case hex, as Apollo's clients send it.
pub fn hash_of(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

impl Service {
    /// The document sent before with hash `hash` (to any server on the database), if any.
    pub async fn persisted_query(&self, hash: &str) -> AppResult<Option<Arc<str>>> {
        if let Some(document) = self.core.persisted.get(hash) {
            return Ok(Some(document));
        }
        let mut conn = self.core.db.reader().await?;
        let Some(document) = db::persisted::document_of(&mut conn.conn(), hash).await? else {
            return Ok(None);
        };
        let document: Arc<str> = document.into();
        self.core.persisted.put(hash, Arc::clone(&document));
        Ok(Some(document))
    }

    /// Keeps `document` as the one of `hash` (its SHA-256, checked by the caller).
    pub async fn persist_query(&self, hash: &str, document: &str) -> AppResult<()> {
        if self.core.persisted.get(hash).is_some() {
            return Ok(());
        }
        let mut tx = self.core.db.begin().await?;
        let result = db::persisted::insert(&mut tx.conn(), hash, document)
            .await
            .map_err(crate::error::AppError::from);
        tx.finish(result).await?;
        self.core.persisted.put(hash, document.into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_apollos_and_the_cache_stays_bounded() {
        // Apollo's own example: the SHA-256 of "{__typename}".
        assert_eq!(
            hash_of("{__typename}"),
            "ecf4edb46db40b5132295c0291d62fb65d6759a9eedfa4d5d612dd5ec54a6b38"
        );
        let cache = Cache::default();
        for i in 0..CACHED + 50 {
            cache.put(&i.to_string(), "{a}".into());
        }
        assert_eq!(cache.0.lock().unwrap().len(), CACHED);
    }
}
