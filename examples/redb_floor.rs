//! How fast redb alone writes the rows of a lead on this machine: the floor under every figure
//! of `leadline bench ingest` and `bench import`.
//!
//! ```sh
//! cargo run --release --example redb_floor -- --leads 200000 --rows 43 --per-txn 22   # like ingest
//! cargo run --release --example redb_floor -- --leads 1000000 --rows 40 --per-txn 1000 # like import
//! ```
//!
//! It writes `--leads` leads of `--rows` rows each, spread over 24 tables as a lead's rows are,
//! `--per-txn` leads per write transaction, on one thread, with nothing else: no HTTP, no
//! parsing, no hooks, no encoding, no search index. Keys are 24 bytes and values 60, and every
//! key lands after the last one of its table (the cheapest order a B-tree can get) unless
//! `--random-percent` sends that share of the rows to random places, as email and
//! likely-duplicate keys go. Commits are `Durability::Immediate` (the sync inline, as stock redb
//! does it), or `--no-sync` to leave the sync out and count only the writer's own work.
//!
//! Whatever Leadline does per lead on top of this — the request, normalizing, the Rhai hooks,
//! the records' encoding, the search index — only lowers the figure, so a rate below a
//! benchmark's target here means that target cannot be met with this many rows per lead.

use clap::Parser;
use redb::{Durability, TableDefinition};
use std::time::Instant;

const TABLES: usize = 24;

#[derive(Parser)]
#[command(about = "redb's own write rate for a lead's rows on this machine")]
struct Args {
    /// Leads to write.
    #[arg(long, default_value_t = 200_000)]
    leads: usize,
    /// Rows per lead (Leadline writes ~43 per created lead, see README "Ingest").
    #[arg(long, default_value_t = 43)]
    rows: usize,
    /// Leads per write transaction (ingest's group commits hold ~16-48, an import chunk 1,000).
    #[arg(long, default_value_t = 22)]
    per_txn: usize,
    /// Share of rows, in percent, whose key lands at a random place in its table.
    #[arg(long, default_value_t = 0)]
    random_percent: usize,
    /// redb's page cache, MiB (Leadline's default `store.cache_mib`).
    #[arg(long, default_value_t = 256)]
    cache_mib: usize,
    /// Commit with `Durability::None`: no sync, only the writer's own work.
    #[arg(long)]
    no_sync: bool,
}

/// A 64-bit mix (splitmix64's finalizer) to scatter the random keys.
fn scatter(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.per_txn == 0 {
        return Err("--per-txn must be at least 1".into());
    }
    let dir = tempfile::tempdir()?;
    let db = redb::Builder::new()
        .set_cache_size(args.cache_mib << 20)
        .create(dir.path().join("floor.redb"))?;
    let names: Vec<String> = (0..TABLES).map(|t| format!("t{t}")).collect();
    let tables: Vec<TableDefinition<&[u8], &[u8]>> = names
        .iter()
        .map(|n| TableDefinition::new(n.as_str()))
        .collect();
    let value = [7u8; 60];
    let started = Instant::now();
    let mut commits = 0usize;
    for first in (0..args.leads).step_by(args.per_txn) {
        let mut txn = db.begin_write()?;
        txn.set_durability(if args.no_sync {
            Durability::None
        } else {
            Durability::Immediate
        })?;
        {
            let mut open = tables
                .iter()
                .map(|t| txn.open_table(*t))
                .collect::<Result<Vec<_>, _>>()?;
            for lead in first..(first + args.per_txn).min(args.leads) {
                for row in 0..args.rows {
                    let random = row * 100 < args.random_percent * args.rows;
                    let place = if random {
                        scatter((lead * 64 + row) as u64)
                    } else {
                        (lead as u64) << 8 | row as u64
                    };
                    let mut key = [0u8; 24];
                    key[..8].copy_from_slice(&place.to_be_bytes());
                    key[8..16].copy_from_slice(&(lead as u64).to_be_bytes());
                    key[16..].copy_from_slice(&(row as u64).to_be_bytes());
                    open[row % TABLES].insert(&key[..], &value[..])?;
                }
            }
        }
        txn.commit()?;
        commits += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "redb floor: {} leads x {} rows, {} leads a transaction ({commits} commits, {}), {}% of rows at random places: {secs:.1} s, {:.0} leads/s, {:.2} µs a row",
        args.leads,
        args.rows,
        args.per_txn,
        if args.no_sync { "no sync" } else { "durable" },
        args.random_percent,
        args.leads as f64 / secs,
        secs * 1e6 / (args.leads * args.rows) as f64
    );
    Ok(())
}
