//! A cap on the connections one listener holds open at once, and its accounting.
//!
//! Every listener (webhook, service API, ops) has a [`ConnectionLimit`] of its own, each with its
//! own semaphore: a flood on the API or ops port can never take a webhook slot, so the webhook
//! always keeps its whole reserve for the apiserver.
//!
//! At the cap the accept loop stops calling `accept()`. New connections then wait in the
//! kernel's listen backlog — the kernel finishes their TCP handshake, their TLS ClientHello waits
//! unanswered — and are taken in arrival order as open connections close. Nothing is accepted
//! only to be closed: a client that arrives during a short burst is served late rather than
//! refused, and the connections already open (the apiserver's long-lived HTTP/2 connections
//! among them) keep being served, because the process never runs out of file descriptors or
//! memory. A slot is held from `accept()` until the socket closes, TLS handshake included, so a
//! client that never finishes its handshake costs a slot only for the handshake timeout.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

use super::metrics::{ConnectionMetrics, ListenerConnections};

/// At most one "at the cap" warning per listener this often: a flood must not flood the log.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The cap of one listener. Not shared: one accept loop owns it.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    listener: &'static str,
    max: usize,
    permits: Arc<Semaphore>,
    metrics: ListenerConnections,
    /// Set when the loop had to wait for a slot; cleared when `accept()` finds the backlog
    /// empty. While set, every connection accepted was waiting for the cap, and is counted.
    backlogged: bool,
    last_warning: Option<Instant>,
}

/// One open connection's slot: frees it (and lowers the gauge) when dropped, however the
/// connection's task ends (closed, timed out, aborted at shutdown).
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl ConnectionLimit {
    /// A cap of `max` connections (at least 1) for the listener `name`, reported in `metrics`.
    pub(crate) fn new(name: &'static str, max: usize, metrics: &ConnectionMetrics) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            listener: name,
            max,
            permits: Arc::new(Semaphore::new(max)),
            metrics: metrics.listener(name, max),
            backlogged: false,
            last_warning: None,
        }
    }

    /// Waits for a free slot, then for a connection. Cancel-safe (for `select!`): a cancelled
    /// call holds no slot and loses no connection (`accept()` itself is cancel-safe).
    pub(crate) async fn accept(
        &mut self,
        listener: &TcpListener,
    ) -> io::Result<(TcpStream, SocketAddr, Slot)> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                self.backlogged = true;
                self.warn_at_cap();
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| io::Error::other("connection limit closed"))?
            }
            // The semaphore is never closed; should it be, say so rather than spin.
            Err(TryAcquireError::Closed) => {
                return Err(io::Error::other("connection limit closed"));
            }
        };
        let mut first_poll = true;
        let backlogged = &mut self.backlogged;
        let (tcp, peer) = poll_fn(|cx| {
            let poll = listener.poll_accept(cx);
            if first_poll && poll.is_pending() {
                // Nothing was waiting: the backlog the cap built up is gone.
                *backlogged = false;
            }
            first_poll = false;
            poll
        })
        .await?;
        if self.backlogged {
            self.metrics.deferred.inc();
        }
        self.metrics.open.inc();
        let slot = Slot {
            _permit: permit,
            open: self.metrics.open.clone(),
        };
        Ok((tcp, peer, slot))
    }

    fn warn_at_cap(&mut self) {
        let now = Instant::now();
        if self
            .last_warning
            .is_some_and(|last| now.duration_since(last) < WARN_EVERY)
        {
            return;
        }
        self.last_warning = Some(now);
        tracing::warn!(
            listener = self.listener,
            limit = self.max,
            "listener at its connection limit: new connections wait in the listen backlog \
             until open ones close (portico_connections_deferred_total counts them)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::metrics::Metrics;

    /// Two slots; a third connection waits until one closes, and is then counted as deferred.
    #[tokio::test]
    async fn a_connection_past_the_cap_waits_for_a_slot_and_is_counted() {
        let metrics = Metrics::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut limit = ConnectionLimit::new("webhook", 2, &metrics.connections);
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let (_s1, _, slot1) = limit.accept(&listener).await.unwrap();
        let (_s2, _, _slot2) = limit.accept(&listener).await.unwrap();
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("portico_connections_open{listener=\"webhook\"} 2"),
            "{text}"
        );
        {
            // At the cap: the third is not accepted (bounded: the poll is tried once).
            let waiting = limit.accept(&listener);
            tokio::pin!(waiting);
            assert!(futures::poll!(waiting.as_mut()).is_pending());
        }
        drop(slot1);
        let accepted = tokio::time::timeout(Duration::from_secs(30), limit.accept(&listener))
            .await
            .unwrap();
        assert!(accepted.is_ok());
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("portico_connections_deferred_total{listener=\"webhook\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portico_connections_open{listener=\"webhook\"} 2"),
            "{text}"
        );
    }

    /// Once a wait at the cap is over and the backlog is found empty, later connections are
    /// not counted.
    #[tokio::test]
    async fn connections_after_the_backlog_emptied_are_not_counted() {
        let metrics = Metrics::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut limit = ConnectionLimit::new("ops", 1, &metrics.connections);
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let (_s1, _, slot) = limit.accept(&listener).await.unwrap();
        {
            // At the cap with nothing waiting.
            let waiting = limit.accept(&listener);
            tokio::pin!(waiting);
            assert!(futures::poll!(waiting.as_mut()).is_pending());
        }
        drop(slot);
        for _ in 0..3 {
            let waiting = limit.accept(&listener);
            tokio::pin!(waiting);
            // The backlog is empty: this poll clears the mark.
            assert!(futures::poll!(waiting.as_mut()).is_pending());
            let _client = TcpStream::connect(addr).await.unwrap();
            let accepted = tokio::time::timeout(Duration::from_secs(30), waiting)
                .await
                .unwrap();
            let (_server, _, slot) = accepted.unwrap();
            drop(slot);
        }
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("portico_connections_deferred_total{listener=\"ops\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("portico_connections_open{listener=\"ops\"} 0"),
            "{text}"
        );
    }
}
