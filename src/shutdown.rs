//! One `Shutdown` per process: the signal every loop selects on.
//!
//! It is a latch, not an event: once triggered it stays triggered, so a loop that starts
//! waiting after the signal arrived still sees it (a `Notify` alone would lose that wake-up).
//! Clones share the one latch; tests make their own and trigger it by hand instead of
//! sending signals to the test process.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// The process-wide shutdown latch. Cheap to clone; every clone sees the same state.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// `true` once shutdown was asked for. A watch channel holds the latest value, so late
    /// waiters see it; the sender lives here (not in a task), so it never closes under them.
    latch: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A latch that has not been triggered.
    pub fn new() -> Shutdown {
        let (latch, _) = watch::channel(false);
        Shutdown {
            latch: Arc::new(latch),
        }
    }

    /// Asks every loop to stop. Idempotent.
    pub fn trigger(&self) {
        self.latch
            .send_if_modified(|triggered| !std::mem::replace(triggered, true));
    }

    /// Whether shutdown was asked for.
    pub fn is_triggered(&self) -> bool {
        *self.latch.borrow()
    }

    /// Resolves once shutdown was asked for (at once if it already was). Cancel-safe: it holds
    /// no state beyond its own receiver.
    pub async fn wait(&self) {
        let mut rx = self.latch.subscribe();
        // The sender is owned by `self`, which outlives this future: `wait_for` cannot see a
        // closed channel, and if it somehow did there would be nobody left to trigger us.
        let _ = rx.wait_for(|triggered| *triggered).await;
    }

    /// Triggers on SIGTERM or SIGINT. Must be called inside a tokio runtime. The handlers are
    /// installed before this returns, so a signal that arrives right after is not lost; once
    /// installed, the default action (die at once) no longer applies to these two signals, so
    /// a second signal does not cut the drain short: `--drain-timeout` bounds it instead.
    /// If a handler cannot be installed, that is logged and the default action stays in place
    /// for that signal.
    pub fn on_signals(&self) {
        for (kind, name) in [
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::interrupt(), "SIGINT"),
        ] {
            match signal(kind) {
                Ok(mut stream) => {
                    let shutdown = self.clone();
                    tokio::spawn(async move {
                        while stream.recv().await.is_some() {
                            if shutdown.is_triggered() {
                                tracing::info!(signal = name, "signal received; already draining");
                            } else {
                                tracing::info!(signal = name, "signal received; shutting down");
                                shutdown.trigger();
                            }
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(signal = name, %error, "cannot install signal handler");
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    #[tokio::test]
    async fn wait_resolves_for_a_waiter_that_started_before_the_trigger() {
        let shutdown = Shutdown::new();
        let waiter = tokio::spawn({
            let s = shutdown.clone();
            async move { s.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        shutdown.trigger();
        timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiter woke")
            .expect("task ok");
    }

    #[tokio::test]
    async fn wait_resolves_at_once_after_the_trigger_and_the_latch_stays_set() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_triggered());
        shutdown.clone().trigger();
        shutdown.trigger();
        assert!(shutdown.is_triggered());
        timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .expect("already triggered");
        timeout(Duration::from_secs(5), shutdown.clone().wait())
            .await
            .expect("still triggered");
    }

    #[tokio::test]
    async fn wait_is_cancel_safe_and_can_be_selected_on_in_a_loop() {
        let shutdown = Shutdown::new();
        let mut ticks = 0;
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(Duration::from_millis(1)) => {
                    ticks += 1;
                    if ticks == 5 {
                        shutdown.trigger();
                    }
                }
            }
        }
        assert_eq!(ticks, 5);
    }

    #[test]
    fn sigterm_triggers_shutdown() {
        // A child process, so the real SIGTERM does not reach the test harness.
        if std::env::var_os("LOGFENCE_SHUTDOWN_CHILD").is_some() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let shutdown = Shutdown::new();
                shutdown.on_signals();
                println!("SHUTDOWN-READY");
                timeout(Duration::from_secs(20), shutdown.wait())
                    .await
                    .expect("signal arrived");
                println!("SHUTDOWN-TRIGGERED");
            });
            return;
        }
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "shutdown::tests::sigterm_triggers_shutdown",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LOGFENCE_SHUTDOWN_CHILD", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.ends_with("SHUTDOWN-READY"));
        assert!(ready, "child never got ready");
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        )
        .expect("send SIGTERM");
        // Read to the end: a closed pipe would fail the child's own harness output.
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let triggered = rest.iter().any(|l| l.ends_with("SHUTDOWN-TRIGGERED"));
        let status = child.wait().expect("wait");
        assert!(triggered, "child did not see SIGTERM");
        assert!(status.success(), "child exited with {status}");
    }
}
