//! The one integration-test binary: every module runs against a real
//! Postgres with pgvector (the embedded one, shared by the whole run, each
//! test in its own database).

mod common;

mod api;
mod auth_matrix;
mod bad_input;
mod bulk;
mod cdc;
mod chaos;
mod crash;
mod embedded;
mod http;
mod limits;
mod mcp;
mod meili;
mod memories;
mod openapi;
mod ops;
mod redis;
mod search;
mod shards;
mod shared_cache;
mod surface;
