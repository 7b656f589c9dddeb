//! One connection to the broker, and the wait between attempts.
//!
//! Reconnecting is ours, not lapin's auto-recovery: a lost connection ends the session, its
//! deliveries are abandoned with it (the broker requeues them; their `Acker`s are poisoned, so
//! a tag of the old channel can never ack a message of a new one), and the next session
//! starts from a fresh connection, fresh topology and a fresh consumer. The wait grows
//! exponentially and is jittered, so a fleet of sidecars that lost the same broker does not
//! come back in lock-step and stampede it as it recovers.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::cli::BrokerArgs;
use rand::Rng;

/// First wait after a failure. With equal jitter the third attempt comes at least 3 × this
/// after the first, so at 500 ms no client tries more than twice in any second: a fleet of
/// N sidecars that lost the same broker sends it at most 2N connections a second.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that lasted this long was healthy: the next failure starts from the base again.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Jittered exponential backoff ("equal jitter": half the step fixed, half random), so the
/// wait is never zero yet two clients that failed together drift apart.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    /// Failures since the last success.
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_BASE, BACKOFF_MAX)
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The wait before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step();
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// base × 2^attempt, capped.
    fn step(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// After a healthy session: start again from the base.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.attempt
    }
}

/// Where the broker is and how to trust it: the URI (which holds the password, so this
/// type's `Debug` and `Display` show it redacted) and, for `amqps://`, a private CA.
#[derive(Clone, PartialEq, Eq)]
pub struct Broker {
    url: String,
    tls_ca: Option<PathBuf>,
}

impl Broker {
    /// Validates `--amqp-url` / `--amqp-url-file` / `--tls-ca`; `Err` is a usage message
    /// that never holds the password.
    pub fn from_args(args: &BrokerArgs) -> Result<Broker, String> {
        let url = match &args.amqp_url_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("--amqp-url-file {}: {e}", path.display()))?
                .trim()
                .to_string(),
            None => args.amqp_url.clone(),
        };
        Broker::new(url, args.tls_ca.clone())
    }

    pub fn new(url: String, tls_ca: Option<PathBuf>) -> Result<Broker, String> {
        if url.starts_with("amqps://") {
            return Err(format!(
                "--amqp-url {}: amqps:// (TLS) is not built in yet",
                redact(&url)
            ));
        }
        if !url.starts_with("amqp://") {
            return Err(format!(
                "--amqp-url {}: expected amqp://user:password@host:port/vhost",
                redact(&url)
            ));
        }
        Ok(Broker { url, tls_ca })
    }

    /// The URI as given, password included: for connecting only, never for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a connection named after us (visible in the management UI and
    /// `rabbitmqctl list_connections`), with no automatic recovery (see the module doc).
    pub async fn connect(&self) -> Result<Connection, lapin::Error> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("logfence (pid {})", std::process::id()).into());
        Connection::connect(&self.url, props).await
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("url", &redact(&self.url))
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// The URI with its password replaced, for logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let bounds = [
            (50, 100),
            (100, 200),
            (200, 400),
            (400, 800),
            (500, 1000),
            (500, 1000),
        ];
        for (lo, hi) in bounds {
            let d = b.next_delay().as_millis();
            assert!((lo..=hi).contains(&d), "{d} not in {lo}..={hi}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn backoff_jitter_spreads_clients_apart() {
        let delays: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
                b.next_delay();
                b.next_delay().as_millis()
            })
            .collect();
        assert!(delays.len() > 10, "too little jitter: {delays:?}");
    }

    #[test]
    fn backoff_survives_many_failures() {
        let mut b = Backoff::default();
        for _ in 0..100 {
            assert!(b.next_delay() <= BACKOFF_MAX);
        }
    }

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact("amqp://127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqps://u:p@w:rd@host"), "amqps://u:***@host");
    }
}
