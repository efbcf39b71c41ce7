//! The contract every store keeps, run against each backend: duplicates
//! decided by the store whatever the batching, the duplicate window per
//! partner (count and age), pause state across a reopen, retention (what
//! goes, what stays, every finished execution to the end), and documents
//! (staged, read back, discarded, kept, removed, 64 MiB), and two handles
//! of one store racing on the same message. A backend joins with one more
//! `store_contract!` line: SQLite, and PostgreSQL (skipped, saying why,
//! when PostgreSQL is not installed and `CI` is unset).

mod common;

use std::path::Path;
use std::sync::Barrier;
use std::time::Duration;

use atom::server::inbound::now_rfc3339;
use atom::store::documents::{Documents, Part, Piece};
use atom::store::postgres::PgStore;
use atom::store::sqlite::SqliteStore;
use atom::store::{
    retention, status, Claim, Committed, DuplicateWindow, ExecutionFilter, ExecutionRecord,
    MessageRecord, Receipt, Store, StoreErrorKind,
};

/// A store and its documents.
struct Backend {
    store: Box<dyn Store>,
    documents: Box<dyn Documents>,
}

/// Opens (or reopens) the backend kept in a directory.
type Opener<'a> = &'a dyn Fn(&Path) -> Backend;

mod contract {
    use super::*;

    const WINDOW: DuplicateWindow = DuplicateWindow {
        count: 100,
        days: 30,
    };

    pub fn accepted(from: &str, id: &str) -> MessageRecord {
        MessageRecord {
            listener: Some("acme".into()),
            as2_from: from.into(),
            as2_to: "US".into(),
            message_id: id.into(),
            disposition: "processed".into(),
            mdn_mode: "sync".into(),
            mdn_status: "sent".into(),
            mdn_headers: vec![("Content-Type".into(), "multipart/report".into())],
            mdn_body: b"mdn".to_vec(),
            received_at: now_rfc3339(),
            dedupe: Some(WINDOW),
            ..MessageRecord::default()
        }
    }

    fn receipt(message: MessageRecord) -> Receipt {
        Receipt {
            message,
            execution: None,
        }
    }

    pub fn a_second_copy_in_one_batch_or_later_is_refused_by_the_store(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let first = accepted("ACME", "<1@acme>");
        let outcomes = store
            .commit_batch(&[receipt(first.clone()), receipt(first.clone())], &[])
            .expect("commit");
        let Committed::Stored(id) = outcomes[0] else {
            panic!("first copy stored: {outcomes:?}")
        };
        assert!(
            matches!(&outcomes[1], Committed::Duplicate(r) if r.record_id == id && r.body == b"mdn"),
            "second copy of the same batch refused: {outcomes:?}"
        );
        let later = store
            .commit_batch(&[receipt(first.clone())], &[])
            .expect("commit");
        assert!(matches!(&later[0], Committed::Duplicate(r) if r.record_id == id));
        assert_eq!(store.recent_messages(10).expect("list").len(), 1);
        // Another partner may use the same Message-ID.
        let other = store
            .commit_batch(&[receipt(accepted("OTHER", "<1@acme>"))], &[])
            .expect("commit");
        assert!(matches!(other[0], Committed::Stored(_)));
    }

    pub fn duplicate_window_flushed_by_junk_regression(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        store
            .insert_message(&accepted("ACME", "<1@acme>"))
            .expect("insert");
        // 150 refused messages from the partner, and 150 accepted ones from others.
        for i in 0..150 {
            let mut junk = accepted("ACME", &format!("<junk{i}@x>"));
            junk.error = Some("authentication-failed".into());
            junk.disposition = "processed/error: authentication-failed".into();
            store.insert_message(&junk).expect("junk");
            store
                .insert_message(&accepted("OTHER", &format!("<o{i}@x>")))
                .expect("other");
        }
        let found = store
            .find_receipt("acme", "ACME", "<1@acme>", WINDOW)
            .expect("query")
            .expect("still inside the partner's window");
        assert_eq!(found.body, b"mdn");
        // The partner's own 100 accepted messages do move it.
        for i in 0..100 {
            store
                .insert_message(&accepted("ACME", &format!("<{i}@mine>")))
                .expect("insert");
        }
        assert!(store
            .find_receipt("acme", "ACME", "<1@acme>", WINDOW)
            .expect("query")
            .is_none());
        // A copy outside the window is a new message and takes the key over.
        let again = store
            .commit_batch(&[receipt(accepted("ACME", "<1@acme>"))], &[])
            .expect("commit");
        assert!(matches!(again[0], Committed::Stored(_)), "{again:?}");
    }

    pub fn duplicate_window_is_bounded_by_age(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let mut old = accepted("ACME", "<old@acme>");
        old.received_at = "2020-01-01T00:00:00Z".into();
        store.insert_message(&old).expect("insert");
        assert!(store
            .find_receipt("acme", "ACME", "<old@acme>", WINDOW)
            .expect("query")
            .is_none());
        assert!(store
            .find_receipt(
                "acme",
                "ACME",
                "<old@acme>",
                DuplicateWindow {
                    count: 100,
                    days: 36500
                }
            )
            .expect("query")
            .is_some());
    }

    pub fn pause_state_persists(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        store.set_paused("p1", true).expect("pause");
        drop(store);
        let reopened = open(dir.path()).store;
        assert_eq!(
            reopened.paused_listeners().expect("read"),
            vec!["p1".to_string()]
        );
        reopened.set_paused("p1", false).expect("resume");
        assert!(reopened.paused_listeners().expect("read").is_empty());
    }

    /// What every node follows: paused or not, and restarts counted.
    pub fn listener_states_are_shared(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        store.set_paused("p1", true).expect("pause");
        assert_eq!(store.count_restart("p2").expect("restart"), 1);
        assert_eq!(store.count_restart("p2").expect("restart"), 2);
        assert_eq!(store.count_restart("p1").expect("restart"), 1);
        store.set_paused("p2", true).expect("pause");
        store.set_paused("p2", false).expect("resume");
        let shared = |listener: &str, paused, restarts| atom::store::ListenerShared {
            listener: listener.into(),
            paused,
            restarts,
        };
        assert_eq!(
            store.listener_states().expect("states"),
            [shared("p1", true, 1), shared("p2", false, 2)]
        );
    }

    pub fn old_messages_and_their_files_go_recent_and_pending_ones_stay(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, documents } = open(dir.path());
        let mut keep = Vec::new();
        let mut gone = Vec::new();
        for (i, (received_at, mode, status)) in [
            ("2020-01-01T00:00:00Z", "sync", "sent"),
            ("2020-01-02T00:00:00Z", "async", "pending"),
            ("2020-01-03T00:00:00Z", "async", "delivered"),
            ("2099-01-01T00:00:00Z", "sync", "sent"),
        ]
        .into_iter()
        .enumerate()
        {
            let chunk: &[u8] = b"data";
            let written = documents
                .stage(&parts(&[("request", &[chunk]), ("payload", &[chunk])]))
                .expect("documents")
                .references;
            let record = MessageRecord {
                as2_from: "P".into(),
                as2_to: "U".into(),
                message_id: format!("<{i}@p>"),
                disposition: "processed".into(),
                mdn_mode: mode.into(),
                mdn_status: status.into(),
                raw_path: Some(written[0].clone()),
                payload_path: Some(written[1].clone()),
                received_at: received_at.into(),
                ..MessageRecord::default()
            };
            store.insert_message(&record).expect("insert");
            if i == 1 || i == 3 {
                keep.extend(written)
            } else {
                gone.extend(written)
            }
        }
        // An old finished execution and its kept document go; an old message
        // whose execution is still queued stays.
        let kept_doc = documents.keep("e1", 0, b"out").expect("kept document");
        let payload = documents
            .stage(&parts(&[("payload", &[b"x".as_slice()])]))
            .expect("documents")
            .references;
        let old = |id: &str, status: &str| ExecutionRecord {
            id: id.into(),
            process: "p".into(),
            status: status.into(),
            payload_path: payload[0].clone(),
            queued_at: "2020-01-01T00:00:00Z".into(),
            ..ExecutionRecord::default()
        };
        let queued_row = store
            .insert_receipts(&[
                Receipt {
                    message: MessageRecord {
                        as2_from: "P".into(),
                        as2_to: "U".into(),
                        message_id: "<q@p>".into(),
                        disposition: "processed".into(),
                        mdn_mode: "sync".into(),
                        mdn_status: "sent".into(),
                        payload_path: Some(payload[0].clone()),
                        received_at: "2020-01-01T00:00:00Z".into(),
                        ..MessageRecord::default()
                    },
                    execution: Some(old("e2", status::STARTED)),
                },
                Receipt {
                    message: MessageRecord {
                        message_id: "<f@p>".into(),
                        received_at: "2099-01-01T00:00:00Z".into(),
                        disposition: "processed".into(),
                        ..MessageRecord::default()
                    },
                    execution: Some(old("e1", status::STARTED)),
                },
            ])
            .expect("insert");
        assert_eq!(queued_row.len(), 2);
        let mut finished = old("e1", status::COMPLETE);
        finished.documents = vec![atom::store::KeptDocument {
            path: kept_doc.clone(),
            size: 3,
            ..Default::default()
        }];
        store.update_executions(&[finished]).expect("finish");

