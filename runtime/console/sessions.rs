//! Console sessions, in memory: a random ID in an HttpOnly, SameSite=Strict
//! cookie (Secure over HTTPS), a CSRF token per session that every form
//! carries, an idle timeout and a longest life. A restart logs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::users::Role;

pub const COOKIE: &str = "atom_console";
/// However active, a session ends after this long.
const MAX_LIFE: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at once; the oldest goes first.
const MAX_SESSIONS: usize = 10_000;

/// Who a request comes from.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub user: String,
    pub role: Role,
    /// The users file generation it was opened under.
    pub generation: u64,
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
    /// A one-time notice for the next page (the result of an action).
    pub flash: Option<String>,
}

pub struct Sessions {
    idle: Duration,
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for a user who just logged in.
    pub fn open(&self, user: &str, role: Role, generation: u64) -> Result<Session, String> {
        let now = Instant::now();
        let session = Session {
            id: random_token()?,
            user: user.into(),
            role,
            generation,
            csrf: random_token()?,
            created: now,
            last_seen: now,
            flash: None,
        };
        let mut sessions = self.lock();
        let (idle, now) = (self.idle, Instant::now());
        sessions.retain(|_, s| s.alive(idle, now));
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .values()
                .min_by_key(|s| s.last_seen)
                .map(|s| s.id.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    /// The live session with this ID, touched; takes its flash.
    pub fn touch(&self, id: &str) -> Option<Session> {
        let mut sessions = self.lock();
        let now = Instant::now();
        let session = sessions.get_mut(id)?;
        if !session.alive(self.idle, now) {
            sessions.remove(id);
            return None;
        }
        session.last_seen = now;
        let seen = session.clone();
        session.flash = None;
        Some(seen)
    }

    pub fn set_flash(&self, id: &str, text: String) {
        if let Some(session) = self.lock().get_mut(id) {
            session.flash = Some(text);
        }
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Ends every session of a user (removed, or its password changed).
    pub fn close_user(&self, user: &str) {
        self.lock().retain(|_, s| s.user != user);
    }
}

impl Session {
    fn alive(&self, idle: Duration, now: Instant) -> bool {
        now.duration_since(self.last_seen) < idle && now.duration_since(self.created) < MAX_LIFE
    }

    /// True when `given` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, given: &str) -> bool {
        given.len() == self.csrf.len()
            && openssl::memcmp::eq(given.as_bytes(), self.csrf.as_bytes())
    }
}

/// 32 random bytes, hex.
fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).map_err(|e| format!("drawing a session token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_session_ends() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let s = sessions.open("ana", Role::Viewer, 1).expect("open");
        assert!(sessions.touch(&s.id).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.touch(&s.id).is_none());
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let a = sessions.open("ana", Role::Viewer, 1).expect("open");
        let b = sessions.open("ana", Role::Viewer, 1).expect("open");
        assert_ne!(a.csrf, b.csrf);
        assert!(a.csrf_matches(&a.csrf.clone()));
        assert!(!a.csrf_matches(&b.csrf));
        assert!(!a.csrf_matches(""));
        sessions.close_user("ana");
        assert!(sessions.touch(&a.id).is_none());
    }
}
