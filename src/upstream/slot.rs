//! The one reusable connection of an upstream, opened at most once at a time.
//!
//! A burst of queries arriving while there is no connection must open one connection, not
//! one each; and a query that gives up (its deadline passed, or another upstream answered
//! first) must not abandon a half-made TLS handshake that the next query would redo. So the
//! connection is made by a spawned task that holds the connect lock until it is done and
//! stores what it made, whoever is still waiting for it.

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::UpstreamError;

/// A shared, lazily (re)opened connection handle `C`.
pub struct Slot<C> {
    /// The current connection, if any.
    current: Arc<Mutex<Option<C>>>,
    /// Held by the task that is connecting.
    connecting: Arc<tokio::sync::Mutex<()>>,
    /// Whether a stored connection can still be used.
    usable: fn(&C) -> bool,
}

impl<C: Clone + Send + 'static> Slot<C> {
    /// An empty slot; `usable` says whether a stored connection is still alive.
    pub fn new(usable: fn(&C) -> bool) -> Slot<C> {
        Slot {
            current: Arc::new(Mutex::new(None)),
            connecting: Arc::new(tokio::sync::Mutex::new(())),
            usable,
        }
    }

    /// The live connection, without connecting.
    pub fn current(&self) -> Option<C> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|c| (self.usable)(c)).cloned()
    }

    /// The live connection, or a new one made by the future `connect` returns; the flag is
    /// true if it is new. `connect` is only called when a connection must be made: a
    /// connecting future (TLS and HTTP/2 handshakes) is large, and taken by value it would
    /// make every query's future as large, live or not, costing kilobytes per query in flight.
    pub async fn get_or_connect<F, Fut>(&self, connect: F) -> Result<(C, bool), UpstreamError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<C, UpstreamError>> + Send + 'static,
    {
        if let Some(c) = self.current() {
            return Ok((c, false));
        }
        let guard = self.connecting.clone().lock_owned().await;
        if let Some(c) = self.current() {
            return Ok((c, false));
        }
        let current = self.current.clone();
        let task = tokio::spawn(async move {
            let _guard = guard;
            let conn = connect().await?;
            *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
            Ok::<C, UpstreamError>(conn)
        });
        let conn = task.await.map_err(|_| UpstreamError::Closed)??;
        Ok((conn, true))
    }

    /// Drops the stored connection after a failure on it; the next query reconnects.
    pub fn forget(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
