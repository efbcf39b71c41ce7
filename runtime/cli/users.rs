//! `atom users`: the console's users (see [`crate::console::users`]).
//! Passwords are read from the terminal without echo (twice), or, when
//! standard input is not a terminal, from its first line, so that scripts
//! can pipe one in; never from the command line, where `ps` would show it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use clap::Subcommand;

use super::CliError;
use crate::console::audit::AuditLog;
use crate::console::users::{Role, Users};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List the console's users and their roles.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a user; the password is asked for (or read from standard input).
    Add {
        name: String,
        /// viewer reads; operator also pauses, resumes, restarts and reruns.
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Set a new password (and optionally a new role); the user's sessions end.
    Passwd {
        name: String,
        /// A new role as well.
        #[arg(long, value_enum)]
        role: Option<Role>,
    },
    /// Remove a user; their sessions end.
    Remove { name: String },
}

pub fn run(data_dir: &Path, command: UsersCommand) -> Result<(), CliError> {
    let users = Users::open(data_dir);
    let audit = AuditLog::open(data_dir);
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let who = match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(name) => format!("cli:{name}"),
        Err(_) => format!("cli:uid {uid}"),
    };
    match command {
        UsersCommand::List { json } => {
            let all = users.list().map_err(CliError::Failed)?;
            if json {
                let shown: Vec<serde_json::Value> = all
                    .iter()
                    .map(|u| serde_json::json!({"name": u.name, "role": u.role, "changed_at": u.changed_at}))
                    .collect();
                println!("{}", serde_json::Value::Array(shown));
            } else if all.is_empty() {
                println!("no console users; add one with `atom users add NAME --role operator`");
            } else {
                println!("{:<24} {:<9} CHANGED", "NAME", "ROLE");
                for u in all {
                    println!("{:<24} {:<9} {}", u.name, u.role.as_str(), u.changed_at);
                }
            }
            Ok(())
        }
        UsersCommand::Add { name, role } => {
            let password = read_new_password()?;
            let outcome = users.add(&name, role, &password);
            audit.record(&who, "user.add", &name, &outcome_text(&outcome), None);
            outcome.map_err(CliError::Failed)?;
            println!("user {name} added ({})", role.as_str());
            Ok(())
        }
        UsersCommand::Passwd { name, role } => {
            if users.find(&name).map_err(CliError::Failed)?.is_none() {
                return Err(CliError::Failed(format!(
                    "no user {name:?} (see `atom users list`)"
                )));
            }
            let password = read_new_password()?;
            let outcome = users.change(&name, Some(&password), role);
            audit.record(&who, "user.passwd", &name, &outcome_text(&outcome), None);
            let user = outcome.map_err(CliError::Failed)?;
            println!(
                "password of {name} changed ({}); their console sessions have ended",
                user.role.as_str()
            );
            Ok(())
        }
        UsersCommand::Remove { name } => {
            let outcome = users.remove(&name);
            audit.record(&who, "user.remove", &name, &outcome_text(&outcome), None);
            outcome.map_err(CliError::Failed)?;
            println!("user {name} removed; their console sessions have ended");
            Ok(())
        }
    }
}

fn outcome_text<T>(outcome: &Result<T, String>) -> String {
    match outcome {
        Ok(_) => "ok".into(),
        Err(e) => format!("failed: {e}"),
    }
}

fn read_new_password() -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(|e| {
            CliError::Failed(format!("reading the password from standard input: {e}"))
        })?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = prompt_hidden("New password: ")?;
    let second = prompt_hidden("Again: ")?;
    if first != second {
        return Err(CliError::Failed(
            "the two passwords differ; nothing changed".into(),
        ));
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off.
fn prompt_hidden(prompt: &str) -> Result<String, CliError> {
    let fail = |e: std::io::Error| CliError::Failed(format!("reading the password: {e}"));
    eprint!("{prompt}");
    std::io::stderr().flush().map_err(fail)?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios calls on our own standard input; the saved settings
    // are restored before returning.
    let saved = unsafe {
        let mut term: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut term) != 0 {
            return Err(fail(std::io::Error::last_os_error()));
        }
        let saved = term;
        term.c_lflag &= !libc::ECHO;
        libc::tcsetattr(fd, libc::TCSANOW, &term);
        saved
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    eprintln!();
    read.map_err(fail)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
