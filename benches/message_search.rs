//! Searching the message log of a store holding 1,000,000 messages (the
//! console's and `atom messages`' searches, `store/search.rs`): a page of
//! 50 for each filter, deep paging, and the activity overview. The store
//! is filled through its own insert path (`commit_batch`, 5,000 receipts a
//! transaction) with realistic rows: 200 partners of uneven traffic over
//! 30 days, unique Message-IDs, file names and subjects of a few kinds,
//! five MIME types, 2 % errors, 1.5 KB MDNs, an execution for half of them.
//!
//!   cargo bench --bench message_search                 # SQLite, then PostgreSQL when installed
//!   cargo bench --bench message_search -- sqlite       # one backend (the fill still runs)
//!   ATOM_BENCH_MESSAGES=200000 cargo bench --bench message_search
//!   ATOM_BENCH_POSTGRES=0 cargo bench --bench message_search   # SQLite only
//!   ATOM_BENCH_SQLITE=0 cargo bench --bench message_search       # PostgreSQL only
//!   ATOM_BENCH_DIR=/var/tmp/search cargo bench --bench message_search  # keep (and reuse) the SQLite store
//!   ATOM_BENCH_WITHOUT_SEARCH_INDEXES=1 ...  # the fill without SQLite migration 11's indexes
//!
//! Run as a test (`cargo test --benches`) it fills 20,000 messages and runs
//! each query once. The fill time and each query's plan are printed first.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;

use atom::store::postgres::PgStore;
use atom::store::sqlite::SqliteStore;
use atom::store::{
    status, DispositionFilter, DuplicateWindow, ExecutionRecord, MessageRecord, MessageSearch,
    Receipt, Store,
};

#[allow(dead_code)]
#[path = "../tests/common/postgres.rs"]
mod postgres;

/// A loopback port free right now (for `postgres.rs`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

const PARTNERS: u64 = 200;
const DAYS: i64 = 30;
const BATCH: usize = 5_000;
const PAGE: u32 = 50;