        let removed = retention::purge(store.as_ref(), documents.as_ref(), "2026-01-01T00:00:00Z")
            .expect("purge");
        assert_eq!(
            removed, 5,
            "two messages with two documents each, one kept document"
        );
        assert!(!documents.exists(&kept_doc));
        assert!(
            store.execution("e1").expect("read").is_none(),
            "finished execution purged"
        );
        assert!(
            store.execution("e2").expect("read").is_some(),
            "queued execution kept"
        );
        assert!(documents.exists(&payload[0]), "its message's payload kept");
        for d in &gone {
            assert!(!documents.exists(d), "{d} purged");
        }
        for d in &keep {
            assert_eq!(documents.read(d).expect("kept"), b"data", "{d} kept");
        }
        let left: Vec<String> = store
            .recent_messages(10)
            .expect("list")
            .into_iter()
            .map(|m| m.record.message_id)
            .collect();
        assert_eq!(
            left,
            vec![
                "<f@p>".to_string(),
                "<q@p>".to_string(),
                "<3@p>".to_string(),
                "<1@p>".to_string()
            ]
        );
    }

    /// Failed executions keep no documents; their batches returned no paths,
    /// which used to end the purge after the first batch of each interval.
    pub fn retention_purges_2000_failed_executions_in_one_pass(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, documents } = open(dir.path());
        let receipts: Vec<Receipt> = (0..2000)
            .map(|i| Receipt {
                message: MessageRecord {
                    as2_from: "P".into(),
                    as2_to: "U".into(),
                    message_id: format!("<{i}@p>"),
                    disposition: "processed".into(),
                    mdn_mode: "sync".into(),
                    mdn_status: "sent".into(),
                    received_at: "2020-01-01T00:00:00Z".into(),
                    ..MessageRecord::default()
                },
                execution: Some(ExecutionRecord {
                    id: format!("e{i}"),
                    process: "p".into(),
                    status: status::STARTED.into(),
                    queued_at: "2020-01-01T00:00:00Z".into(),
                    queued_at_us: i,
                    ..ExecutionRecord::default()
                }),
            })
            .collect();
        store.insert_receipts(&receipts).expect("insert");
        let failed: Vec<ExecutionRecord> = receipts
            .into_iter()
            .filter_map(|r| r.execution)
            .enumerate()
            .map(|(i, mut e)| {
                // Every status that is final, failed ones above all.
                e.status = if i % 10 == 0 {
                    status::ABORTED
                } else {
                    status::ERROR
                }
                .into();
                e
            })
            .collect();
        store.update_executions(&failed).expect("fail them");
        let all = ExecutionFilter {
            limit: 10_000,
            ..ExecutionFilter::default()
        };
        assert_eq!(store.list_executions(&all).expect("list").len(), 2000);

        let removed = retention::purge(store.as_ref(), documents.as_ref(), "2026-01-01T00:00:00Z")
            .expect("purge");
        assert_eq!(removed, 0, "no documents were kept");
        assert!(
            store.list_executions(&all).expect("list").is_empty(),
            "every failed execution purged in one pass"
        );
        assert!(
            store.recent_messages(10).expect("list").is_empty(),
            "and their messages"
        );
    }

    /// One execution between two nodes: a live lease is never taken, an
    /// expired one is (the epoch goes up), the old holder's states are
    /// refused and its renewal reports the loss, the new holder's are
    /// written; of two reruns one wins; a restarted node takes its own work
    /// back at once; a released lease is free at once.
    pub fn leases_claim_renew_expire_and_fence(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let now = 1_000_000_000_000i64;
        let lease = 30_000_000i64;
        let queued = ExecutionRecord {
            id: "e1".into(),
            process: "p".into(),
            status: status::STARTED.into(),
            queued_at: now_rfc3339(),
            owner: Some("A".into()),
            lease_until_us: Some(now + lease),
            lease_epoch: 1,
            ..ExecutionRecord::default()
        };
        store
            .insert_receipts(&[Receipt {
                message: accepted("P", "<lease@p>"),
                execution: Some(queued.clone()),
            }])
            .expect("insert");
        let claim = |node: &'static str, at: i64, own_earlier: bool| {
            store
                .claim_executions(&Claim {
                    node,
                    until_us: at + lease,
                    now_us: at,
                    own_earlier,
                    except: &[],
                    limit: 100,
                })
                .expect("claim")
        };
        assert!(claim("B", now + 1, false).is_empty(), "A's lease is live");
        assert!(
            claim("A", now + lease + 1, false).is_empty(),
            "a live node never claims its own work"
        );
        let taken = claim("B", now + lease + 1, false);
        assert_eq!(taken.len(), 1);
        assert_eq!(
            (taken[0].owner.as_deref(), taken[0].lease_epoch),
            (Some("B"), 2)
        );

        // A was only slow: its state and its renewal are refused.
        let mut late = queued.clone();
        late.status = status::COMPLETE.into();
        store.update_executions(&[late]).expect("update");
        let row = store.execution("e1").expect("read").expect("row");
        assert_eq!(
            (row.status.as_str(), row.owner.as_deref()),
            ("STARTED", Some("B"))
        );
        let lost = store
            .renew_execution_leases("A", &[("e1".into(), 1)], now + 2 * lease)
            .expect("renew");
        assert_eq!(lost, ["e1"]);
        let lost = store
            .renew_execution_leases("B", &[("e1".into(), 2)], now + 3 * lease)
            .expect("renew");
        assert!(lost.is_empty());
        assert!(
            claim("C", now + 2 * lease + 1, false).is_empty(),
            "B's renewed lease holds"
        );
        let mut done = taken[0].clone();
        done.status = status::COMPLETE.into();
        store.update_executions(&[done.clone()]).expect("update");
        assert_eq!(
            store.execution("e1").expect("read").expect("row").status,
            "COMPLETE"
        );
        assert!(
            claim("C", now + 10 * lease, false).is_empty(),
            "finished work is never claimed"
        );

        // Two reruns at once: one wins.
        let mut again = done.clone();
        again.status = status::STARTED.into();
        let first = store
            .requeue_finished(&again, "B", now + 11 * lease)
            .expect("rerun");
        let second = store
            .requeue_finished(&again, "C", now + 11 * lease)
            .expect("rerun");
        assert_eq!((first, second), (Some(3), None));

        // B restarts: its own work comes back at once, lease or not.
        let back = claim("B", now + 10 * lease, true);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].lease_epoch, 4);
        // B drains: the lease is given up, and C may take it at once.
        store
            .release_execution_leases("B", &[("e1".into(), 4)])
            .expect("release");
        let moved = claim("C", now + 10 * lease, false);
        assert_eq!(
            (moved.len(), moved[0].owner.as_deref(), moved[0].lease_epoch),
            (1, Some("C"), 5)
        );
    }

    /// A pending asynchronous MDN between two nodes: held by the receiving
    /// node, taken over once its lease expired, the old holder's outcome
    /// refused and the new holder's recorded; a delivered one is never
    /// claimed again; a resent receipt's status is recorded whoever holds it.
    pub fn mdn_outbox_leases(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let now = 1_000_000_000_000i64;
        let lease = 30_000_000i64;
        let mut pending = accepted("P", "<mdn@p>");
        pending.mdn_mode = "async".into();
        pending.mdn_status = "pending".into();
        pending.mdn_url = Some("https://partner.example/mdn".into());
        pending.mdn_owner = Some("A".into());
        pending.mdn_lease_until_us = Some(now + lease);
        let mut sync = accepted("P", "<sync@p>");
        sync.mdn_status = "sent".into();
        let ids = store
            .insert_receipts(&[receipt(pending), receipt(sync)])
            .expect("insert");
        let claim = |node: &'static str, at: i64, own_earlier: bool| {
            store
                .claim_async_mdns(&Claim {
                    node,
                    until_us: at + lease,
                    now_us: at,
                    own_earlier,
                    except: &[],
                    limit: 100,
                })
                .expect("claim")
        };
        assert!(claim("B", now + 1, false).is_empty(), "A's lease is live");
        let back = claim("A", now + 1, true);
        assert_eq!(back.len(), 1, "a restarted A takes its own back");
        assert_eq!(back[0].epoch, 2);
        assert_eq!(back[0].receipt.record_id, ids[0]);
        assert_eq!(back[0].receipt.body, b"mdn");
        let taken = claim("B", now + 2 * lease, false);
        assert_eq!(
            taken.len(),
            1,
            "only the pending one, once A's lease expired"
        );
        assert_eq!(taken[0].epoch, 3);
        assert_eq!(
            store
                .renew_mdn_leases("A", &[(ids[0], 2)], now + 3 * lease)
                .expect("renew"),
            [ids[0]]
        );
        assert!(!store
            .set_mdn_status(ids[0], "delivered", Some(2))
            .expect("status"));
        assert!(store
            .set_mdn_status(ids[0], "delivered", Some(3))
            .expect("status"));
        assert!(
            claim("C", now + 10 * lease, false).is_empty(),
            "delivered: done"
        );
        assert!(store
            .set_mdn_status(ids[0], "delivered", None)
            .expect("resent"));
        let shown = store.recent_messages(10).expect("list");
        let row = shown.iter().find(|m| m.id == ids[0]).expect("row");
        assert_eq!(
            (
                row.record.mdn_status.as_str(),
                row.record.mdn_owner.as_deref()
            ),
            ("delivered", Some("B"))
        );
    }

    /// Bundles shared by the nodes: a head per bundle, its files, a new
    /// version replacing the old one's files, a withdrawal, a redeploy.
    pub fn bundles_published_and_withdrawn(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let v1 = vec![
            ("guest.wat".to_string(), b"(module)".to_vec()),
            ("process.yaml".to_string(), b"start: {}".to_vec()),
        ];
        store
            .publish_bundle("acme", "h1", &v1, "A")
            .expect("publish");
        store.publish_bundle("acme", "h1", &v1, "B").expect("again");
        let heads = store.bundle_heads().expect("heads");
        assert_eq!(heads.len(), 1);
        assert_eq!(
            (
                heads[0].hash.as_str(),
                heads[0].withdrawn,
                heads[0].published_by.as_str()
            ),
            ("h1", false, "A"),
            "the same version again changes nothing"
        );
        assert_eq!(store.bundle_files("acme", "h1").expect("files"), v1);
        let v2 = vec![("process.yaml".to_string(), vec![0u8; 3 << 20])];
        store
            .publish_bundle("acme", "h2", &v2, "B")
            .expect("publish");
        assert_eq!(store.bundle_files("acme", "h2").expect("files"), v2);
        assert!(store.bundle_files("acme", "h1").expect("files").is_empty());
        store.withdraw_bundle("acme", "C").expect("withdraw");
        let heads = store.bundle_heads().expect("heads");
        assert!(heads[0].withdrawn && heads[0].published_by == "C");
        store
            .publish_bundle("acme", "h2", &v2, "A")
            .expect("redeploy");
        let heads = store.bundle_heads().expect("heads");
        assert!(!heads[0].withdrawn && heads[0].hash == "h2");
        assert_eq!(store.bundle_files("acme", "h2").expect("files"), v2);
    }

    /// Documents come back byte for byte, whatever the chunking; a discarded
    /// message's documents are gone; kept documents are their own.
    pub fn documents_round_trip(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { documents, .. } = open(dir.path());
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (head, tail) = big.split_at(1_234_567);
        let staged = documents
            .stage(&parts(&[
                ("request", &[b"Header: x\r\n\r\n", head, tail]),
                ("payload", &[b""]),
            ]))
            .expect("stage");
        assert_eq!(staged.references.len(), 2);
        documents.make_durable().expect("durable");
        let request = documents.read(&staged.references[0]).expect("read");
        assert_eq!(request.len(), 13 + big.len());
        assert!(request.ends_with(&big));
        // Streamed, in whatever pieces the store reads (1 MiB chunks in
        // PostgreSQL): the same bytes.
        for reference in &staged.references {
            let mut streamed = Vec::new();
            std::io::Read::read_to_end(
                &mut documents.reader(reference).expect("reader"),
                &mut streamed,
            )
            .expect("streams");
            assert_eq!(streamed, documents.read(reference).expect("read"));
        }
        assert_eq!(documents.read(&staged.references[1]).expect("read"), b"");
        assert_eq!(documents.ends_with(&staged.references[0], &big), Some(true));
        assert_eq!(documents.ends_with(&staged.references[0], tail), Some(true));
        assert_eq!(
            documents.ends_with(&staged.references[0], head),
            Some(false)
        );
        let mut longer = b"x".repeat(20);
        longer.extend_from_slice(&request);
        assert_eq!(
            documents.ends_with(&staged.references[0], &longer),
            Some(false)
        );

        let other = documents
            .stage(&parts(&[("request", &[b"second".as_slice()])]))
            .expect("stage");
        assert_ne!(other.references[0], staged.references[0]);
        documents.discard(&other);
        assert!(!documents.exists(&other.references[0]));
        assert_eq!(documents.ends_with(&other.references[0], b"x"), None);
        assert!(documents.read(&other.references[0]).is_err());
        assert!(documents.exists(&staged.references[0]), "others untouched");

        let first = documents.keep("e1", 0, b"one").expect("keep");
        let second = documents.keep("e1", 1, b"two").expect("keep");
        assert_ne!(first, second);
        assert_eq!(documents.read(&first).expect("read"), b"one");
        assert_eq!(documents.read(&second).expect("read"), b"two");
        assert_eq!(documents.remove(&[first.clone(), first.clone()]), 1);
        assert!(!documents.exists(&first) && documents.exists(&second));
    }

    /// What the receive path and the runner rely on: a message's documents
    /// committed with its row survive a restart byte for byte; a
    /// duplicate's documents, discarded, are gone; documents an execution
    /// kept survive with its final state.
    pub fn documents_are_durable_with_the_rows_that_reference_them(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (stored, kept) = {
            let Backend { store, documents } = open(dir.path());
            let stage = |raw: &[u8], payload: &[u8]| {
                documents
                    .stage(&parts(&[
                        ("request", &[b"H: v\r\n\r\n".as_slice(), raw]),
                        ("payload", &[payload]),
                    ]))
                    .expect("stage")
            };
            let first = stage(b"ISA*first", b"first");
            let mut record = accepted("ACME", "<docs@acme>");
            record.raw_path = Some(first.references[0].clone());
            record.payload_path = Some(first.references[1].clone());
            let execution = ExecutionRecord {
                id: "e-docs".into(),
                process: "p".into(),
                status: status::STARTED.into(),
                payload_path: first.references[1].clone(),
                queued_at: now_rfc3339(),
                ..ExecutionRecord::default()
            };
            documents.make_durable().expect("durable");
            let outcomes = store
                .commit_batch(
                    &[Receipt {
                        message: record.clone(),
                        execution: Some(execution.clone()),
                    }],
                    &[],
                )
                .expect("commit");
            assert!(matches!(outcomes[0], Committed::Stored(_)), "{outcomes:?}");

            let copy = stage(b"ISA*copy", b"copy");
            record.raw_path = Some(copy.references[0].clone());
            record.payload_path = Some(copy.references[1].clone());
            documents.make_durable().expect("durable");
            let outcomes = store.commit_batch(&[receipt(record)], &[]).expect("commit");
            assert!(
                matches!(outcomes[0], Committed::Duplicate(_)),
                "{outcomes:?}"
            );
            documents.discard(&copy);
            for reference in &copy.references {
                assert!(
                    !documents.exists(reference),
                    "a duplicate's {reference} is gone"
                );
            }

            let output = documents.keep("e-docs", 0, b"output").expect("keep");
            let mut finished = execution;
            finished.status = status::COMPLETE.into();
            finished.documents = vec![atom::store::KeptDocument {
                path: output.clone(),
                size: 6,
                ..Default::default()
            }];
            documents.make_durable().expect("durable");
            store.update_executions(&[finished]).expect("finish");
            (first.references, output)
        };
        // After a restart, what was committed is there, byte for byte.
        let Backend { store, documents } = open(dir.path());
        assert_eq!(
            documents.read(&stored[0]).expect("raw"),
            b"H: v\r\n\r\nISA*first"
        );
        assert_eq!(documents.read(&stored[1]).expect("payload"), b"first");
        assert_eq!(documents.ends_with(&stored[0], b"ISA*first"), Some(true));
        assert_eq!(documents.read(&kept).expect("kept"), b"output");
        // New documents after the restart never collide with stored ones.
        let after = documents
            .stage(&parts(&[
                ("request", &[b"ISA*after".as_slice()]),
                ("payload", &[b"after".as_slice()]),
            ]))
            .expect("stage");
        assert!(after
            .references
            .iter()
            .all(|r| !stored.contains(r) && *r != kept));
        let mut record = accepted("ACME", "<after-restart@acme>");
        record.raw_path = Some(after.references[0].clone());
        record.payload_path = Some(after.references[1].clone());
        documents.make_durable().expect("durable");
        let outcomes = store.commit_batch(&[receipt(record)], &[]).expect("commit");
        assert!(matches!(outcomes[0], Committed::Stored(_)), "{outcomes:?}");
        assert_eq!(
            documents.read(&after.references[1]).expect("payload"),
            b"after"
        );
        assert_eq!(documents.read(&stored[1]).expect("payload"), b"first");
    }

    /// Commits, retrying while the store says it is busy (what a sender
    /// does after a 503): SQLite answers a writer whose snapshot went stale
    /// with `SQLITE_BUSY`.
    fn commit_retrying(store: &dyn Store, record: &MessageRecord) -> Committed {
        let mut attempt = 0;
        loop {
            match store.commit_batch(&[receipt(record.clone())], &[]) {
                Ok(mut outcomes) => return outcomes.remove(0),
                Err(e) if e.kind == StoreErrorKind::Busy && attempt < 100 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("commit: {e}"),
            }
        }
    }

    /// Two nodes (two handles opened separately on one store) receive the
    /// same message at once: exactly one stores it, the other gets its
    /// receipt.
    pub fn two_handles_commit_copies_of_one_message_concurrently(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = open(dir.path()).store;
        let second = open(dir.path()).store;
        const ROUNDS: usize = 10;
        for round in 0..ROUNDS {
            let record = accepted("ACME", &format!("<race{round}@acme>"));
            let barrier = Barrier::new(2);
            let outcomes: Vec<Committed> = std::thread::scope(|s| {
                let racers: Vec<_> = [first.as_ref(), second.as_ref()]
                    .into_iter()
                    .map(|store| {
                        let (barrier, record) = (&barrier, &record);
                        s.spawn(move || {
                            barrier.wait();
                            commit_retrying(store, record)
                        })
                    })
                    .collect();
                racers
                    .into_iter()
                    .map(|racer| racer.join().expect("racer"))
                    .collect()
            });
            let stored: Vec<i64> = outcomes
                .iter()
                .filter_map(|o| match o {
                    Committed::Stored(id) => Some(*id),
                    Committed::Duplicate(_) => None,
                })
                .collect();
            assert_eq!(stored.len(), 1, "round {round}: {outcomes:?}");
            assert!(
                outcomes.iter().any(
                    |o| matches!(o, Committed::Duplicate(r) if r.record_id == stored[0] && r.body == b"mdn")
                ),
                "round {round}: the other copy gets the stored one's receipt: {outcomes:?}"
            );
        }
        for store in [&first, &second] {
            assert_eq!(store.recent_messages(100).expect("list").len(), ROUNDS);
        }
    }

    /// A 64 MiB document, given in uneven slices, comes back equal.
    pub fn a_64_mib_document_round_trip(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { documents, .. } = open(dir.path());
        let big: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let (head, tail) = big.split_at(5_000_001);
        let header: &[u8] = b"H: v\r\n\r\n";
        let staged = documents
            .stage(&parts(&[("request", &[header, head, tail])]))
            .expect("stage");
        documents.make_durable().expect("durable");
        let reference = &staged.references[0];
        let read = documents.read(reference).expect("read");
        assert_eq!(read.len(), header.len() + big.len());
        assert!(read[..header.len()] == *header && read[header.len()..] == big[..]);
        drop(read);
        // Staged from a file too, and kept for an execution from where it
        // is stored (never read into memory by the store).
        let mut file = tempfile::tempfile().expect("temp file");
        std::io::Write::write_all(&mut file, &big).expect("write");
        let from_file = documents
            .stage(&[Part::new("payload", vec![Piece::File(&file)])])
            .expect("stage a file");
        documents.make_durable().expect("durable");
        let payload = &from_file.references[0];
        assert_eq!(documents.length(payload).expect("length"), big.len() as u64);
        let kept = documents
            .keep_stored("e-big", 0, payload)
            .expect("keep stored");
        documents.make_durable().expect("durable");
        assert_ne!(&kept, payload);
        assert_eq!(documents.length(&kept).expect("length"), big.len() as u64);
        assert!(
            documents.read(&kept).expect("read kept") == big,
            "kept copy"
        );
        let small = documents
            .stage(&parts(&[("payload", &[b"tiny".as_slice()])]))
            .expect("stage");
        let kept_small = documents
            .keep_stored("e-small", 0, &small.references[0])
            .expect("keep small");
        documents.make_durable().expect("durable");
        assert_eq!(documents.read(&kept_small).expect("read"), b"tiny");
        assert_eq!(documents.ends_with(reference, tail), Some(true));
        assert_eq!(documents.ends_with(reference, &big[..1000]), Some(false));
        assert_eq!(documents.remove(std::slice::from_ref(reference)), 1);
        assert!(!documents.exists(reference));
    }
}

