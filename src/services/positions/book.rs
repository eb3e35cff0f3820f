//! A user's book as the read RPCs share it: account, open positions and divergences, loaded in one statement
//! and cached once per user (`cache`), with each open position's price-independent fields already encoded, so
//! a positions list encodes only what prices change. Positions, guard status, drawdown and alerts all read it.

use std::sync::Arc;

use prost::Message;
use uuid::Uuid;

use super::fields::fixed_fields;
use crate::cache::{self, Freshness, Rpc};
use crate::services::{ApiError, AppState};
use crate::storage::{self, Book, Db};

/// Cache kind of a user's book.
const BOOK: &str = "book";

/// A user's book as cached, with each open position's price-independent fields already encoded (all but
/// `current_price`, `current_price_time` and the P&L fields), so serving a list encodes only what prices change.
#[derive(Debug)]
pub struct BookView {
    /// The book.
    pub book: Book,
    /// By position (same order as `book.positions`): the encoded price-independent fields.
    pub encoded: Vec<Vec<u8>>,
}

impl BookView {
    fn new(book: Book) -> Self {
        let encoded = book.positions.iter().map(|row| fixed_fields(row, &book.divergences).encode_to_vec()).collect();
        BookView { book, encoded }
    }
}

crate::postcard_cache_value!(Book, schema = 1);

impl cache::CacheValue for BookView {
    const SCHEMA: u16 = <Book as cache::CacheValue>::SCHEMA;

    fn encode(&self) -> Vec<u8> {
        cache::CacheValue::encode(&self.book)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        <Book as cache::CacheValue>::decode(bytes).map(BookView::new)
    }
}

impl AppState {
    /// The user's book, from cache or PostgreSQL (one statement).
    pub(in crate::services) async fn book(
        &self,
        rpc: Rpc,
        user_id: Uuid,
    ) -> Result<(Arc<BookView>, Freshness), ApiError> {
        let db = self.db.clone();
        let load = move || async move { load_book(db, user_id).await.map(BookView::new) };
        self.cache.get(rpc, user_id, BOOK, "", load).await
    }
}

/// Loads a user's book (one statement).
async fn load_book(db: Db, user_id: Uuid) -> Result<Book, ApiError> {
    Ok(db.run("book.load", storage::book::load(db.pool()?, user_id)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_layout_of_a_book_is_pinned_to_its_schema() {
        cache::assert_layout(&BookView::new(storage::book::sample()), 1, 0x9659_bf7a_066c_9662);
    }
}
