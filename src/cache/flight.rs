//! Single flight: concurrent misses of one key share one load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::metrics::Freshness;
use super::value::Shared;

/// The outcome of a shared load: the value, or the load's error (of the caller's error type, which each
/// waiter takes back with `downcast_ref` and shares).
pub(super) type Flight = Result<(Shared, Freshness), Arc<dyn std::any::Any + Send + Sync>>;

/// Loads in progress, by key and epoch: the shared cell and how many callers are waiting on it.
pub(super) type Flights = Mutex<HashMap<String, (Arc<OnceCell<Flight>>, usize)>>;

/// One caller's share of a flight. Dropping it removes the flight from the map once the load is done, or
/// when it was the last caller waiting: a load whose callers were all cancelled (deadline, reset stream) or
/// that panicked must not leave its entry behind.
pub(super) struct FlightGuard<'a> {
    flights: &'a Flights,
    key: String,
    pub(super) cell: Arc<OnceCell<Flight>>,
}

impl<'a> FlightGuard<'a> {
    /// Joins the flight for `key`, starting one if none is in progress.
    pub(super) fn join(flights: &'a Flights, key: String) -> Self {
        let mut map = flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (cell, callers) = map.entry(key.clone()).or_insert_with(|| (Arc::new(OnceCell::new()), 0));
        *callers += 1;
        let cell = cell.clone();
        FlightGuard { flights, key, cell }
    }

    /// Whether a load for `key` is already in progress (a refresh need not start another).
    pub(super) fn in_progress(flights: &Flights, key: &str) -> bool {
        flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(key)
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((cell, callers)) = map.get_mut(&self.key)
            && Arc::ptr_eq(cell, &self.cell)
        {
            *callers -= 1;
            if *callers == 0 || cell.initialized() {
                map.remove(&self.key);
            }
        }
    }
}