mod outbox_contract {
    use super::*;
    use atom::store::outbox::{state, NewOutbound, OutboundBytes, OutboxFilter};

    fn new<'a>(execution: &'a str, document: u32, bytes: OutboundBytes<'a>) -> NewOutbound<'a> {
        NewOutbound {
            execution_id: execution,
            step: 2,
            document,
            process: "invoices",
            partner: "acme",
            as2_from: "US",
            as2_to: "ACME",
            message_id: if document == 0 { "<a@US>" } else { "<b@US>" },
            subject: "Invoice",
            file_name: Some("INV-1.x12"),
            bytes,
            size: 5,
            created_at: "2026-11-28T12:00:00Z",
            first_attempt: None,
        }
    }

    /// A row is written once per (execution, step, document); a second
    /// enqueue (a retry, a rerun, a recovery) gets the first one, with its
    /// Message-ID and bytes; updates can be made conditional; it survives a
    /// reopen.
    pub fn outbox_rows_are_written_once_and_updated_durably(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let first = store
            .outbox_enqueue(&new("execution-1", 0, OutboundBytes::Inline(b"hello")))
            .expect("enqueue");
        assert_eq!(first.status, state::QUEUED);
        assert_eq!(first.attempts, 0);
        assert_eq!(first.payload_ref, None);
        let mut again = new("execution-1", 0, OutboundBytes::Inline(b"other"));
        again.message_id = "<c@US>";
        let second = store.outbox_enqueue(&again).expect("enqueue again");
        assert_eq!(second.id, first.id);
        assert_eq!(second.message_id, "<a@US>");
        assert_eq!(
            store.outbox_payload(first.id).expect("payload"),
            Some(b"hello".to_vec())
        );
        let stored = store
            .outbox_enqueue(&new("execution-1", 1, OutboundBytes::Stored("db:7")))
            .expect("enqueue by reference");
        assert_eq!(stored.payload_ref.as_deref(), Some("db:7"));
        // A new row may start with its first attempt counted.
        let mut started = new("execution-2", 0, OutboundBytes::Inline(b"hello"));
        started.first_attempt = Some(("2026-11-28T12:00:01Z", 7));
        let started = store.outbox_enqueue(&started).expect("enqueue started");
        assert_eq!(started.status, state::SENDING);
        assert_eq!(started.attempts, 1);
        assert_eq!(started.first_attempt_at_us, Some(7));
        assert_eq!(
            started.last_attempt_at.as_deref(),
            Some("2026-11-28T12:00:01Z")
        );
        // An outcome written lazily reads back at once.
        let mut done = started.clone();
        done.status = state::ACKNOWLEDGED.into();
        let lazy = atom::store::outbox::OutboxUpdate {
            lazy: true,
            ..done.update()
        };
        assert!(store.outbox_update(&lazy, None, None).expect("lazy update"));
        assert_eq!(
            store
                .outbox_row(started.id)
                .expect("read")
                .expect("row")
                .status,
            state::ACKNOWLEDGED
        );
        assert_eq!(store.outbox_payload(stored.id).expect("payload"), None);

        let mut sending = first.clone();
        sending.status = state::SENDING.into();
        sending.attempts = 1;
        sending.first_attempt_at_us = Some(42);
        sending.mdn = Some(b"receipt".to_vec());
        assert!(store
            .outbox_update(&sending.update(), Some(state::QUEUED), None)
            .expect("update"));
        assert!(
            !store
                .outbox_update(&sending.update(), Some(state::QUEUED), None)
                .expect("conditional update"),
            "no longer queued"
        );
        assert!(store
            .outbox_update(&sending.update(), None, Some("<new@US>"))
            .expect("new Message-ID"));
        drop(store);

        let store = open(dir.path()).store;
        let row = store
            .outbox_row(first.id)
            .expect("read")
            .expect("still there");
        assert_eq!(row.status, state::SENDING);
        assert_eq!(row.attempts, 1);
        assert_eq!(row.first_attempt_at_us, Some(42));
        assert_eq!(row.message_id, "<new@US>");
        assert_eq!(row.mdn.as_deref(), Some(&b"receipt"[..]));
        assert_eq!(row.file_name.as_deref(), Some("INV-1.x12"));
        let filter = |status: Option<&str>| OutboxFilter {
            status: status.map(str::to_string),
            limit: 10,
            ..OutboxFilter::default()
        };
        assert_eq!(store.outbox_list(&filter(None)).expect("list").len(), 3);
        let queued = store
            .outbox_list(&filter(Some(state::QUEUED)))
            .expect("list");
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].id, stored.id);
        assert!(store.outbox_row(999_999).expect("read").is_none());
    }
}

