//! The store's floor: what durable writes cost below the HTTP API.
//!
//! The load tool (`benches/load`) measures hookd end to end; this bench
//! takes the API, the client and the receiver away and asks two questions
//! of the same disk in one run:
//!
//! - *raw sled*: one thread applying batches of B records (an ~800-byte
//!   value and a due-index key each, as hookd writes them) and calling the
//!   blocking `flush()` after each batch, the least any sled-based design
//!   pays per durable record; and, to see where that goes, the same without
//!   any flush, and with the record key alone;
//! - *hookd's store*: `Store::commit` of new deliveries from C concurrent
//!   committers, one delivery per commit (group commit makes the rounds),
//!   and of batches of 1,000;
//! - *outcomes*: what recording an attempt costs the store, as the
//!   dispatcher does it (read the record, add the attempt, commit it as
//!   delivered) from 32 concurrent tasks, the default per-host limit.
//!
//! ```text
//! cargo bench --bench store            # full counts
//! ```
//!
//! Every loop is bounded by a count and a deadline. The data dirs live
//! under `target/` (the real disk, not a tmpfs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookd::clock;
use hookd::id::DeliveryId;
use hookd::record::{Attempt, Delivery, State};
use hookd::store::{Change, Store, StoreOptions};

/// Stop any one measurement after this long, whatever its count.
const DEADLINE: Duration = Duration::from_secs(20);

/// Payload bytes per delivery, like the load tool's image-task callback.
const PAYLOAD_BYTES: usize = 600;

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let records = if full { 100_000 } else { 2_000 };
    let base = scratch_dir();
    println!("store floor: {records} records per measurement, data dirs under {}", base.display());

    for batch in [1, 64, 1000] {
        let count = if batch == 1 { records / 10 } else { records };
        let (done, elapsed) = raw_sled(&base, Raw { count, batch, flush: true, due_key: true });
        report(&format!("raw sled, batch {batch}, flush per batch"), done, elapsed);
    }
    let (done, elapsed) =
        raw_sled(&base, Raw { count: records, batch: 1000, flush: false, due_key: true });
    report("raw sled, batch 1000, no flush at all", done, elapsed);
    let (done, elapsed) =
        raw_sled(&base, Raw { count: records, batch: 1000, flush: true, due_key: false });
    report("raw sled, batch 1000, flush, record key only", done, elapsed);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for committers in [1, 64] {
        let count = if committers == 1 { records / 10 } else { records };
        let (done, elapsed) = runtime.block_on(store_inserts(&base, count, committers, 1));
        report(&format!("Store::commit, 1 per commit, {committers} committers"), done, elapsed);
    }
    let (done, elapsed) = runtime.block_on(store_inserts(&base, records, 4, 1000));
    report("Store::commit, 1000 per commit, 4 committers", done, elapsed);
    let (done, elapsed) = runtime.block_on(store_outcomes(&base, records, 32));
    report("outcomes: get + commit as delivered, 32 tasks", done, elapsed);
}

/// `target/tmp` (cargo's scratch dir for benches) or the current dir.
fn scratch_dir() -> PathBuf {
    let base = PathBuf::from(option_env!("CARGO_TARGET_TMPDIR").unwrap_or("."));
    std::fs::create_dir_all(&base).expect("create the scratch dir");
    base
}

fn report(what: &str, done: usize, elapsed: Duration) {
    let rate = done as f64 / elapsed.as_secs_f64();
    let micros = elapsed.as_secs_f64() * 1e6 / done as f64;
    println!("{what:<52} {rate:>10.0} records/s  {micros:>7.2} µs/record  ({done} records)");
}

/// One raw sled measurement.
struct Raw {
    count: usize,
    batch: usize,
    /// Call `flush()` after each batch.
    flush: bool,
    /// Write the due-index key beside each record.
    due_key: bool,
}

