//! The source stage: streams the publication `crmsearch` from the slot
//! `crmsearch_<node>` (pgoutput over the replication protocol), decodes it
//! and sends whole transactions; keepalives and heartbeat messages become
//! progress markers. Postgres is acknowledged up to the durable position
//! only.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use super::slot::{SlotRow, recreate_slot, slot_row};
use super::snapshot::snapshot;
use super::{Change, HEARTBEAT_PREFIX, IndexerConfig, Progress, Shared, SourceMsg};
use crate::Lsn;
use crate::pgoutput::Decoder;
use crate::pgoutput::Message;
use crate::rows::Table;
use crate::store::IndexStore;

/// The source stage. A lost connection is not a failure of the pipeline:
/// the index holds nothing it should not, so the stage reconnects on its own
/// (with backoff) from the written position, and the committer drops what
/// is sent again. It ends when the mapper is gone (a sibling failed) or at
/// stop.
pub(super) async fn run_source(
    sh: Arc<Shared>,
    tx: mpsc::Sender<SourceMsg>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let (cfg, pool, store, progress) = (&sh.cfg, &sh.pool, &sh.store, &sh.progress);
    let mut backoff = Duration::from_millis(100);
    loop {
        let start = progress.written();
        match stream_once(cfg, start, progress, &tx, &mut stop).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                progress.connected.store(false, Ordering::Release);
                progress.set_error(Some(format!("{e:#}")));
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "replication stream lost");
                tokio::select! {
                    rebuilt = rebuild_if_slot_lost(cfg, pool, store, progress, sh.shard.as_deref()) => {
                        if let Err(e) = rebuilt {
                            tracing::error!(error = %format!("{e:#}"), "rebuilding after the loss of the replication slot failed; retrying");
                        }
                    }
                    _ = stop.changed() => return Ok(()),
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if *stop.borrow() || tx.is_closed() {
            return Ok(());
        }
    }
}

/// When the slot is gone (dropped) or invalidated (`max_slot_wal_keep_size`),
/// the changes since the index's position can no longer be streamed: a new
/// slot, a snapshot into a new generation while the current one serves, a
/// swap, and the stream resumes from the new slot.
async fn rebuild_if_slot_lost(
    cfg: &IndexerConfig,
    pool: &PgPool,
    store: &Arc<IndexStore>,
    progress: &Arc<Progress>,
    shard: Option<&super::shard::ShardState>,
) -> Result<()> {
    let slot = cfg.slot();
    let row = slot_row(pool, &slot).await?;
    let lost = row.as_ref().is_none_or(SlotRow::lost);
    if !lost {
        return Ok(());
    }
    tracing::error!(
        %slot,
        state = if row.is_some() { "invalidated" } else { "dropped" },
        "THE REPLICATION SLOT IS LOST: changes since the index's position cannot be streamed; rebuilding the \
         index from a snapshot while the current one serves (set max_slot_wal_keep_size high enough, and keep \
         the indexer running)"
    );
    let consistent = recreate_slot(pool, &slot, row.is_some()).await?;
    let s = store.clone();
    let shadow = tokio::task::spawn_blocking(move || s.begin_shadow()).await??;
    let rebuilt = async {
        let (seen, tenants) =
            snapshot(pool, &shadow, consistent, None, None, cfg.shard.as_deref()).await?;
        let s = store.clone();
        tokio::task::spawn_blocking(move || {
            s.shadow_loaded()?;
            s.swap_shadow(consistent)
        })
        .await??;
        if let (Some(s), Some(tenants)) = (shard, tenants) {
            s.snapshot_ready(pool, &tenants, consistent, true).await?;
        }
        anyhow::Ok(seen)
    }
    .await;
    match rebuilt {
        Ok(seen) => {
            progress.replay_guard.store(seen.0, Ordering::Release);
            progress.set_written(consistent);
            progress.set_visible(consistent);
            metrics::counter!("crmsearch_slot_rebuilds_total").increment(1);
            tracing::warn!(%slot, lsn = %consistent, "index rebuilt after the slot loss; streaming from the new slot");
            Ok(())
        }
        Err(e) => {
            store.cancel_shadow();
            Err(e)
        }
    }
}