/// Searching the message log (`store/search.rs`) and the activity
/// overview, the same on every backend.
mod search_contract {
    use super::*;
    use atom::store::outbox::{NewOutbound, OutboundBytes};
    use atom::store::{DispositionFilter, MessageSearch};

    /// A logged message with the searched fields given.
    #[allow(clippy::too_many_arguments)]
    fn logged(
        from: &str,
        to: &str,
        message_id: &str,
        subject: Option<&str>,
        file_name: Option<&str>,
        mime_type: Option<&str>,
        disposition: &str,
        received_at: &str,
    ) -> MessageRecord {
        MessageRecord {
            as2_to: to.into(),
            subject: subject.map(Into::into),
            file_name: file_name.map(Into::into),
            mime_type: mime_type.map(Into::into),
            disposition: disposition.into(),
            error: (disposition != "processed").then(|| disposition.into()),
            received_at: received_at.into(),
            dedupe: None,
            ..contract::accepted(from, message_id)
        }
    }

    /// Logs the records in one batch; their ids in order.
    fn log(store: &dyn Store, records: Vec<MessageRecord>) -> Vec<i64> {
        let receipts: Vec<Receipt> = records
            .into_iter()
            .map(|message| Receipt {
                message,
                execution: None,
            })
            .collect();
        store.insert_receipts(&receipts).expect("logs")
    }

    fn ids(store: &dyn Store, search: &MessageSearch) -> Vec<i64> {
        store
            .search_messages(search)
            .unwrap_or_else(|e| panic!("{search:?}: {e}"))
            .into_iter()
            .map(|row| row.id)
            .collect()
    }

    /// A search with one or more fields set (page of 50 unless set).
    fn search(set: impl FnOnce(&mut MessageSearch)) -> MessageSearch {
        let mut s = MessageSearch::default();
        set(&mut s);
        s
    }

