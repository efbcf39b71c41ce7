//! Copies of one message that arrive together. Partners resend when an
//! answer is slow, gateways retry, so two requests with the same
//! (AS2-From, Message-ID) often overlap. The first claims the pair; a copy
//! arriving meanwhile waits until the first is stored (then the duplicate
//! check finds it and the copy gets the original MDN), or, if that takes
//! too long, is answered 503 to retry later. The store's unique index is
//! the backstop behind this; the claim saves the copy from decrypting and
//! verifying a message that is already being stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

type Key = (String, String);

/// The pairs being received right now.
#[derive(Default)]
pub struct InFlight {
    /// The claim holds the sender; waiters hold receivers and wake when it
    /// is dropped.
    held: Mutex<HashMap<Key, watch::Sender<()>>>,
}

/// Holds a pair until dropped.
pub struct Claim {
    table: Arc<InFlight>,
    key: Key,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self.table.held.lock().unwrap_or_else(|p| p.into_inner());
        // Dropping the sender wakes every waiter.
        held.remove(&self.key);
    }
}

impl InFlight {
    /// Claims (AS2-From, Message-ID), waiting up to `wait` for a copy that
    /// holds it; `None` if it is still held then.
    pub async fn claim(
        self: &Arc<Self>,
        as2_from: &str,
        message_id: &str,
        wait: Duration,
    ) -> Option<Claim> {
        let key = (as2_from.to_string(), message_id.to_string());
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut released = {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                match held.get(&key) {
                    Some(holder) => holder.subscribe(),
                    None => {
                        held.insert(key.clone(), watch::Sender::new(()));
                        return Some(Claim {
                            table: self.clone(),
                            key,
                        });
                    }
                }
            };
            // Err once the holder's sender is gone: the claim was released.
            let waited = tokio::time::timeout_at(deadline, released.changed()).await;
            if waited.is_err() {
                return None;
            }
        }
    }

    /// True when no pair is claimed.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_copy_waits_for_the_first_and_times_out_when_it_takes_too_long() {
        let table = Arc::new(InFlight::default());
        let first = table
            .claim("ACME", "<1@a>", Duration::ZERO)
            .await
            .expect("free");
        assert!(table
            .claim("ACME", "<1@a>", Duration::from_millis(50))
            .await
            .is_none());
        let other = table
            .claim("OTHER", "<1@a>", Duration::ZERO)
            .await
            .expect("other sender");
        let waiter = {
            let table = table.clone();
            tokio::spawn(async move {
                table
                    .claim("ACME", "<1@a>", Duration::from_secs(30))
                    .await
                    .is_some()
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(waiter.await.expect("task"), "woken when the first is done");
        drop(other);
        assert!(table.is_empty());
    }
}
