//! crmsearch: search and vector retrieval for CRM data. Postgres is the
//! source of truth; the index follows it by logical replication.

pub mod api;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod db;
pub mod demo;
pub mod embed;
pub mod embedded_pg;
pub mod error;
pub mod ingest;
pub mod jobs;
pub mod limits;
pub mod ops;
pub mod pg_health;
pub mod redis_conn;
pub mod retrieve;
pub mod search;
pub mod seed;
pub mod server;
pub mod store;
pub mod telemetry;