    fn text(value: &str) -> Option<String> {
        Some(value.to_string())
    }

    /// Every filter alone and some together, newest first.
    pub fn message_search_filters_alone_and_together(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let store = store.as_ref();
        let x12 = Some("application/edi-x12");
        let id = log(
            store,
            vec![
                logged(
                    "ACME",
                    "US",
                    "<a@acme>",
                    Some("Invoice 1"),
                    Some("INV-001.edi"),
                    x12,
                    "processed",
                    "2026-01-01T10:00:00Z",
                ),
                logged(
                    "ACME",
                    "US",
                    "<b@acme>",
                    Some("Invoice 2"),
                    Some("INV-002.edi"),
                    x12,
                    "processed/error: decryption-failed",
                    "2026-01-01T11:00:00.5Z",
                ),
                logged(
                    "BETA",
                    "US",
                    "<c@beta>",
                    Some("Order 1"),
                    Some("ORD-1.xml"),
                    Some("application/xml"),
                    "processed",
                    "2026-01-02T00:00:00Z",
                ),
                // Logged without angle brackets (as a partner sent it).
                logged(
                    "BETA",
                    "EU",
                    "d@beta",
                    Some("invoice lower"),
                    Some("inv-lower.edi"),
                    x12,
                    "processed",
                    "2026-01-02T12:00:00.25Z",
                ),
                logged(
                    "ACME",
                    "EU",
                    "<e@acme>",
                    None,
                    None,
                    None,
                    "processed/warning: duplicate-document",
                    "2026-01-03T00:00:00Z",
                ),
            ],
        );
        let (a, b, c, d, e) = (id[0], id[1], id[2], id[3], id[4]);
        let cases: Vec<(&str, MessageSearch, Vec<i64>)> = vec![
            ("nothing", search(|_| {}), vec![e, d, c, b, a]),
            (
                "empty strings",
                search(|s| {
                    s.subject = text("");
                    s.as2_from = text("");
                }),
                vec![e, d, c, b, a],
            ),
            ("from", search(|s| s.as2_from = text("ACME")), vec![e, b, a]),
            ("from, exact", search(|s| s.as2_from = text("acme")), vec![]),
            (
                "from, not a prefix",
                search(|s| s.as2_from = text("ACM")),
                vec![],
            ),
            ("to", search(|s| s.as2_to = text("EU")), vec![e, d]),
            (
                "message id",
                search(|s| s.message_id = text("<b@acme>")),
                vec![b],
            ),
            (
                "message id, bare",
                search(|s| s.message_id = text("b@acme")),
                vec![b],
            ),
            (
                "message id logged bare",
                search(|s| s.message_id = text("d@beta")),
                vec![d],
            ),
            (
                "message id logged bare, asked with brackets",
                search(|s| s.message_id = text("<d@beta>")),
                vec![d],
            ),
            (
                "message id, not a prefix",
                search(|s| s.message_id = text("<b@")),
                vec![],
            ),
            (
                "subject prefix",
                search(|s| s.subject = text("Invoice")),
                vec![b, a],
            ),
            (
                "subject, case-sensitive",
                search(|s| s.subject = text("invoice")),
                vec![d],
            ),
            (
                "subject, whole",
                search(|s| s.subject = text("Invoice 1")),
                vec![a],
            ),
            (
                "subject, longer than any",
                search(|s| s.subject = text("Invoice 10")),
                vec![],
            ),
            (
                "file name prefix",
                search(|s| s.file_name = text("INV-")),
                vec![b, a],
            ),
            (
                "file name, whole",
                search(|s| s.file_name = text("ORD-1.xml")),
                vec![c],
            ),
            (
                "file name, case-sensitive",
                search(|s| s.file_name = text("inv")),
                vec![d],
            ),
            (
                "file name, not a suffix",
                search(|s| s.file_name = text(".edi")),
                vec![],
            ),
            (
                "mime type",
                search(|s| s.mime_type = text("application/xml")),
                vec![c],
            ),
            (
                "mime type, exact",
                search(|s| s.mime_type = text("application")),
                vec![],
            ),
            (
                "processed",
                search(|s| s.disposition = Some(DispositionFilter::Processed)),
                vec![d, c, a],
            ),
            (
                "errors",
                search(|s| s.disposition = Some(DispositionFilter::Error)),
                vec![e, b],
            ),
            (
                "received from a day",
                search(|s| s.received_from = text("2026-01-02")),
                vec![e, d, c],
            ),
            (
                "received before a day",
                search(|s| s.received_to = text("2026-01-02")),
                vec![b, a],
            ),
            (
                "received between",
                search(|s| {
                    s.received_from = text("2026-01-01T11:00");
                    s.received_to = text("2026-01-02T12:00:00Z");
                }),
                vec![c, b],
            ),
            (
                "from and errors",
                search(|s| {
                    s.as2_from = text("ACME");
                    s.disposition = Some(DispositionFilter::Error);
                }),
                vec![e, b],
            ),
            (
                "from and file name",
                search(|s| {
                    s.as2_from = text("BETA");
                    s.file_name = text("ORD");
                }),
                vec![c],
            ),
            (
                "from, subject and date",
                search(|s| {
                    s.as2_from = text("ACME");
                    s.subject = text("Invoice");
                    s.received_to = text("2026-01-01T11:00:00Z");
                }),
                vec![a],
            ),
            (
                "to, mime type and processed",
                search(|s| {
                    s.as2_to = text("EU");
                    s.mime_type = text("application/edi-x12");
                    s.disposition = Some(DispositionFilter::Processed);
                }),
                vec![d],
            ),
            (
                "everything",
                search(|s| {
                    s.as2_from = text("ACME");
                    s.as2_to = text("US");
                    s.message_id = text("a@acme");
                    s.subject = text("Inv");
                    s.file_name = text("INV-00");
                    s.mime_type = text("application/edi-x12");
                    s.disposition = Some(DispositionFilter::Processed);
                    s.received_from = text("2026-01-01");
                    s.received_to = text("2026-01-02");
                    s.before_id = Some(b);
                }),
                vec![a],
            ),
            ("limit", search(|s| s.limit = 2), vec![e, d]),
            ("before id", search(|s| s.before_id = Some(c)), vec![b, a]),
        ];
        for (name, search, want) in cases {
            assert_eq!(ids(store, &search), want, "{name}: {search:?}");
        }
        // Rows come whole.
        let row = &store
            .search_messages(&search(|s| s.message_id = text("<c@beta>")))
            .expect("search")[0];
        assert_eq!(row.record.subject.as_deref(), Some("Order 1"));
        assert_eq!(row.record.received_at, "2026-01-02T00:00:00Z");
        assert_eq!(row.record.mdn_body, b"mdn");
    }

    /// Pages of `limit` by `before_id` list every match once, newest
    /// first, filtered or not; a page is at most 1,000; 0 is 50.
    pub fn message_search_pages_without_gaps_or_repeats(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let store = store.as_ref();
        let records = (0..1_100)
            .map(|i| {
                logged(
                    if i % 3 == 0 { "ACME" } else { "BETA" },
                    "US",
                    &format!("<{i}@x>"),
                    None,
                    Some(&format!("F{:04}", i)),
                    None,
                    "processed",
                    &now_rfc3339(),
                )
            })
            .collect();
        let all = log(store, records);
        let page_through = |filter: MessageSearch, limit: u32| {
            let mut seen = Vec::new();
            let mut before = None;
            loop {
                let page = ids(
                    store,
                    &MessageSearch {
                        before_id: before,
                        limit,
                        ..filter.clone()
                    },
                );
                assert!(page.len() <= limit as usize);
                if page.is_empty() {
                    break;
                }
                before = page.last().copied();
                seen.extend(page);
            }
            seen
        };
        let newest_first: Vec<i64> = all.iter().rev().copied().collect();
        assert_eq!(page_through(MessageSearch::default(), 50), newest_first);
        assert_eq!(page_through(MessageSearch::default(), 333), newest_first);
        let acme: Vec<i64> = newest_first
            .iter()
            .copied()
            .enumerate()
            .filter(|(k, _)| (1_099 - k) % 3 == 0)
            .map(|(_, id)| id)
            .collect();
        assert_eq!(acme.len(), 367);
        assert_eq!(
            page_through(search(|s| s.as2_from = text("ACME")), 20),
            acme
        );
        // A prefix: F0100..F0199, sorted by id, not by name.
        let hundreds: Vec<i64> = all[100..200].iter().rev().copied().collect();
        assert_eq!(
            page_through(search(|s| s.file_name = text("F01")), 7),
            hundreds
        );
        assert_eq!(ids(store, &search(|s| s.limit = 5_000)).len(), 1_000);
        assert_eq!(ids(store, &search(|_| {})).len(), 50);
        assert_eq!(
            ids(store, &search(|s| s.before_id = Some(all[0]))),
            Vec::<i64>::new()
        );
    }