/// One replication session, until it fails or stop.
async fn stream_once(
    cfg: &IndexerConfig,
    start: Lsn,
    progress: &Arc<Progress>,
    tx: &mpsc::Sender<SourceMsg>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let mut client =
        ReplicationClient::connect(replication_config(cfg, start, progress.durable())?).await?;
    client.wait_started().await?;
    progress.connected.store(true, Ordering::Release);
    progress.set_error(None);
    tracing::info!(lsn = %start, "replication stream connected");
    let mut decoder = Decoder::default();
    let mut txn: Option<OpenTxn> = None;
    let mut ack = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            ev = client.recv() => {
                let Some(ev) = ev? else { bail!("the replication stream ended") };
                if let Some(msg) = on_event(ev, &mut decoder, &mut txn)?
                    && tx.send(msg).await.is_err()
                {
                    return Ok(());
                }
            }
            _ = ack.tick() => client.update_applied_lsn(pgwire_replication::Lsn::from_u64(progress.durable().0)),
            _ = shutdown.changed() => {
                client.update_applied_lsn(pgwire_replication::Lsn::from_u64(progress.durable().0));
                let _ = client.shutdown().await;
                return Ok(());
            }
        }
    }
}

/// The transaction being received: its id (for re-reads that must see it)
/// and its changes so far.
struct OpenTxn {
    xid: u32,
    changes: Vec<Change>,
}

fn micros_to_time(pg_micros: i64) -> Option<DateTime<Utc>> {
    // Postgres counts from 2000-01-01
    DateTime::from_timestamp_micros(pg_micros + 946_684_800_000_000)
}

fn on_event(
    ev: ReplicationEvent,
    decoder: &mut Decoder,
    txn: &mut Option<OpenTxn>,
) -> Result<Option<SourceMsg>> {
    Ok(match ev {
        ReplicationEvent::Begin { xid, .. } => {
            *txn = Some(OpenTxn {
                xid,
                changes: Vec::new(),
            });
            None
        }
        ReplicationEvent::XLogData { data, .. } => {
            let msg = decoder.decode(&data)?;
            let table_of =
                |rel: u32, d: &Decoder| d.relation(rel).and_then(|r| Table::from_name(&r.name));
            let placements = |rel: u32, d: &Decoder| {
                d.relation(rel)
                    .is_some_and(|r| r.name == super::shard::TENANT_SHARDS)
            };
            let change = match msg {
                Message::Relation(_) | Message::Ignored => None,
                Message::Insert { relation, new } | Message::Update { relation, new }
                    if placements(relation, decoder) =>
                {
                    let (tenant, p) = super::shard::Placement::from_tuple(&new)?;
                    Some(Change::Placement(tenant, Some(p)))
                }
                Message::Delete { relation, old } if placements(relation, decoder) => {
                    let tenant = schema::pgtext::uuid(&old, "tenant_id")
                        .map_err(|e| anyhow::anyhow!("placement delete: {e}"))?;
                    Some(Change::Placement(tenant, None))
                }
                Message::Insert { relation, new } => {
                    table_of(relation, decoder).map(|t| Change::Upsert(t, new, true))
                }
                Message::Update { relation, new } => {
                    table_of(relation, decoder).map(|t| Change::Upsert(t, new, false))
                }
                Message::Delete { relation, old } => match table_of(relation, decoder) {
                    Some(_) => {
                        let id = schema::pgtext::uuid(&old, "id")
                            .map_err(|e| anyhow::anyhow!("delete: {e}"))?;
                        Some(Change::Delete(id))
                    }
                    None => None,
                },
                Message::Truncate { relations } => {
                    let tables: Vec<Table> = relations
                        .iter()
                        .filter_map(|r| table_of(*r, decoder))
                        .collect();
                    (!tables.is_empty()).then_some(Change::Truncate(tables))
                }
            };
            if let (Some(c), Some(t)) = (change, txn.as_mut()) {
                t.changes.push(c);
            }
            None
        }
        ReplicationEvent::Commit {
            end_lsn,
            commit_time_micros,
            ..
        } => {
            let OpenTxn { xid, changes } = txn.take().unwrap_or(OpenTxn {
                xid: 0,
                changes: Vec::new(),
            });
            Some(SourceMsg::Txn {
                end_lsn: Lsn(end_lsn.as_u64()),
                xid,
                commit_time: micros_to_time(commit_time_micros),
                changes,
            })
        }
        ReplicationEvent::KeepAlive { wal_end, .. } if txn.is_none() => {
            Some(SourceMsg::Progress(Lsn(wal_end.as_u64())))
        }
        ReplicationEvent::Message {
            transactional: false,
            lsn,
            prefix,
            ..
        } if prefix == HEARTBEAT_PREFIX && txn.is_none() => {
            Some(SourceMsg::Progress(Lsn(lsn.as_u64())))
        }
        ReplicationEvent::KeepAlive { .. }
        | ReplicationEvent::Message { .. }
        | ReplicationEvent::StoppedAt { .. } => None,
    })
}

