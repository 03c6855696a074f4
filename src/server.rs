//! `crmsearch serve`: the HTTP API with graceful shutdown, behind an
//! accept loop of its own that bounds what a connection may hold: the time
//! to send a request's headers (and to send the next one on a kept-alive
//! connection), and how many connections are open, in all and per client
//! address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::api::{AppState, app};
use crate::config::Config;
use crate::db::Database;

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// `crmsearch serve`: opens the database and serves.
pub async fn serve(cfg: Config) -> Result<()> {
    let db = Database::open(&cfg)
        .await
        .context("cannot open the database")?;
    run(db, cfg, |_| {}).await
}

/// Serves until SIGINT/SIGTERM, finishing the requests in flight, then
/// closes the database. `on_listening` gets the URL once the port is bound.
pub async fn run(db: Database, cfg: Config, on_listening: impl FnOnce(&str)) -> Result<()> {
    let listener = match TcpListener::bind(cfg.addr).await {
        Ok(l) => l,
        Err(e) => {
            db.close().await;
            return Err(e)
                .with_context(|| format!("cannot listen on {} (CRMSEARCH_ADDR)", cfg.addr));
        }
    };
    let indexer = match indexer::Indexer::start(cfg.indexer(&db.url), db.pool.clone()).await {
        Ok(i) => i,
        Err(e) => {
            db.close().await;
            return Err(e).context("cannot start the indexer");
        }
    };
    let url = format!("http://{}", listener.local_addr()?);
    let state = AppState::new(db.pool.clone(), cfg).with_indexer(indexer.clone());
    let key_changes = tokio::spawn(crate::auth::listen_for_key_changes(
        db.pool.clone(),
        state.keys.clone(),
    ));
    tracing::info!(%url, "listening");
    on_listening(&url);
    let limits = ConnLimits::of(&state.cfg);
    let result = serve_http(listener, app(state), limits, shutdown_signal()).await;
    key_changes.abort();
    // the last durable commit, then the database
    indexer.shutdown().await;
    db.close().await;
    result.context("the HTTP server failed")
}

/// The most a connection buffers while reading.
pub const READ_BUFFER: usize = 64 << 10;

/// What one connection may hold (see `Config`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// The longest a client may take to send a request's headers, counted
    /// from the connection's start or from the previous answer: a
    /// kept-alive connection idle this long is closed too.
    pub header_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub max: usize,
    /// Connections open at once from one client address (0: no bound).
    pub per_client: usize,
}

impl ConnLimits {
    pub fn of(cfg: &Config) -> Self {
        Self {
            header_timeout: Duration::from_millis(cfg.header_timeout_ms),
            max: cfg.max_connections,
            per_client: cfg.max_connections_per_client,
        }
    }
}

/// Open connections, in all and by client address.
#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// One admitted connection; leaving its count when dropped.
struct Admitted {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.by_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was refused, if it was.
fn admit(
    open: &Arc<Mutex<Open>>,
    limits: &ConnLimits,
    ip: IpAddr,
) -> Result<Admitted, &'static str> {
    let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
    if o.total >= limits.max {
        return Err(
            "the server has as many connections open as it accepts (max_connections); retry shortly",
        );
    }
    let mine = o.by_client.get(&ip).copied().unwrap_or(0);
    if limits.per_client > 0 && mine >= limits.per_client {
        return Err(
            "this client address has as many connections open as one client may (max_connections_per_client); reuse them, or retry after closing some",
        );
    }
    o.total += 1;
    *o.by_client.entry(ip).or_default() += 1;
    Ok(Admitted {
        open: open.clone(),
        ip,
    })
}

/// Answers a refused connection 503 (code `too_many_connections`,
/// `Retry-After`) without reading its request, and closes it.
async fn refuse(mut stream: TcpStream, why: &'static str) {
    let body =
        serde_json::json!({"error": {"code": "too_many_connections", "message": why}}).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes
/// the requests in flight (connections idle between requests are closed).
/// Every request carries the peer's [`ConnectInfo`].
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // what one connection buffers while reading (headers, body chunks):
        // 64 KiB, not hyper's ~400 KiB, times max_connections
        .max_buf_size(READ_BUFFER);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(Mutex::new(Open::default()));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // out of file descriptors, or a connection reset before
                    // it was accepted: wait a moment rather than spin
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admitted = match admit(&open, &limits, peer.ip()) {
            Ok(a) => a,
            Err(why) => {
                metrics::counter!("crmsearch_connections_refused_total").increment(1);
                tokio::spawn(refuse(stream, why));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                tower::ServiceExt::oneshot(router.clone(), req)
            });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection closed");
            }
            drop(admitted);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
