//! The contract every store keeps, run against each backend: duplicates
//! decided by the store whatever the batching, the duplicate window per
//! partner (count and age), pause state across a reopen. A new backend (the
//! PostgreSQL store of a Molecule) joins with one more `store_contract!`
//! line.

use std::path::Path;

use atom::server::inbound::now_rfc3339;
use atom::store::sqlite::SqliteStore;
use atom::store::{Committed, DuplicateWindow, MessageRecord, Receipt, Store};

/// Opens (or reopens) the store kept in a directory.
type Opener<'a> = &'a dyn Fn(&Path) -> Box<dyn Store>;

mod contract {
    use super::*;

    const WINDOW: DuplicateWindow = DuplicateWindow {
        count: 100,
        days: 30,
    };

    fn accepted(from: &str, id: &str) -> MessageRecord {
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
        let store = open(dir.path());
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
        let store = open(dir.path());
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
        let store = open(dir.path());
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
        let store = open(dir.path());
        store.set_paused("p1", true).expect("pause");
        drop(store);
        let reopened = open(dir.path());
        assert_eq!(
            reopened.paused_listeners().expect("read"),
            vec!["p1".to_string()]
        );
        reopened.set_paused("p1", false).expect("resume");
        assert!(reopened.paused_listeners().expect("read").is_empty());
    }
}

macro_rules! store_contract {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;

            fn open(dir: &Path) -> Box<dyn Store> {
                ($open)(dir)
            }

            #[test]
            fn a_second_copy_in_one_batch_or_later_is_refused_by_the_store() {
                contract::a_second_copy_in_one_batch_or_later_is_refused_by_the_store(&open);
            }
            #[test]
            fn duplicate_window_flushed_by_junk_regression() {
                contract::duplicate_window_flushed_by_junk_regression(&open);
            }
            #[test]
            fn duplicate_window_is_bounded_by_age() {
                contract::duplicate_window_is_bounded_by_age(&open);
            }
            #[test]
            fn pause_state_persists() {
                contract::pause_state_persists(&open);
            }
        }
    };
}

store_contract!(sqlite, |dir: &Path| -> Box<dyn Store> {
    Box::new(SqliteStore::open(dir).expect("the SQLite store opens"))
});