    /// Searches whose matches lie below the newest rows a store reads
    /// first: the page goes on through the range's index, or by reading
    /// on from the newest, and pages still meet without gaps or repeats.
    pub fn message_search_beyond_the_newest_rows(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let store = store.as_ref();
        const ROWS: i64 = 5_000;
        // Row n (from 1) is received n - 1 minutes after the start.
        let at = |n: i64| {
            (time::macros::datetime!(2026-01-01 00:00:00 UTC) + time::Duration::minutes(n - 1))
                .format(&time::format_description::well_known::Rfc3339)
                .expect("formats")
        };
        let records = (1..=ROWS)
            .map(|n| {
                let old = n <= 100 || n > ROWS - 6;
                let name = format!("{}-{n:05}", if old { "OLD" } else { "NEW" });
                // Old names were processed, new ones refused.
                let disposition = if old {
                    "processed"
                } else {
                    "processed/error: x"
                };
                logged(
                    "ACME",
                    "US",
                    &format!("<{n}@x>"),
                    Some(&name),
                    Some(&name),
                    None,
                    disposition,
                    &at(n),
                )
            })
            .collect();
        let id = log(store, records);
        assert_eq!((id[0], id[4_999]), (1, ROWS), "ids from 1");
        let newest_first = |ids: &mut dyn Iterator<Item = i64>| {
            let mut all: Vec<i64> = ids.collect();
            all.sort_by(|a, b| b.cmp(a));
            all
        };
        let page_through = |filter: &MessageSearch, limit: u32| {
            let mut seen = Vec::new();
            let mut before = None;
            loop {
                let page = ids(
                    store,
                    &MessageSearch {
                        before_id: before,
                        limit,
                        ..filter.clone()
                    },
                );
                if page.is_empty() {
                    break;
                }
                before = page.last().copied();
                seen.extend(page);
            }
            seen
        };
        let old_names = search(|s| s.file_name = text("OLD-"));
        let old: Vec<i64> = newest_first(&mut (1..=100).chain(ROWS - 5..=ROWS));
        assert_eq!(ids(store, &old_names), old[..50]);
        assert_eq!(page_through(&old_names, 7), old);
        assert_eq!(page_through(&search(|s| s.subject = text("OLD-")), 50), old);
        // Matches end long before the newest rows: through the index.
        let early = search(|s| s.received_to = Some(at(100)));
        assert_eq!(ids(store, &early), newest_first(&mut (50..=99)));
        assert_eq!(page_through(&early, 30), newest_first(&mut (1..=99)));
        // Matches end a little before the newest rows, and are many: read on.
        let most = search(|s| s.received_to = Some(at(2_900)));
        assert_eq!(ids(store, &most), newest_first(&mut (2_850..=2_899)));
        assert_eq!(page_through(&most, 1_000), newest_first(&mut (1..=2_899)));
        let between = search(|s| {
            s.received_from = Some(at(10));
            s.received_to = Some(at(60));
        });
        assert_eq!(ids(store, &between), newest_first(&mut (10..=59)));
        let both = search(|s| {
            s.file_name = text("OLD-");
            s.received_to = Some(at(ROWS - 4));
        });
        assert_eq!(
            page_through(&both, 20),
            newest_first(&mut (1..=100).chain(ROWS - 5..=ROWS - 5))
        );
        // Through the dates' index, whose newest ids hold no match.
        let processed_early = search(|s| {
            s.received_to = Some(at(2_950));
            s.disposition = Some(DispositionFilter::Processed);
        });
        assert_eq!(ids(store, &processed_early), newest_first(&mut (51..=100)));
        // Below an id inside the run of old names.
        let below = MessageSearch {
            before_id: Some(51),
            ..old_names.clone()
        };
        assert_eq!(ids(store, &below), newest_first(&mut (1..=50)));
    }

    /// Prefixes whose last character is the last of its UTF-8 length, of
    /// the range before the surrogates, or `char::MAX`.
    pub fn message_search_prefix_bounds(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let store = store.as_ref();
        let names = [
            "a",
            "a\u{7F}",
            "a\u{7F}z",
            "a\u{80}",
            "a\u{10FFFF}",
            "a\u{10FFFF}x",
            "a\u{10FFFF}\u{10FFFF}",
            "b",
            "x\u{D7FF}",
            "x\u{D7FF}1",
            "x\u{E000}",
            "é",
            "éa",
            "ê",
            "\u{10FFFF}",
            "\u{10FFFF}z",
            "Z",
            "Za",
            "[",
        ];
        let records = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                logged(
                    "ACME",
                    "US",
                    &format!("<{i}@x>"),
                    Some(name),
                    Some(name),
                    None,
                    "processed",
                    "2026-01-01T00:00:00Z",
                )
            })
            .collect();
        let id = log(store, records);
        for prefix in [
            "a",
            "a\u{7F}",
            "a\u{10FFFF}",
            "a\u{10FFFF}\u{10FFFF}",
            "x\u{D7FF}",
            "é",
            "\u{10FFFF}",
            "Z",
            "ZZ",
            "b",
        ] {
            let want: Vec<i64> = names
                .iter()
                .zip(&id)
                .rev()
                .filter(|(name, _)| name.starts_with(prefix))
                .map(|(_, id)| *id)
                .collect();
            assert_eq!(
                ids(store, &search(|s| s.file_name = text(prefix))),
                want,
                "file name {prefix:?}"
            );
            assert_eq!(
                ids(store, &search(|s| s.subject = text(prefix))),
                want,
                "subject {prefix:?}"
            );
        }
    }

    /// Bounds are whole seconds: a time inside the bound's second is at
    /// or after it, and not before it, whatever its fraction; offsets are
    /// converted to UTC.
    pub fn message_search_dates_at_second_boundaries(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let store = store.as_ref();
        let times = [
            "2025-12-31T23:59:59.999999999Z",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00.5Z",
            "2026-01-01T00:00:00.000001Z",
            "2026-01-01T00:00:01Z",
        ];
        let records = times
            .iter()
            .enumerate()
            .map(|(i, at)| {
                logged(
                    "ACME",
                    "US",
                    &format!("<{i}@x>"),
                    None,
                    None,
                    None,
                    "processed",
                    at,
                )
            })
            .collect();
        let id = log(store, records);
        let newest_first = |k: &[usize]| k.iter().rev().map(|&k| id[k]).collect::<Vec<_>>();
        for (from, to, want) in [
            (
                Some("2026-01-01T00:00:00Z"),
                None,
                newest_first(&[1, 2, 3, 4]),
            ),
            (Some("2026-01-01"), None, newest_first(&[1, 2, 3, 4])),
            (Some("2026-01-01T00:00"), None, newest_first(&[1, 2, 3, 4])),
            (
                Some("2026-01-01T01:00:00+01:00"),
                None,
                newest_first(&[1, 2, 3, 4]),
            ),
            (
                Some("2025-12-31T19:00:00-05:00"),
                None,
                newest_first(&[1, 2, 3, 4]),
            ),
            (
                Some("2026-01-01T00:00:00.7Z"),
                None,
                newest_first(&[1, 2, 3, 4]),
            ),
            (Some("2026-01-01T00:00:01Z"), None, newest_first(&[4])),
            (None, Some("2026-01-01T00:00:00Z"), newest_first(&[0])),
            (None, Some("2026-01-01"), newest_first(&[0])),
            (
                None,
                Some("2026-01-01T00:00:01Z"),
                newest_first(&[0, 1, 2, 3]),
            ),
            (
                None,
                Some("2026-01-01T00:00:01.9Z"),
                newest_first(&[0, 1, 2, 3]),
            ),
            (
                Some("2025-12-31T23:59:59Z"),
                Some("2026-01-01T00:00:00Z"),
                newest_first(&[0]),
            ),
            (Some("2026-01-01"), Some("2026-01-01"), vec![]),
        ] {
            let s = search(|s| {
                s.received_from = from.map(Into::into);
                s.received_to = to.map(Into::into);
            });
            assert_eq!(ids(store, &s), want, "from {from:?} to {to:?}");
        }
    }

    /// A date that is none of the forms is refused, naming the field.
    pub fn message_search_refuses_bad_dates(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        for (field, value) in [
            ("received_from", "yesterday"),
            ("received_to", "2026-02-30"),
            ("received_from", "2026-01-01 10:00"),
            ("received_to", "2026-01-01T10:00:00"),
            ("received_from", "01/02/2026"),
        ] {
            let s = search(|s| {
                if field == "received_from" {
                    s.received_from = text(value);
                } else {
                    s.received_to = text(value);
                }
            });
            let e = store.search_messages(&s).expect_err(value);
            assert!(
                e.message.contains(field)
                    && e.message.contains(value)
                    && e.message.contains("RFC 3339")
                    && e.message.contains("YYYY-MM-DD"),
                "{e}"
            );
            assert!(s.validate().is_err());
        }
        let e = store.activity("an hour ago").expect_err("a bad since");
        assert!(e.message.contains("since"), "{e}");
    }

    fn execution(id: &str, status: &str) -> ExecutionRecord {
        ExecutionRecord {
            id: id.into(),
            process: "p".into(),
            version: "1".into(),
            mode: "general".into(),
            status: status.into(),
            attempts: 1,
            properties_json: "{}".into(),
            payload_path: "x".into(),
            queued_at: now_rfc3339(),
            queued_at_us: 1,
            ..ExecutionRecord::default()
        }
    }

    /// Messages per minute since a time (errors apart), executions per
    /// status, pending asynchronous MDNs, the outbox per state.
    pub fn activity_counts(open: Opener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Backend { store, .. } = open(dir.path());
        let store = store.as_ref();
        let at = |minutes_ago: i64, extra_ms: i64| {
            (time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago)
                + time::Duration::milliseconds(extra_ms))
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formats")
        };
        let empty = store.activity(&at(60, 0)).expect("activity");
        assert!(empty.per_minute.is_empty());
        assert_eq!(empty.executions_by_status.len(), status::ALL.len());
        assert!(empty.executions_by_status.iter().all(|(_, n)| *n == 0));
        assert!(empty.outbox_by_state.is_empty());
        // Two minutes with messages, one of them with an error; an older one.
        let early = at(20, 0);
        let late = at(10, 0);
        let minute_of = |t: &str| t[..16].to_string();
        let message = |n: u32, received: &str, disposition: &str| {
            logged(
                "ACME",
                "US",
                &format!("<act{n}@x>"),
                None,
                None,
                None,
                disposition,
                received,
            )
        };
        let mut pending = message(5, &late, "processed");
        pending.mdn_mode = "async".into();
        pending.mdn_status = "pending".into();
        let receipts = vec![
            Receipt {
                message: message(1, &at(300, 0), "processed"),
                execution: None,
            },
            Receipt {
                message: message(2, &early, "processed"),
                execution: Some(execution("e1", status::COMPLETE)),
            },
            Receipt {
                message: message(3, &early, "processed/error: decryption-failed"),
                execution: None,
            },
            Receipt {
                message: message(4, &late, "processed"),
                execution: Some(execution("e2", status::ERROR)),
            },
            Receipt {
                message: pending,
                execution: Some(execution("e3", status::COMPLETE)),
            },
        ];
        store.insert_receipts(&receipts).expect("logs");
        let new = |execution: &'static str| NewOutbound {
            execution_id: execution,
            step: 0,
            document: 0,
            process: "p",
            partner: "acme",
            as2_from: "US",
            as2_to: "ACME",
            message_id: execution,
            subject: "s",
            file_name: None,
            bytes: OutboundBytes::Inline(b"x"),
            size: 1,
            created_at: "2026-11-28T12:00:00Z",
            first_attempt: None,
        };
        store.outbox_enqueue(&new("e1")).expect("enqueue");
        store.outbox_enqueue(&new("e3")).expect("enqueue");
        let mut sending = new("e2");
        sending.first_attempt = Some(("2026-11-28T12:00:00Z", 1));
        store.outbox_enqueue(&sending).expect("enqueue");

        let activity = store.activity(&at(60, 0)).expect("activity");
        let minutes: Vec<(String, u64, u64)> = activity
            .per_minute
            .iter()
            .map(|m| (m.minute.clone(), m.messages, m.errors))
            .collect();
        assert_eq!(
            minutes,
            [(minute_of(&early), 2, 1), (minute_of(&late), 2, 0)]
        );
        let executions: Vec<(&str, u64)> = activity
            .executions_by_status
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        assert_eq!(
            executions,
            [
                (status::STARTED, 0),
                (status::INPROCESS, 0),
                (status::COMPLETE, 2),
                (status::COMPLETE_WARN, 0),
                (status::ERROR, 1),
                (status::ABORTED, 0),
            ]
        );
        assert_eq!(activity.pending_async_mdns, 1);
        assert_eq!(
            activity.outbox_by_state,
            [("queued".to_string(), 2), ("sending".to_string(), 1)]
        );
        // Since is inclusive from its second on; older minutes come in.
        let since_late = store.activity(&late).expect("activity");
        assert_eq!(since_late.per_minute.len(), 1);
        assert_eq!(since_late.per_minute[0].messages, 2);
        let wide = store.activity(&at(400, 0)).expect("activity");
        assert_eq!(wide.per_minute.len(), 3);
        assert_eq!(wide.per_minute[0].minute, minute_of(&at(300, 0)));
        let json = serde_json::to_value(&activity).expect("JSON");
        assert_eq!(json["per_minute"][0]["minute"], minute_of(&early));
        assert_eq!(json["executions_by_status"][2][0], "COMPLETE");
    }
}