fn replication_config(cfg: &IndexerConfig, start: Lsn, ack: Lsn) -> Result<ReplicationConfig> {
    let url = url::Url::parse(&cfg.database_url).context("DATABASE_URL is not a URL")?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let user = decode(url.username());
    let password = url.password().map(decode).unwrap_or_default();
    let database = url.path().trim_start_matches('/').to_owned();
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        database,
        cfg.slot(),
        cfg.publication().as_str(),
    )
    .with_port(url.port().unwrap_or(5432))
    .with_tls(TlsConfig::disabled())
    .with_start_lsn(pgwire_replication::Lsn::from_u64(start.0))
    .with_ack_lsn(pgwire_replication::Lsn::from_u64(ack.0))
    .with_status_interval(Duration::from_secs(1))
    .with_wakeup_interval(Duration::from_secs(1))
    .with_application_name(format!("crmsearch {}", cfg.slot()))
    .with_options("-c TimeZone=UTC"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::testing::{relation_msg, text};
    use pgwire_replication::Lsn as PgLsn;

    fn xlog(data: Vec<u8>) -> ReplicationEvent {
        ReplicationEvent::XLogData {
            wal_start: PgLsn::from_u64(0),
            wal_end: PgLsn::from_u64(0),
            server_time_micros: 0,
            data: bytes::Bytes::from(data),
        }
    }

    fn relation() -> Vec<u8> {
        relation_msg(&["id"])
    }

    fn row(kind: u8, id: &str) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend(16384u32.to_be_bytes());
        m.push(if kind == b'D' { b'K' } else { b'N' });
        m.extend(1i16.to_be_bytes());
        text(&mut m, id);
        m
    }

    fn heartbeat(lsn: u64) -> ReplicationEvent {
        ReplicationEvent::Message {
            transactional: false,
            lsn: PgLsn::from_u64(lsn),
            prefix: HEARTBEAT_PREFIX.into(),
            content: bytes::Bytes::new(),
        }
    }

    #[test]
    fn whole_transactions_and_progress_markers() {
        let (mut d, mut txn) = (Decoder::default(), None);
        let mut ev = |e| on_event(e, &mut d, &mut txn).unwrap();
        let keepalive = |lsn| ReplicationEvent::KeepAlive {
            wal_end: PgLsn::from_u64(lsn),
            reply_requested: false,
            server_time_micros: 0,
        };
        assert!(matches!(
            ev(keepalive(100)),
            Some(SourceMsg::Progress(Lsn(100)))
        ));
        assert!(matches!(
            ev(heartbeat(110)),
            Some(SourceMsg::Progress(Lsn(110)))
        ));
        assert!(
            ev(ReplicationEvent::Begin {
                final_lsn: PgLsn::from_u64(200),
                xid: 1,
                commit_time_micros: 0,
            })
            .is_none()
        );
        let id = uuid::Uuid::new_v4().to_string();
        for e in [xlog(relation()), xlog(row(b'I', &id)), xlog(row(b'D', &id))] {
            assert!(ev(e).is_none(), "inside a transaction nothing is sent");
        }
        assert!(
            ev(keepalive(150)).is_none(),
            "no marker inside a transaction"
        );
        assert!(ev(heartbeat(160)).is_none());
        let Some(SourceMsg::Txn {
            end_lsn,
            xid,
            changes,
            ..
        }) = ev(ReplicationEvent::Commit {
            lsn: PgLsn::from_u64(200),
            end_lsn: PgLsn::from_u64(210),
            commit_time_micros: 0,
        })
        else {
            panic!("a transaction at its commit")
        };
        assert_eq!((end_lsn, xid), (Lsn(210), 1));
        assert!(matches!(
            changes[..],
            [Change::Upsert(Table::Contacts, _, true), Change::Delete(_)]
        ));
        let other = ReplicationEvent::Message {
            transactional: false,
            lsn: PgLsn::from_u64(300),
            prefix: "someone_else".into(),
            content: bytes::Bytes::new(),
        };
        assert!(
            ev(other).is_none(),
            "another program's messages are not ours"
        );
    }

    #[test]
    fn a_delete_without_a_uuid_is_an_error_not_a_skip() {
        let (mut d, mut txn) = (
            Decoder::default(),
            Some(OpenTxn {
                xid: 1,
                changes: Vec::new(),
            }),
        );
        on_event(xlog(relation()), &mut d, &mut txn).unwrap();
        assert!(on_event(xlog(row(b'D', "not-a-uuid")), &mut d, &mut txn).is_err());
    }
}
