//! The accept loop: a bounded number of HTTP/1.1 keep-alive connections, a
//! header-read timeout, and a graceful drain on shutdown.
//!
//! We run hyper directly instead of `axum::serve` because the latter has no
//! connection bound and no drain deadline; both are requirements here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metanode_core::limits::API_SHUTDOWN_DRAIN_MS_MAX;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::{AppState, router};

/// Why the server stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("api.connections_max must be at least 1")]
    NoConnections,
}

/// What happened during shutdown, for the agent's final log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeReport {
    pub connections_total: u64,
    /// Connections still busy when the drain deadline (or a second signal)
    /// hit; they were dropped mid-request.
    pub connections_aborted: usize,
}

/// Serve `state`'s routes on `listener` until `stop` resolves, then stop
/// accepting, let in-flight requests finish (idle keep-alive connections
/// close at once) for at most [`API_SHUTDOWN_DRAIN_MS_MAX`] or until
/// `stop_now` resolves, and return. The caller closes the store afterwards.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    stop: impl Future<Output = ()>,
    stop_now: impl Future<Output = ()>,
) -> Result<ServeReport, ServeError> {
    let connections_max = state.opts.connections_max;
    if connections_max == 0 {
        return Err(ServeError::NoConnections);
    }
    let header_timeout = state.opts.request_timeout();
    let metrics = state.metrics.clone();
    let app = router(state.clone());
    let permits = Arc::new(Semaphore::new(connections_max));
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    let mut connections_total = 0u64;
    let mut stop = std::pin::pin!(stop);

    loop {
        // Take a permit before accepting: at the bound, new connections wait
        // in the kernel's backlog instead of costing us memory.
        let permit = tokio::select! {
            biased;
            () = &mut stop => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE/ENFILE and aborted handshakes are transient;
                    // back off briefly rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        connections_total += 1;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "setting TCP_NODELAY failed");
        }
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        let metrics = metrics.clone();
        metrics.connections_total.inc();
        metrics.connections_open.inc();
        tasks.spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            metrics.connections_open.dec();
            drop(permit);
        });
    }

    drop(listener);
    state.set_draining();
    let open = tasks.len();
    tracing::info!(connections_open = open, "stopped accepting; draining");
    let drained = tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(Duration::from_millis(API_SHUTDOWN_DRAIN_MS_MAX)) => false,
        () = stop_now => false,
    };
    let mut connections_aborted = 0;
    if !drained {
        // Drop whatever is still running; a task finishing right now is not
        // counted as aborted.
        while let Some(done) = tasks.try_join_next() {
            drop(done);
        }
        connections_aborted = tasks.len();
        tasks.abort_all();
    }
    while tasks.join_next().await.is_some() {}
    Ok(ServeReport {
        connections_total,
        connections_aborted,
    })
}