/// Tests of one backend: each runs when `available()` says so.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if available() {
                    contract::$name(&open);
                }
            }
        )*
    };
}

/// The search tests of one backend, as [`contract_tests`].
macro_rules! search_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if available() {
                    search_contract::$name(&open);
                }
            }
        )*
    };
}

macro_rules! store_contract {
    ($backend:ident, $open:expr) => {
        store_contract!($backend, $open, || true);
    };
    ($backend:ident, $open:expr, $available:expr) => {
        mod $backend {
            use super::*;

            fn open(dir: &Path) -> Backend {
                ($open)(dir)
            }

            /// False (having said why) when the backend cannot run here.
            fn available() -> bool {
                ($available)()
            }

            contract_tests!(
                a_second_copy_in_one_batch_or_later_is_refused_by_the_store,
                duplicate_window_flushed_by_junk_regression,
                duplicate_window_is_bounded_by_age,
                pause_state_persists,
                listener_states_are_shared,
                old_messages_and_their_files_go_recent_and_pending_ones_stay,
                retention_purges_2000_failed_executions_in_one_pass,
                documents_round_trip,
                documents_are_durable_with_the_rows_that_reference_them,
                leases_claim_renew_expire_and_fence,
                mdn_outbox_leases,
                bundles_published_and_withdrawn,
                two_handles_commit_copies_of_one_message_concurrently,
                a_64_mib_document_round_trip,
            );

            #[test]
            fn outbox_rows_are_written_once_and_updated_durably() {
                if available() {
                    outbox_contract::outbox_rows_are_written_once_and_updated_durably(&open);
                }
            }

            search_tests!(
                message_search_filters_alone_and_together,
                message_search_pages_without_gaps_or_repeats,
                message_search_prefix_bounds,
                message_search_beyond_the_newest_rows,
                message_search_dates_at_second_boundaries,
                message_search_refuses_bad_dates,
                activity_counts,
            );
        }
    };
}

store_contract!(sqlite, |dir: &Path| {
    let store = SqliteStore::open(dir).expect("the SQLite store opens");
    Backend {
        documents: Box::new(store.documents(dir)),
        store: Box::new(store),
    }
});

store_contract!(
    postgres,
    |dir: &Path| {
        let store = PgStore::open(&pg::url(dir)).expect("the PostgreSQL store opens");
        Backend {
            documents: Box::new(store.documents()),
            store: Box::new(store),
        }
    },
    pg::available
);

/// One PostgreSQL cluster for this test binary, and a database in it per
/// test directory (so that reopening a directory reopens its store).
///
/// One cluster rather than one per test: a start costs about 2 s, a
/// database about 0.2 s. The cluster lives in a static, which is never
/// dropped, so an `atexit` handler drops it (stopping the server and
/// removing its directory) when the test binary exits, whether tests
/// passed or failed. Only a killed test binary leaves it running.
mod pg {
    use std::collections::HashSet;
    use std::hash::{Hash, Hasher};
    use std::path::Path;
    use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};

    use super::common::postgres::Postgres;

    struct Cluster {
        postgres: Postgres,
        databases: HashSet<String>,
    }

    static CLUSTER: Mutex<Option<Cluster>> = Mutex::new(None);
    static STARTED: OnceLock<bool> = OnceLock::new();

    fn cluster() -> MutexGuard<'static, Option<Cluster>> {
        // A test that panicked holding it left nothing half-done that matters.
        CLUSTER
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the cluster on first use. False when PostgreSQL is missing
    /// and `CI` is unset (then the test passes, saying it was skipped);
    /// with `CI` set a missing PostgreSQL fails the test.
    pub fn available() -> bool {
        let started = *STARTED.get_or_init(|| match Postgres::new() {
            Some(postgres) => {
                *cluster() = Some(Cluster {
                    postgres,
                    databases: HashSet::new(),
                });
                // SAFETY: registers a plain function to run at exit.
                unsafe { libc::atexit(stop_cluster) };
                true
            }
            None => false,
        });
        if !started {
            eprintln!("SKIPPED: this PostgreSQL store test needs PostgreSQL");
        }
        started
    }

    extern "C" fn stop_cluster() {
        // Never wait at exit: a lock still held means a test thread died
        // holding it, and the cluster is left to the OS.
        let taken = match CLUSTER.try_lock() {
            Ok(mut guard) => guard.take(),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().take(),
            Err(TryLockError::WouldBlock) => None,
        };
        drop(taken);
    }

    fn database(dir: &Path) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        dir.hash(&mut hasher);
        format!("atom_{:016x}", hasher.finish())
    }

    /// The URL of the database of `dir`, created (owned by `atom`) on
    /// first use. Call [`available`] first.
    pub fn url(dir: &Path) -> String {
        let name = database(dir);
        let mut guard = cluster();
        let cluster = guard.as_mut().expect("pg::available() first");
        if cluster.databases.insert(name.clone()) {
            cluster
                .postgres
                .psql(&format!("CREATE DATABASE {name} OWNER atom"));
        }
        format!(
            "postgres://atom:{}@127.0.0.1:{}/{name}",
            cluster.postgres.password(),
            cluster.postgres.port()
        )
    }

    /// Runs `sql` as `atom` in the database of `dir`.
    pub fn psql(dir: &Path, sql: &str) -> String {
        let url = url(dir);
        let guard = cluster();
        let cluster = guard.as_ref().expect("pg::available() first");
        cluster
            .postgres
            .psql_at(&url, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }
}

/// What only the PostgreSQL store has: its migrations and its URL.
mod postgres_only {
    use super::*;

