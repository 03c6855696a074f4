//! `crmsearch serve`: the HTTP API with graceful shutdown.

use anyhow::{Context, Result};
use tokio::net::TcpListener;

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
    let result = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await;
    key_changes.abort();
    // the last durable commit, then the database
    indexer.shutdown().await;
    db.close().await;
    result.context("the HTTP server failed")
}