/// A small deterministic generator (SplitMix64).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A partner, busy ones more often (about 1/rank).
    fn partner(&mut self) -> u64 {
        let u = (self.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
        ((PARTNERS as f64).powf(u) as u64)
            .saturating_sub(1)
            .min(PARTNERS - 1)
    }
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

/// What the queries look for, taken from the rows generated.
struct Known {
    count: u64,
    /// A Message-ID from the middle of the log.
    message_id: String,
    start: time::OffsetDateTime,
}

fn partner_id(p: u64) -> String {
    format!("PARTNER{p:03}")
}

/// The `i`-th message of `n`, received over the last [`DAYS`] days in id
/// order (with a little jitter, as commits reorder them), and half of
/// them with an execution.
fn receipt(i: u64, n: u64, start: time::OffsetDateTime, r: &mut Random) -> Receipt {
    let span_ms = DAYS * 86_400_000;
    let at_ms = (i as i128 * span_ms as i128 / n as i128) as i64 + r.below(2_000) as i64;
    let at = start
        + time::Duration::milliseconds(at_ms)
        + time::Duration::nanoseconds(r.below(1_000_000) as i64);
    let day = at.date();
    let p = r.partner();
    let from = partner_id(p);
    let to = ["ACMEHUB", "ACMEHUB-TEST", "ACMEEU"][r.below(3) as usize].to_string();
    let kind = r.below(100);
    let (subject, file_name, mime) = match kind {
        0..=39 => (
            format!("Invoice {}-{:06}", day.year(), r.below(1_000_000)),
            Some(format!(
                "INV_{from}_{}{:02}{:02}_{:05}.edi",
                day.year(),
                day.month() as u8,
                day.day(),
                r.below(100_000)
            )),
            "application/edi-x12",
        ),
        40..=69 => (
            format!("Purchase order 45{:08}", r.below(100_000_000)),
            Some(format!("ORDERS_{:010}.edifact", r.below(10_000_000_000))),
            "application/edifact",
        ),
        70..=94 => (
            format!("Despatch advice {from}"),
            Some(format!("DESADV-{}-{:07}.xml", from, r.below(10_000_000))),
            "application/xml",
        ),
        95..=98 => ("AS2 message".to_string(), None, "application/octet-stream"),
        _ => (
            "Statement".to_string(),
            Some(format!("statement-{:08}.pdf", r.below(100_000_000))),
            "application/pdf",
        ),
    };
    let failure = [
        "authentication-failed",
        "decryption-failed",
        "integrity-check-failed",
        "unexpected-processing-error",
    ];
    let error = (r.below(100) < 2).then(|| failure[r.below(4) as usize]);
    let async_mdn = r.below(100) < 15;
    let mdn_status = if async_mdn && i + 50 >= n {
        "pending"
    } else if async_mdn {
        "delivered"
    } else {
        "sent"
    };
    let mut mdn_body = Vec::with_capacity(1_500);
    while mdn_body.len() < 1_500 {
        mdn_body.extend_from_slice(format!("{:016x}", r.next()).as_bytes());
    }
    let path = |part: &str| format!("documents/{}/{i:08}.{part}", day);
    let message = MessageRecord {
        listener: Some(format!("listener-{p:03}")),
        as2_from: from.clone(),
        as2_to: to,
        message_id: format!("<{:016x}.{i}@{}.example>", r.next(), from.to_lowercase()),
        subject: Some(subject),
        file_name,
        mime_type: Some(mime.into()),
        request_size: 2_000 + r.below(200_000),
        payload_size: error.is_none().then(|| 1_000 + r.below(150_000)),
        encryption: Some("aes256-cbc".into()),
        signature: Some("sha256".into()),
        compression: (r.below(3) == 0).then(|| "before-signing".into()),
        mic: Some(format!("{:032x}=, sha256", r.next())),
        disposition: match error {
            None => "processed".into(),
            Some(e) => format!("processed/error: {e}"),
        },
        mdn_mode: if async_mdn { "async" } else { "sync" }.into(),
        mdn_status: mdn_status.into(),
        mdn_url: async_mdn.then(|| format!("https://as2.{}.example/mdn", from.to_lowercase())),
        mdn_headers: vec![
            ("Content-Type".into(), "multipart/signed; boundary=x".into()),
            ("AS2-From".into(), "ACMEHUB".into()),
            ("AS2-To".into(), from.clone()),
            ("Message-ID".into(), format!("<mdn-{i}@acmehub>")),
        ],
        mdn_body,
        raw_path: Some(path("raw")),
        payload_path: error.is_none().then(|| path("payload")),
        error: error.map(|e| format!("{e}: the partner's message was refused")),
        received_at: rfc3339(at),
        dedupe: error.is_none().then_some(DuplicateWindow {
            count: 1_000,
            days: 30,
        }),
        ..MessageRecord::default()
    };
    let execution = (error.is_none() && r.below(2) == 0).then(|| {
        let queued_us = (at.unix_timestamp_nanos() / 1_000) as i64;
        let status = match r.below(100) {
            _ if i + 20 >= n => status::STARTED,
            0..=89 => status::COMPLETE,
            90..=93 => status::COMPLETE_WARN,
            94..=98 => status::ERROR,
            _ => status::ABORTED,
        };
        ExecutionRecord {
            id: format!("execution-{:016x}-{i}", r.next()),
            process: format!("route-{}", p % 20),
            version: "v1".into(),
            mode: "general".into(),
            status: status.into(),
            attempts: 1,
            properties_json: "{}".into(),
            payload_path: path("payload"),
            queued_at: rfc3339(at),
            queued_at_us: queued_us,
            input_documents: 1,
            input_bytes: 10_000,
            ..ExecutionRecord::default()
        }
    });
    Receipt { message, execution }
}

/// Fills `store` with `n` messages through its insert path; returns what
/// the queries look for.
fn fill(store: &dyn Store, n: u64, name: &str) -> Known {
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(DAYS);
    let mut r = Random(0x5EED);
    let began = Instant::now();
    let mut message_id = String::new();
    let mut i = 0;
    while i < n {
        let batch: Vec<Receipt> = (i..(i + BATCH as u64).min(n))
            .map(|k| receipt(k, n, start, &mut r))
            .collect();
        if let Some(middle) = batch
            .iter()
            .find(|b| b.message.error.is_none() && i <= n / 2)
        {
            message_id = middle.message.message_id.clone();
        }
        i += batch.len() as u64;
        store.commit_batch(&batch, &[]).expect("commits");
    }
    let took = began.elapsed();
    println!(
        "{name}: filled {n} messages in {:.1} s ({:.0} messages/s, {BATCH} a transaction)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    Known {
        count: n,
        message_id,
        start,
    }
}

/// The searches timed: (name, search).
fn searches(known: &Known) -> Vec<(&'static str, MessageSearch)> {
    let page = |f: &dyn Fn(&mut MessageSearch)| {
        let mut s = MessageSearch {
            limit: PAGE,
            ..MessageSearch::default()
        };
        f(&mut s);
        s
    };
    let day = |d: i64| {
        let date = (known.start + time::Duration::days(d)).date();
        format!("{date}")
    };
    // Ids are 1..=count in a fresh store: page 200 starts below this.
    let page_200 = known.count as i64 + 1 - 199 * i64::from(PAGE);
    let mid_partner = partner_id(20);
    vec![
        ("no filter, first page", page(&|_| {})),
        (
            "no filter, page 200 (before_id)",
            page(&|s| s.before_id = Some(page_200)),
        ),
        (
            "Message-ID",
            page(&|s| s.message_id = Some(known.message_id.clone())),
        ),
        (
            "File Name prefix, one partner's invoices (INV_PARTNER020_)",
            page(&|s| s.file_name = Some(format!("INV_{mid_partner}_"))),
        ),
        (
            "File Name prefix, 40 % of rows (INV_)",
            page(&|s| s.file_name = Some("INV_".into())),
        ),
        (
            "Subject prefix (Purchase order 4512)",
            page(&|s| s.subject = Some("Purchase order 4512".into())),
        ),
        (
            "AS2-From, busiest partner",
            page(&|s| s.as2_from = Some(partner_id(0))),
        ),
        (
            "AS2-From, a quiet partner",
            page(&|s| s.as2_from = Some(partner_id(180))),
        ),
        (
            "AS2-From, page 20 (before_id)",
            page(&|s| {
                s.as2_from = Some(partner_id(0));
                s.before_id = Some(known.count as i64 / 2);
            }),
        ),
        (
            "errors only",
            page(&|s| s.disposition = Some(DispositionFilter::Error)),
        ),
        (
            "date range, one day (day 15)",
            page(&|s| {
                s.received_from = Some(day(15));
                s.received_to = Some(day(16));
            }),
        ),
        (
            "date range, since day 1 (29 days)",
            page(&|s| s.received_from = Some(day(1))),
        ),
        (
            "date range, until day 29 (28 days)",
            page(&|s| s.received_to = Some(day(29))),
        ),
        (
            "date range, until day 1 (1 day)",
            page(&|s| s.received_to = Some(day(1))),
        ),
        (
            "date range, days 5 to 25",
            page(&|s| {
                s.received_from = Some(day(5));
                s.received_to = Some(day(25));
            }),
        ),
        (
            "File Name prefix, no match (QQQ)",
            page(&|s| s.file_name = Some("QQQ".into())),
        ),
        (
            "MIME type, never received (text/plain)",
            page(&|s| s.mime_type = Some("text/plain".into())),
        ),
        (
            "MIME type, 1 % of rows (application/pdf)",
            page(&|s| s.mime_type = Some("application/pdf".into())),
        ),
        (
            "AS2-From + errors",
            page(&|s| {
                s.as2_from = Some(partner_id(0));
                s.disposition = Some(DispositionFilter::Error);
            }),
        ),
    ]
}

fn run_queries(
    c: &mut Criterion,
    name: &str,
    store: &dyn Store,
    known: &Known,
    explain: &dyn Fn(&MessageSearch) -> String,
) {
    let searches = searches(known);
    for (label, search) in &searches {
        let rows = store.search_messages(search).expect("searches");
        println!(
            "{name}: {label}: {} rows; plan: {}",
            rows.len(),
            explain(search).replace('\n', " | ")
        );
    }
    let mut group = c.benchmark_group(name);
    for (label, search) in &searches {
        group.bench_function(*label, |b| {
            b.iter(|| store.search_messages(search).expect("searches"))
        });
    }
    let since = rfc3339(time::OffsetDateTime::now_utc() - time::Duration::hours(3));
    let activity = store.activity(&since).expect("activity");
    println!(
        "{name}: activity over 3 hours: {} minutes, {} messages, executions {:?}, {} pending MDNs",
        activity.per_minute.len(),
        activity.per_minute.iter().map(|m| m.messages).sum::<u64>(),
        activity.executions_by_status,
        activity.pending_async_mdns
    );
    group.bench_function("activity, 3 hours", |b| {
        b.iter(|| store.activity(&since).expect("activity"))
    });
    let since_48 = rfc3339(time::OffsetDateTime::now_utc() - time::Duration::hours(48));
    group.bench_function("activity, 48 hours", |b| {
        b.iter(|| store.activity(&since_48).expect("activity"))
    });
    group.finish();
}

/// What a store filled before holds (`ATOM_BENCH_DIR`), or `None`.
fn filled_before(store: &dyn Store, n: u64) -> Option<Known> {
    let newest = store.recent_messages(1).ok()?.pop()?;
    if newest.id != n as i64 {
        return None;
    }
    let first = store.message(1).ok()??;
    let start = time::OffsetDateTime::parse(
        &first.record.received_at,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    let middle = store.message(n as i64 / 2).ok()??;
    println!("sqlite: reusing the {n} messages filled before");
    Some(Known {
        count: n,
        message_id: middle.record.message_id,
        start: start - time::Duration::seconds(1),
    })
}

/// The indexes SQLite migration 11 adds for searching.
const SEARCH_INDEXES: [&str; 8] = [
    "messages_from",
    "messages_to",
    "messages_message_id",
    "messages_subject",
    "messages_file_name",
    "messages_mime_type",
    "messages_received_at",
    "messages_errors",
];

fn sqlite(c: &mut Criterion, n: u64, dir: &Path) {
    let store = SqliteStore::open(dir).expect("opens");
    if std::env::var_os("ATOM_BENCH_WITHOUT_SEARCH_INDEXES").is_some() {
        // What the fill costs without them (searches then read the table).
        let conn = rusqlite::Connection::open(dir.join("atom.db")).expect("opens");
        for index in SEARCH_INDEXES {
            conn.execute_batch(&format!("DROP INDEX IF EXISTS {index}"))
                .expect("drops");
        }
        println!("sqlite: filling without the search indexes");
    }
    let known = filled_before(&store, n).unwrap_or_else(|| fill(&store, n, "sqlite"));
    let size = std::fs::metadata(dir.join("atom.db")).map_or(0, |m| m.len());
    println!("sqlite: atom.db is {} MiB", size >> 20);
    run_queries(c, "sqlite", &store, &known, &|s| {
        store.explain_search(s).expect("explains")
    });
}

fn postgres(c: &mut Criterion, n: u64) {
    let Some(cluster) = postgres::Postgres::new() else {
        return;
    };
    let store = PgStore::open(&cluster.url()).expect("opens");
    let known = fill(&store, n, "postgres");
    // As autovacuum would after a fill: statistics and the visibility map.
    let began = Instant::now();
    cluster
        .psql_at(&cluster.url(), "VACUUM ANALYZE")
        .expect("vacuums");
    println!(
        "postgres: VACUUM ANALYZE took {:.1} s",
        began.elapsed().as_secs_f64()
    );
    run_queries(c, "postgres", &store, &known, &|s| {
        store.explain_search(s, false).expect("explains")
    });
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("ATOM_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benchmarking { 1_000_000 } else { 20_000 });
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    // `ATOM_BENCH_DIR`: a directory kept between runs (filled once).
    let temporary = tempfile::tempdir().expect("tempdir");
    let dir = std::env::var_os("ATOM_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temporary.path().to_path_buf());
    if std::env::var("ATOM_BENCH_SQLITE").as_deref() != Ok("0") {
        sqlite(&mut c, n, &dir);
    }
    if std::env::var("ATOM_BENCH_POSTGRES").as_deref() != Ok("0") {
        postgres(&mut c, n);
    }
    c.final_summary();
}