    /// Each search filter can be answered from its index: the prefixes'
    /// `COLLATE "C"` matches their indexes', the errors' literal the
    /// partial index's (sequential scans priced out, as the table is small).
    #[test]
    fn each_search_filter_can_use_its_index() {
        use atom::store::{DispositionFilter, MessageSearch};
        if !pg::available() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PgStore::open(&pg::url(dir.path())).expect("opens");
        let text = |v: &str| Some(v.to_string());
        let cases: Vec<(&str, MessageSearch)> = vec![
            (
                "messages_from",
                MessageSearch {
                    as2_from: text("ACME"),
                    ..Default::default()
                },
            ),
            (
                "messages_to",
                MessageSearch {
                    as2_to: text("US"),
                    ..Default::default()
                },
            ),
            (
                "messages_mime_type",
                MessageSearch {
                    mime_type: text("text/plain"),
                    ..Default::default()
                },
            ),
            (
                "messages_received_at",
                MessageSearch {
                    received_to: text("2026-01-02"),
                    ..Default::default()
                },
            ),
            (
                "messages_message_id",
                MessageSearch {
                    message_id: text("<1@x>"),
                    ..Default::default()
                },
            ),
            (
                "messages_subject",
                MessageSearch {
                    subject: text("Inv"),
                    ..Default::default()
                },
            ),
            (
                "messages_file_name",
                MessageSearch {
                    file_name: text("INV"),
                    ..Default::default()
                },
            ),
            (
                "messages_errors",
                MessageSearch {
                    disposition: Some(DispositionFilter::Error),
                    ..Default::default()
                },
            ),
            (
                "messages_received_at",
                MessageSearch {
                    received_from: text("2026-01-01"),
                    received_to: text("2026-01-02"),
                    ..Default::default()
                },
            ),
            (
                "messages_from",
                MessageSearch {
                    as2_from: text("ACME"),
                    before_id: Some(9),
                    ..Default::default()
                },
            ),
        ];
        for (index, search) in cases {
            let plan = store.explain_search(&search, true).expect("explains");
            assert!(
                plan.contains(index),
                "{search:?} should use {index}:\n{plan}"
            );
            assert!(!plan.contains("Seq Scan"), "{search:?}:\n{plan}");
        }
    }

    #[test]
    fn three_concurrent_opens_on_a_fresh_database_migrate_once() {
        if !pg::available() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let url = pg::url(dir.path());
        let barrier = Barrier::new(3);
        let stores: Vec<PgStore> = std::thread::scope(|s| {
            let openers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        PgStore::open(&url)
                    })
                })
                .collect();
            openers
                .into_iter()
                .map(|opener| match opener.join().expect("opener") {
                    Ok(store) => store,
                    Err(e) => panic!("open: {e}"),
                })
                .collect()
        });
        let versions = pg::psql(
            dir.path(),
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
        );
        let expected: Vec<String> = (1..=atom::store::postgres::SCHEMA_VERSION)
            .map(|v| v.to_string())
            .collect();
        assert_eq!(versions, expected.join(","));
        for store in &stores {
            store.probe().expect("each store works");
        }
    }

    /// The duplicate rule across nodes, made deterministic: another
    /// node's transaction has inserted a copy and not committed yet. The
    /// copy committed here waits for it, then is a duplicate if it
    /// committed, and stored if it rolled back.
    #[test]
    fn a_copy_waits_for_the_open_transaction_of_another_node() {
        if !pg::available() {
            return;
        }
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        for end in ["COMMIT", "ROLLBACK"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = pg::url(dir.path());
            let store = PgStore::open(&url).expect("the PostgreSQL store opens");
            let (other, connection) = runtime
                .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
                .expect("connect");
            runtime.spawn(connection);
            let held: i64 = runtime
                .block_on(async {
                    other.batch_execute("BEGIN").await?;
                    let row = other
                        .query_one(
                            "INSERT INTO messages (listener, as2_from, as2_to, message_id,
                                request_size, disposition, mdn_mode, mdn_status, mdn_headers,
                                mdn_body, received_at, holds_id)
                             VALUES ('acme', 'ACME', 'US', '<1@acme>', 0, 'processed', 'sync',
                                'sent', '[]', 'mdn'::bytea, $1, true)
                             RETURNING id",
                            &[&now_rfc3339()],
                        )
                        .await?;
                    Ok::<_, tokio_postgres::Error>(row.get(0))
                })
                .expect("the other node's insert");
            let copy = Receipt {
                message: contract::accepted("ACME", "<1@acme>"),
                execution: None,
            };
            let outcome = std::thread::scope(|s| {
                let committing = s.spawn(|| store.commit_batch(&[copy], &[]));
                std::thread::sleep(Duration::from_millis(500));
                assert!(
                    !committing.is_finished(),
                    "the copy waits for the other node's transaction"
                );
                runtime.block_on(other.batch_execute(end)).expect(end);
                committing.join().expect("commit thread").expect("commit")
            });
            match (end, &outcome[0]) {
                ("COMMIT", Committed::Duplicate(r)) => {
                    assert_eq!((r.record_id, r.body.as_slice()), (held, b"mdn".as_slice()))
                }
                ("ROLLBACK", Committed::Stored(id)) => assert_ne!(*id, held),
                _ => panic!("{end}: {outcome:?}"),
            }
        }
    }

    /// `sslmode=require` means TLS or nothing: the harness's server has
    /// no TLS, so the store does not open.
    #[test]
    fn sslmode_require_is_not_downgraded() {
        if !pg::available() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("{}?sslmode=require", pg::url(dir.path()));
        let Some(error) = PgStore::open(&url).err() else {
            panic!("opened without TLS");
        };
        let text = error.to_string();
        assert!(text.contains("TLS"), "{text}");
        assert!(!text.contains(&url), "no password in {text}");
    }

    /// Documents a node staged or kept and then died before committing
    /// the rows that reference them (or that retention's row delete left)
    /// are swept; everything a committed row references stays.
    #[test]
    fn unreferenced_documents_left_by_a_crash_are_swept() {
        if !pg::available() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PgStore::open(&pg::url(dir.path())).expect("the PostgreSQL store opens");
        let documents = store.documents();
        let stage = || {
            documents
                .stage(&parts(&[
                    ("request", &[b"raw".as_slice()]),
                    ("payload", &[b"edi".as_slice()]),
                ]))
                .expect("stage")
                .references
        };
        let stored = stage();
        let orphaned = stage(); // staged, never committed
        let mut record = contract::accepted("ACME", "<1@acme>");
        record.raw_path = Some(stored[0].clone());
        record.payload_path = Some(stored[1].clone());
        let execution = ExecutionRecord {
            id: "e1".into(),
            process: "p".into(),
            status: status::STARTED.into(),
            payload_path: stored[1].clone(),
            queued_at: now_rfc3339(),
            ..ExecutionRecord::default()
        };
        store
            .commit_batch(
                &[Receipt {
                    message: record,
                    execution: Some(execution.clone()),
                }],
                &[],
            )
            .expect("commit");
        // The execution kept two documents on a first attempt whose final
        // state never committed, then one on the attempt that finished;
        // another kept one for an execution that does not exist.
        let lost_attempt = documents.keep("e1", 0, b"first try").expect("keep");
        let finished_doc = documents.keep("e1", 0, b"output").expect("keep");
        let no_execution = documents.keep("e9", 0, b"stray").expect("keep");
        let mut finished = execution;
        finished.status = status::COMPLETE.into();
        finished.documents = vec![atom::store::KeptDocument {
            path: finished_doc.clone(),
            size: 6,
            ..Default::default()
        }];
        store.update_executions(&[finished]).expect("finish");

        // Too young: nothing goes, since a commit may still be under way.
        assert_eq!(
            documents
                .sweep_unreferenced(Duration::from_secs(3600))
                .expect("sweep"),
            0
        );
        let removed = documents.sweep_unreferenced(Duration::ZERO).expect("sweep");
        assert_eq!(
            removed, 4,
            "the orphaned message's two, a lost attempt's, a stray"
        );
        for gone in orphaned.iter().chain([&lost_attempt, &no_execution]) {
            assert!(!documents.exists(gone), "{gone} swept");
        }
        assert_eq!(documents.read(&stored[0]).expect("raw"), b"raw");
        assert_eq!(documents.read(&stored[1]).expect("payload"), b"edi");
        assert_eq!(documents.read(&finished_doc).expect("kept"), b"output");
        assert_eq!(
            documents.sweep_unreferenced(Duration::ZERO).expect("sweep"),
            0
        );
    }

    #[test]
    fn errors_name_the_url_without_its_password() {
        // A port nothing listens on (bound, then released).
        let port = common::free_port();
        let url = format!("postgres://atom:s3cret@127.0.0.1:{port}/atom?connect_timeout=5");
        let Some(error) = PgStore::open(&url).err() else {
            panic!("something listens on {port}");
        };
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "store: connecting to postgres://atom@127.0.0.1:{port}/atom?connect_timeout=5: "
            )),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(error.kind, StoreErrorKind::Busy, "{text}");
    }
}

/// Documents to stage, each as chunks in memory.
fn parts<'a>(spec: &[(&'a str, &[&'a [u8]])]) -> Vec<Part<'a>> {
    spec.iter()
        .map(|(name, chunks)| Part::new(name, chunks.iter().map(|c| Piece::Bytes(c)).collect()))
        .collect()
}
