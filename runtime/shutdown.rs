//! One shutdown signal for the whole Atom, written once (as mini-redis
//! does): SIGTERM or SIGINT triggers it, and every part that must stop
//! cleanly holds a [`Shutdown`]: the shared web server (refuses new AS2
//! requests with 503 and `/health` says draining), the workers (finish
//! what runs, start nothing new), asynchronous MDN delivery (stops between
//! attempts), the store probe and the retention thread.
//!
//! The order of the drain is in [`crate::app::run`]; each part's piece is
//! beside the part.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// A cloneable handle on the one shutdown signal; usable from threads and
/// from async tasks.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    /// The flag, for tasks (`triggered`) and cheap reads (`is_triggered`).
    watch: watch::Sender<bool>,
    /// For threads waiting with a timeout (a copy of the flag under the
    /// condvar's lock).
    lock: Mutex<bool>,
    wake: Condvar,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                watch: watch::Sender::new(false),
                lock: Mutex::new(false),
                wake: Condvar::new(),
            }),
        }
    }

    /// Starts the shutdown; later calls do nothing.
    pub fn trigger(&self) {
        let first = self.inner.watch.send_if_modified(|triggered| {
            let first = !*triggered;
            *triggered = true;
            first
        });
        if first {
            *self.inner.lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            self.inner.wake.notify_all();
        }
    }

    pub fn is_triggered(&self) -> bool {
        *self.inner.watch.borrow()
    }

    /// Blocks up to `timeout`; true if the shutdown was triggered.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let guard = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .inner
            .wake
            .wait_timeout_while(guard, timeout, |triggered| !*triggered)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    /// Resolves once the shutdown is triggered.
    pub async fn triggered(&self) {
        let mut changes = self.inner.watch.subscribe();
        // The sender lives in `inner`, which `self` keeps alive.
        let _ = changes.wait_for(|triggered| *triggered).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the Atom");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_and_tasks_see_the_trigger() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.wait_timeout(Duration::from_millis(10)));
        let waiter = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || shutdown.wait_timeout(Duration::from_secs(30)))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let task = {
            let shutdown = shutdown.clone();
            runtime.spawn(async move { shutdown.triggered().await })
        };
        shutdown.trigger();
        shutdown.trigger();
        assert!(waiter.join().expect("thread"));
        runtime.block_on(task).expect("task");
        assert!(shutdown.is_triggered());
        // A handle subscribing after the trigger does not wait.
        runtime.block_on(shutdown.triggered());
    }
}
