//! The audit log: every state change made through the console or `atom
//! users` (and every log-in), with who, from where and when, as JSON lines
//! in `<data_dir>/console-audit.log` (0600, appended and synced).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const AUDIT_FILE: &str = "console-audit.log";
/// The audit page reads at most this much of the log's end.
const TAIL_BYTES: u64 = 1 << 20;

/// One recorded action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// RFC 3339, UTC.
    pub at: String,
    /// The console user, or `cli:<os user>` for `atom users`.
    pub user: String,
    /// e.g. `listener.pause`, `execution.rerun`, `login`, `user.add`.
    pub action: String,
    /// What it acted on (listener IDs, an execution ID, a user name).
    pub target: String,
    /// `ok`, or why it failed.
    pub outcome: String,
    /// The client's address, for console actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn open(data_dir: &Path) -> AuditLog {
        AuditLog {
            path: data_dir.join(AUDIT_FILE),
        }
    }

    /// Records an action. A failure to record is logged, not hidden: the
    /// action itself already happened.
    pub fn record(
        &self,
        user: &str,
        action: &str,
        target: &str,
        outcome: &str,
        address: Option<String>,
    ) {
        let entry = Entry {
            at: crate::server::inbound::now_rfc3339(),
            user: user.into(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
            address,
        };
        let line = match serde_json::to_string(&entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "encoding an audit entry");
                return;
            }
        };
        tracing::debug!(user, action, target, outcome, "audit");
        if let Err(e) = crate::console::files::append_line(&self.path, &line) {
            tracing::error!(path = %self.path.display(), error = %e, user, action, target, "writing the audit log failed");
        }
    }

    /// The newest entries first, at most `limit`, from the log's last MiB.
    pub fn newest(&self, limit: usize) -> Result<Vec<Entry>, String> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("reading {}: {e}", self.path.display())),
        };
        let len = file
            .metadata()
            .map_err(|e| format!("reading {}: {e}", self.path.display()))?
            .len();
        let start = len.saturating_sub(TAIL_BYTES);
        file.seek(SeekFrom::Start(start))
            .map_err(|e| format!("reading {}: {e}", self.path.display()))?;
        let mut tail = String::new();
        file.take(TAIL_BYTES)
            .read_to_string(&mut tail)
            .map_err(|e| format!("reading {}: {e}", self.path.display()))?;
        // A tail that starts mid-line skips that partial line.
        let lines = tail.lines().skip(usize::from(start > 0));
        let mut entries: Vec<Entry> = lines
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        entries.reverse();
        entries.truncate(limit);
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path());
        log.record(
            "ana",
            "listener.pause",
            "p1",
            "ok",
            Some("127.0.0.1".into()),
        );
        log.record(
            "bob",
            "execution.rerun",
            "e1",
            "refused: not finished",
            None,
        );
        let entries = log.newest(10).expect("read");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].user, "bob");
        assert_eq!(entries[1].action, "listener.pause");
        assert_eq!(log.newest(1).expect("read").len(), 1);
    }
}