/// Raw sled: `count` records in batches of `batch`.
fn raw_sled(base: &std::path::Path, raw: Raw) -> (usize, Duration) {
    let Raw { count, batch, flush, due_key } = raw;
    let dir = tempfile::tempdir_in(base).unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 << 20)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let value = vec![b'x'; PAYLOAD_BYTES + 200];

    let started = Instant::now();
    let mut done = 0;
    while done < count && started.elapsed() < DEADLINE {
        let mut writes = sled::Batch::default();
        for _ in 0..batch {
            let id = DeliveryId::generate().to_bytes();
            let mut record_key = vec![b'd'];
            record_key.extend_from_slice(&id);
            let mut due = vec![b't'];
            due.extend_from_slice(&(clock::now_ms() + 3_600_000).to_be_bytes());
            due.extend_from_slice(&id);
            writes.insert(record_key, value.clone());
            if due_key {
                writes.insert(due, Vec::new());
            }
        }
        db.apply_batch(writes).unwrap();
        if flush {
            db.flush().unwrap();
        }
        done += batch;
    }
    (done, started.elapsed())
}

/// `committers` tasks, each committing `per_commit` new deliveries at a
/// time, `count` in all.
async fn store_inserts(
    base: &std::path::Path,
    count: usize,
    committers: usize,
    per_commit: usize,
) -> (usize, Duration) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let store = Store::open(dir.path(), &StoreOptions::small_with_cache(64 << 20)).unwrap();
    let each = count / committers;

    let started = Instant::now();
    let tasks: Vec<_> = (0..committers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while done < each && started.elapsed() < DEADLINE {
                    let changes = (0..per_commit).map(|_| insert(delivery())).collect();
                    store.commit(changes).await.unwrap();
                    done += per_commit;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task.await.unwrap();
    }
    (done, started.elapsed())
}

/// Stores `count` pending deliveries, then records one successful attempt
/// for each from `tasks` concurrent tasks; times only the second part.
async fn store_outcomes(base: &std::path::Path, count: usize, tasks: usize) -> (usize, Duration) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let store = Store::open(dir.path(), &StoreOptions::small_with_cache(64 << 20)).unwrap();
    let ids: Vec<DeliveryId> = (0..count).map(|_| DeliveryId::generate()).collect();
    for chunk in ids.chunks(1000) {
        let changes = chunk.iter().map(|&id| insert(Delivery { id, ..delivery() })).collect();
        store.commit(changes).await.unwrap();
    }
    let ids = Arc::new(ids);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (store, ids, next) = (store.clone(), ids.clone(), next.clone());
            tokio::spawn(async move {
                let mut done = 0;
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= ids.len() || started.elapsed() > DEADLINE {
                        return done;
                    }
                    let mut delivery = store.get(ids[n]).unwrap().expect("stored above");
                    delivery.attempts.push(Attempt {
                        number: 1,
                        started_at: clock::now_ms(),
                        duration_ms: 1,
                        status: Some(200),
                        error: None,
                        response_excerpt: None,
                    });
                    delivery.state = State::Delivered;
                    delivery.next_attempt_at = None;
                    store.commit(vec![Change::Put(Box::new(delivery))]).await.unwrap();
                    done += 1;
                }
            })
        })
        .collect();
    let mut done = 0;
    for worker in workers {
        done += worker.await.unwrap();
    }
    (done, started.elapsed())
}

fn insert(delivery: Delivery) -> Change {
    Change::Insert { delivery: Box::new(delivery), supersede: Vec::new() }
}

/// A new delivery due in an hour, with a payload of [`PAYLOAD_BYTES`].
fn delivery() -> Delivery {
    let now = clock::now_ms();
    Delivery {
        id: DeliveryId::generate(),
        url: "http://127.0.0.1:9/hook".into(),
        headers: Vec::new(),
        payload: vec![b'x'; PAYLOAD_BYTES],
        key: None,
        idempotency_key: None,
        coalesce: false,
        key_seq: None,
        not_before: now + 3_600_000,
        signing_secret: None,
        retry_delays_ms: vec![10_000, 30_000, 60_000],
        timeout_ms: 5000,
        created_at: now,
        state: State::Pending,
        next_attempt_at: Some(now + 3_600_000),
        attempts: Vec::new(),
        round_start: 0,
        dead_reason: None,
        updated_at: now,
    }
}
