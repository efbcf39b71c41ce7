//! The schema, as versioned migrations. `schema_migrations` records each
//! version applied. Every migration runs in its own transaction, which
//! first takes a transaction-scoped advisory lock: nodes starting together
//! queue on it, and each one re-reads the version under the lock, so every
//! migration is applied exactly once (and a failed one rolls back whole).
//! A migration that cannot run inside a transaction (`CREATE INDEX
//! CONCURRENTLY`) would need a session lock instead.

use super::{err, Result, StoreError};

/// The advisory lock key of migrations ("ATOM" and 1).
const MIGRATION_LOCK: i64 = 0x4154_4f4d_0000_0001;

/// Schema changes in order; version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    // 1: the store, as SQLite's (`sqlite.rs`), with identity ids. `holds_id`
    // is true on the accepted message that owns its (AS2-From, Message-ID)
    // (NULL otherwise); the unique partial index makes a second owner
    // impossible, whatever the concurrency.
    "CREATE TABLE messages (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        listener text,
        as2_from text NOT NULL,
        as2_to text NOT NULL,
        message_id text NOT NULL,
        subject text,
        file_name text,
        mime_type text,
        request_size bigint NOT NULL,
        payload_size bigint,
        encryption text,
        signature text,
        compression text,
        mic text,
        disposition text NOT NULL,
        mdn_mode text NOT NULL,
        mdn_status text NOT NULL,
        mdn_url text,
        mdn_error text,
        mdn_headers text NOT NULL,
        mdn_body bytea NOT NULL,
        raw_path text,
        payload_path text,
        error text,
        received_at text NOT NULL,
        holds_id boolean CHECK (holds_id)
    );
    CREATE UNIQUE INDEX messages_receipt_key ON messages (as2_from, message_id) WHERE holds_id;
    CREATE INDEX messages_partner_window ON messages (listener, as2_from, id) WHERE holds_id;
    CREATE INDEX messages_received_at ON messages (received_at);
    CREATE INDEX messages_pending_mdns ON messages (id)
        WHERE mdn_mode = 'async' AND mdn_status = 'pending';
    CREATE TABLE executions (
        id text PRIMARY KEY,
        message_row bigint NOT NULL,
        process text NOT NULL,
        version text NOT NULL,
        mode text NOT NULL,
        status text NOT NULL,
        attempts bigint NOT NULL,
        properties text NOT NULL,
        payload_path text NOT NULL,
        queued_at text NOT NULL,
        queued_at_us bigint NOT NULL,
        started_at text,
        finished_at text,
        finished_at_us bigint,
        engine_us bigint,
        instantiate_us bigint,
        input_documents bigint NOT NULL,
        input_bytes bigint NOT NULL,
        output_documents bigint NOT NULL,
        output_bytes bigint NOT NULL,
        error text,
        log text NOT NULL,
        documents text NOT NULL
    );
    CREATE INDEX executions_status ON executions (status);
    CREATE INDEX executions_process ON executions (process, queued_at_us);
    CREATE INDEX executions_message ON executions (message_row);
    CREATE TABLE listener_state (
        listener text PRIMARY KEY,
        paused boolean NOT NULL
    );
    CREATE TABLE store_probe (
        id integer PRIMARY KEY,
        at text NOT NULL
    );",
    // 2: documents, in chunks of 1 MiB (the last one shorter; an empty
    // document has none). `group_key` is what `discard` removes.
    "CREATE TABLE documents (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        group_key text NOT NULL,
        name text NOT NULL,
        size bigint NOT NULL,
        created timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX documents_group ON documents (group_key);
    CREATE TABLE document_chunks (
        document_id bigint NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
        seq integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (document_id, seq)
    );",
    // 3: what SQLite's migrations 3 to 6 added: leases on executions and
    // on the async MDN outbox, restart counts, nodes, shared bundles.
    "ALTER TABLE executions ADD COLUMN owner text;
    ALTER TABLE executions ADD COLUMN lease_until_us bigint;
    ALTER TABLE executions ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;
    CREATE INDEX executions_unfinished ON executions (lease_until_us)
        WHERE status IN ('STARTED', 'INPROCESS');
    ALTER TABLE messages ADD COLUMN mdn_owner text;
    ALTER TABLE messages ADD COLUMN mdn_lease_until_us bigint;
    ALTER TABLE messages ADD COLUMN mdn_lease_epoch bigint NOT NULL DEFAULT 0;
    ALTER TABLE listener_state ADD COLUMN restarts bigint NOT NULL DEFAULT 0;
    CREATE TABLE nodes (
        node_id text PRIMARY KEY,
        incarnation text NOT NULL,
        address text NOT NULL,
        version text NOT NULL,
        started_at text NOT NULL,
        heartbeat_at text NOT NULL,
        heartbeat_at_us bigint NOT NULL,
        running bigint NOT NULL,
        held bigint NOT NULL,
        state text NOT NULL
    );
    CREATE TABLE bundle_files (
        name text NOT NULL,
        hash text NOT NULL,
        path text NOT NULL,
        content bytea NOT NULL,
        PRIMARY KEY (name, hash, path)
    );
    CREATE TABLE bundle_heads (
        name text PRIMARY KEY,
        hash text NOT NULL,
        withdrawn boolean NOT NULL,
        published_by text NOT NULL,
        published_at text NOT NULL
    );",
    // 4: finding a message by its raw request, so that the sweep of
    // unreferenced documents looks up rather than scans.
    "CREATE INDEX messages_raw_path ON messages (raw_path);",
    // 5: document chunks stored as they come, not compressed again by
    // TOAST (pglz on every 1 MiB chunk cost most of PostgreSQL's CPU for a
    // 1 GiB EDI file; AS2 payloads are often compressed already).
    "ALTER TABLE document_chunks ALTER COLUMN data SET STORAGE EXTERNAL;",
    // 6: the outbox of `as2` steps (SQLite's 9).
    "CREATE TABLE outbox (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        execution_id text NOT NULL,
        step bigint NOT NULL,
        document bigint NOT NULL,
        process text NOT NULL,
        partner text NOT NULL,
        as2_from text NOT NULL,
        as2_to text NOT NULL,
        message_id text NOT NULL,
        subject text NOT NULL,
        file_name text,
        payload bytea,
        payload_ref text,
        size bigint NOT NULL,
        status text NOT NULL,
        attempts bigint NOT NULL,
        created_at text NOT NULL,
        first_attempt_at_us bigint,
        last_attempt_at text,
        next_attempt_at text,
        last_error text,
        mic text,
        mdn_disposition text,
        mdn bytea,
        UNIQUE (execution_id, step, document)
    );
    CREATE INDEX outbox_message_id ON outbox (message_id);",
    // 7: searching the message log (`store/search.rs`; SQLite's 11): a page
    // of the newest matches from an index for every filter. Exact filters
    // end in the id (the page is a backward walk of one index); prefixes
    // compare `COLLATE "C"` (byte order, whatever the database's collation),
    // and end in the id too so that the ids of a page come from the index
    // alone. Dates use `messages_received_at` (1), which compares right in
    // any collation (fixed-width digits). Errors are few: a partial index
    // by id.
    "CREATE INDEX messages_from ON messages (as2_from, id);
    CREATE INDEX messages_to ON messages (as2_to, id);
    CREATE INDEX messages_message_id ON messages (message_id);
    CREATE INDEX messages_subject ON messages (subject COLLATE \"C\", id);
    CREATE INDEX messages_file_name ON messages (file_name COLLATE \"C\", id);
    CREATE INDEX messages_mime_type ON messages (mime_type, id);
    CREATE INDEX messages_errors ON messages (id) WHERE disposition <> 'processed';",
];

/// The schema version this Atom writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Applies the migrations not yet applied.
pub(super) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<()> {
    loop {
        let tx = client
            .transaction()
            .await
            .map_err(err("starting a migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(err("waiting for the migration lock"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(err("creating schema_migrations"))?;
        let applied: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(err("reading the schema version"))?
            .get(0);
        if applied > SCHEMA_VERSION {
            return Err(StoreError::new(
                "opening",
                format!(
                    "the database has schema version {applied}, newer than this Atom knows \
                     ({SCHEMA_VERSION}); run a newer Atom"
                ),
            ));
        }
        if applied == SCHEMA_VERSION {
            return tx.commit().await.map_err(err("reading the schema version"));
        }
        let version = applied + 1;
        let sql = MIGRATIONS[applied as usize];
        tx.batch_execute(sql).await.map_err(|e| {
            let failed = super::store_error("migrating the schema", &e);
            StoreError {
                message: format!("step {version}: {}", failed.message),
                ..failed
            }
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(err("recording the schema version"))?;
        tx.commit().await.map_err(err("committing a migration"))?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
}
