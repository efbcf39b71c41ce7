//! Console users: `<data_dir>/console-users.json` (mode 0600), written by
//! `atom users` and read by the running console. A user has a role and an
//! argon2id password hash (a PHC string); the plain password is never
//! stored. `generation` goes up with every password or role change, so that
//! sessions opened before the change end.

use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

/// The users file inside the data directory.
pub const USERS_FILE: &str = "console-users.json";
/// Shorter passwords are refused.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads every page and downloads documents.
    Viewer,
    /// Also pauses, resumes and restarts listeners, and reruns executions.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// One console user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// argon2id, PHC string format.
    pub password_hash: String,
    pub generation: u64,
    /// RFC 3339.
    pub changed_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UsersFile {
    users: Vec<User>,
}

/// The users file of a data directory.
pub struct Users {
    path: PathBuf,
}

impl Users {
    pub fn open(data_dir: &Path) -> Users {
        Users {
            path: data_dir.join(USERS_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every user, sorted by name; none when the file does not exist yet.
    pub fn list(&self) -> Result<Vec<User>, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("reading {}: {e}", self.path.display())),
        };
        let file: UsersFile = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a users file: {e}", self.path.display()))?;
        let mut users = file.users;
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    pub fn find(&self, name: &str) -> Result<Option<User>, String> {
        Ok(self.list()?.into_iter().find(|u| u.name == name))
    }

    /// Adds a user; refused when the name is taken.
    pub fn add(&self, name: &str, role: Role, password: &str) -> Result<User, String> {
        check_name(name)?;
        let mut users = self.list()?;
        if users.iter().any(|u| u.name == name) {
            return Err(format!(
                "user {name:?} exists; use `atom users passwd {name}` to change its password"
            ));
        }
        let user = User {
            name: name.to_string(),
            role,
            password_hash: hash_password(password)?,
            generation: 1,
            changed_at: now(),
        };
        users.push(user.clone());
        self.write(users)?;
        Ok(user)
    }

    /// A new password (and, when given, a new role); ends the user's sessions.
    pub fn change(
        &self,
        name: &str,
        password: Option<&str>,
        role: Option<Role>,
    ) -> Result<User, String> {
        let mut users = self.list()?;
        let user = users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| format!("no user {name:?} (see `atom users list`)"))?;
        if let Some(password) = password {
            user.password_hash = hash_password(password)?;
        }
        if let Some(role) = role {
            user.role = role;
        }
        user.generation += 1;
        user.changed_at = now();
        let changed = user.clone();
        self.write(users)?;
        Ok(changed)
    }

    pub fn remove(&self, name: &str) -> Result<(), String> {
        let mut users = self.list()?;
        let before = users.len();
        users.retain(|u| u.name != name);
        if users.len() == before {
            return Err(format!("no user {name:?} (see `atom users list`)"));
        }
        self.write(users)
    }

    /// The user when the password is theirs. Unknown names cost a hash
    /// too, so that timing does not tell which names exist.
    pub fn verify(&self, name: &str, password: &str) -> Result<Option<User>, String> {
        let user = self.find(name)?;
        let hash = match &user {
            Some(user) => user.password_hash.clone(),
            None => decoy_hash().to_string(),
        };
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| format!("the password hash of {name:?} is unreadable: {e}"))?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(user.filter(|_| matches))
    }

    /// Replaces the file atomically, owner-only.
    fn write(&self, users: Vec<User>) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&UsersFile { users })
            .map_err(|e| format!("encoding the users file: {e}"))?;
        crate::console::files::write_private(&self.path, text.as_bytes())
            .map_err(|e| format!("writing {}: {e}", self.path.display()))
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a user name: use 1 to 64 letters, digits, '-', '_', '.' or '@'"
        ))
    }
}

pub fn hash_password(password: &str) -> Result<String, String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password is too short: use at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| format!("drawing a salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("encoding the salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

/// A hash of a random password, made once: verified against for unknown
/// user names.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 24];
        let _ = openssl::rand::rand_bytes(&mut random);
        let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        hash_password(&password).unwrap_or_default()
    })
}

fn now() -> String {
    crate::server::inbound::now_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_verifies_only_with_its_password_and_the_file_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let users = Users::open(dir.path());
        users
            .add("ana", Role::Operator, "correct horse battery")
            .expect("add");
        assert!(users
            .verify("ana", "correct horse battery")
            .expect("verify")
            .is_some());
        assert!(users
            .verify("ana", "wrong password!")
            .expect("verify")
            .is_none());
        assert!(users
            .verify("bob", "correct horse battery")
            .expect("verify")
            .is_none());
        let text = std::fs::read_to_string(users.path()).expect("file");
        assert!(!text.contains("correct horse"), "{text}");
        assert!(text.contains("$argon2id$"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(users.path())
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_password_change_raises_the_generation_and_short_passwords_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let users = Users::open(dir.path());
        assert!(users.add("ana", Role::Viewer, "short").is_err());
        users
            .add("ana", Role::Viewer, "long enough pw")
            .expect("add");
        assert!(users.add("ana", Role::Viewer, "long enough pw").is_err());
        let changed = users
            .change("ana", Some("another long pw"), Some(Role::Operator))
            .expect("change");
        assert_eq!(changed.generation, 2);
        assert_eq!(changed.role, Role::Operator);
        assert!(users
            .verify("ana", "long enough pw")
            .expect("verify")
            .is_none());
        users.remove("ana").expect("remove");
        assert!(users.list().expect("list").is_empty());
        assert!(users.add("../x", Role::Viewer, "long enough pw").is_err());
    }
}
