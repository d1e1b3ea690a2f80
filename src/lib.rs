//! Leadline: a lead server in one binary. It captures, cleans, dedupes, scores, routes and
//! converts sales leads, stores everything in an embedded redb file and serves a REST API.
//!
//! # Layout
//! - [`domain`]: pure types and rules (leads, activities, users, emails, phones). No I/O.
//! - [`store`]: redb tables, the group-commit writer, read snapshots, list queries, changelog,
//!   the webhook outbox.
//! - [`service`]: the lifecycle operations, run as jobs on the writer; background workers
//!   (scheduler, webhook delivery) and the live-event feed.
//! - [`api`]: the HTTP layer (axum): extractors, problem+json errors, one router per resource,
//!   the generated OpenAPI document.
//! - [`config`]: layered configuration (defaults → file → environment → flags).
//! - [`clock`]: injected time.
//! - [`startup`]: building and running the server (used by the binary and by tests).
//! - [`transfer`]: CSV/NDJSON import rows and export writers.
//! - [`script`]: the Rhai plugin runtime: hooks, limits, reload, the built-in fallbacks.
//! - [`search`]: the tantivy index derived from the store, its analyzer, queries and indexer.
//! - [`cli`]: the `leadline` command line (bulk commands in `cli_transfer`).
//! - [`bench`]: load generators for `leadline bench` (`bench_webhooks`: the delivery worker).

pub mod api;
pub mod bench;
mod bench_nurture;
mod bench_score;
mod bench_search;
mod bench_timers;
mod bench_webhooks;
pub mod cli;
mod cli_plugins;
mod cli_transfer;
pub mod clock;
pub mod config;
pub mod domain;
pub mod script;
pub mod search;
pub mod service;
pub mod startup;
pub mod store;
pub mod transfer;
