//! One connection to the broker, and the wait between attempts.
//!
//! Reconnecting is ours, not lapin's auto-recovery: a lost connection ends the session, its
//! deliveries are abandoned with it (the broker requeues them; their `Acker`s are poisoned, so
//! a tag of the old channel can never ack a message of a new one), and the next session
//! starts from a fresh connection, fresh topology and a fresh consumer. The wait grows
//! exponentially and is jittered, so a fleet of sidecars that lost the same broker does not
//! come back in lock-step and stampede it as it recovers.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties, DefaultConnectionBuilder};
use rand::Rng;

use super::tls::{self, TlsCa};
use crate::cli::BrokerArgs;

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
/// type's `Debug` and `Display` show it redacted, and every error about it is worded without
/// it) and, for `amqps://`, an optional private CA.
#[derive(Clone, PartialEq, Eq)]
pub struct Broker {
    /// The URI as given: for connecting only.
    url: String,
    /// The URI parsed once, at start-up, with the host as written (see [`host_as_written`]).
    uri: AMQPUri,
    /// `--tls-ca`, read and checked; only with `amqps://`.
    tls_ca: Option<TlsCa>,
}

impl Broker {
    /// Validates `--amqp-url` / `--amqp-url-file` / `--tls-ca`; `Err` is a usage message
    /// that never holds the password.
    pub fn from_args(args: &BrokerArgs) -> Result<Broker, String> {
        match &args.amqp_url_file {
            Some(path) => {
                let what = format!("--amqp-url-file {}", path.display());
                let text = std::fs::read_to_string(path).map_err(|e| format!("{what}: {e}"))?;
                let url = text.trim();
                if url.is_empty() {
                    return Err(format!("{what}: the file is empty"));
                }
                Broker::checked(url.to_string(), &what, args.tls_ca.as_deref())
            }
            None => Broker::checked(args.amqp_url.clone(), "--amqp-url", args.tls_ca.as_deref()),
        }
    }

    pub fn new(url: String, tls_ca: Option<PathBuf>) -> Result<Broker, String> {
        Broker::checked(url, "--amqp-url", tls_ca.as_deref())
    }

    /// `what` names where the URL came from, for messages.
    fn checked(url: String, what: &str, tls_ca: Option<&Path>) -> Result<Broker, String> {
        let shown = redact(&url);
        let tls = if url.starts_with("amqps://") {
            true
        } else if url.starts_with("amqp://") {
            false
        } else {
            return Err(format!(
                "{what} {shown}: expected amqp://user:password@host:port/vhost \
                 (or amqps:// for TLS)"
            ));
        };
        let mut uri: AMQPUri = url.parse().map_err(|e: String| {
            // The parser quotes the whole URI in some of its messages.
            format!("{what} {shown}: not a valid AMQP URI ({})", scrub(&e, &url))
        })?;
        match host_as_written(&url) {
            None | Some("") => return Err(format!("{what} {shown}: no host in it")),
            Some(host) => {
                if let Ok(ip) = host.parse::<IpAddr>() {
                    uri.authority.host = ip.to_string();
                }
            }
        }
        let tls_ca = match tls_ca {
            Some(path) if !tls => {
                return Err(format!(
                    "--tls-ca {}: given, but {what} is amqp:// (no TLS); use amqps://",
                    path.display()
                ))
            }
            Some(path) => Some(TlsCa::load(path)?),
            None => None,
        };
        Ok(Broker { url, uri, tls_ca })
    }

    /// The URI as given, password included: for connecting only, never for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The host we connect to (and, over TLS, the name its certificate must hold).
    pub fn host(&self) -> &str {
        &self.uri.authority.host
    }

    /// Over TLS (`amqps://`).
    pub fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }

    /// Opens a connection named after us (visible in the management UI and
    /// `rabbitmqctl list_connections`), with no automatic recovery (see the module doc). A
    /// failed TLS handshake comes back as an error that says so (see [`super::tls`]).
    pub async fn connect(&self) -> Result<Connection, lapin::Error> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("logfence (pid {})", std::process::id()).into());
        let mut builder = DefaultConnectionBuilder::new()?
            .with_uri(self.uri.clone())
            .with_properties(props);
        if let Some(ca) = &self.tls_ca {
            builder = builder.with_tls_config(ca.tls_config());
        }
        builder
            .connect()
            .await
            .map_err(|e| tls::explain(e, self.host(), self.tls_ca.is_some()))
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

/// The host of `url` as written (an IPv6 address without its brackets). The URI parser lapin
/// uses takes the host from `Url::domain()`, which is `None` for an IPv6 address and for no
/// host at all, and puts `localhost` in its place: `amqp://u:p@[fd00::1]/` would quietly
/// connect to this machine, and `amqp://u:p@/` too. So the broker keeps an address as
/// written, and refuses no host.
fn host_as_written(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(ip, _)| ip),
        None => hostport.split(':').next(),
    }
}

/// `text` with the password of `url` (raw and percent-decoded) and `url` itself replaced.
fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact(url));
    if let Some(password) = password_of(url) {
        for p in [password.to_string(), percent_decode(password)] {
            if !p.is_empty() {
                out = out.replace(&p, "***");
            }
        }
    }
    out
}

/// The password part of `url`'s userinfo, as written.
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (userinfo, _) = rest.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, p)| p)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URI with its password replaced, for logs. Robust to malformed input (no scheme, a
/// `/` or `@` in the password): everything before the last `@` is userinfo, and all of it
/// after the first `:` is hidden.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}{user}:***@{host}")
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
        assert_eq!(redact("amqp://u:pa/ss@host/%2f"), "amqp://u:***@host/%2f");
        assert_eq!(redact("amqp//u:s3cr3t@host"), "amqp//u:***@host");
        assert_eq!(redact("u:s3cr3t@host"), "u:***@host");
    }

    const SECRET: &str = "s3cr3t-Hunter2";

    fn args(url: &str, file: Option<&Path>, ca: Option<&Path>) -> BrokerArgs {
        BrokerArgs {
            amqp_url: url.to_string(),
            amqp_url_file: file.map(Path::to_path_buf),
            tls_ca: ca.map(Path::to_path_buf),
        }
    }

    fn ca_file(dir: &tempfile::TempDir) -> PathBuf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
        path
    }

    #[test]
    fn amqps_is_accepted_with_or_without_a_private_ca() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("amqps://u:{SECRET}@broker.internal:5671/%2f");
        let b = Broker::from_args(&args(&url, None, None)).unwrap();
        assert!(b.is_tls());
        assert_eq!(b.host(), "broker.internal");
        let ca = ca_file(&dir);
        let b = Broker::from_args(&args(&url, None, Some(&ca))).unwrap();
        let shown = format!("{b} {b:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(
            shown.contains("ca.pem") && shown.contains("certificates: 1"),
            "{shown}"
        );
    }

    #[test]
    fn a_url_file_may_hold_an_amqps_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        let url = format!("amqps://u:{SECRET}@localhost:5671/%2f");
        std::fs::write(&file, format!("  {url}\n\n")).unwrap();
        let ca = ca_file(&dir);
        let b = Broker::from_args(&args(DEFAULT_FOR_TESTS, Some(&file), Some(&ca))).unwrap();
        assert_eq!(b.url(), url);
        assert!(b.is_tls());
    }

    const DEFAULT_FOR_TESTS: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

    #[test]
    fn a_bad_ca_file_is_a_usage_error_before_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("amqps://u:{SECRET}@h:5671/%2f");
        let missing = dir.path().join("missing.pem");
        let e = Broker::from_args(&args(&url, None, Some(&missing))).unwrap_err();
        assert!(e.contains("--tls-ca") && e.contains("missing.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = Broker::from_args(&args(&url, None, Some(&junk))).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        assert!(!e.contains(SECRET), "{e}");
    }

    #[test]
    fn a_ca_with_a_plain_amqp_url_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_file(&dir);
        let url = format!("amqp://u:{SECRET}@h:5672/%2f");
        let e = Broker::from_args(&args(&url, None, Some(&ca))).unwrap_err();
        assert!(e.contains("no TLS") && e.contains("amqps://"), "{e}");
        assert!(!e.contains(SECRET), "{e}");
    }

    #[test]
    fn url_errors_never_show_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let bad = [
            format!("http://u:{SECRET}@h/%2f"),
            format!("amqp//u:{SECRET}@h/%2f"),
            format!("amqp://u:{SECRET}@h:notaport/%2f"),
            format!("amqp://u:{SECRET}@h/%2f?heartbeat=soon"),
            format!("amqp://u:{SECRET}@h/%2f?auth_mechanism=magic"),
            format!("amqp://u:{SECRET}@[::1/%2f"),
            format!("amqps://u:{SECRET}@/%2f"),
            format!("amqp:u:{SECRET}@h"),
            format!("amqp://u:{}@h:99999/%2f", SECRET.replace('-', "%2D")),
        ];
        for url in &bad {
            let e = Broker::from_args(&args(url, None, None))
                .err()
                .unwrap_or_else(|| panic!("accepted {url}"));
            assert!(!e.contains(SECRET), "{e}");
            assert!(e.starts_with("--amqp-url "), "{e}");
            let file = dir.path().join("url");
            std::fs::write(&file, url).unwrap();
            let e = Broker::from_args(&args(DEFAULT_FOR_TESTS, Some(&file), None)).unwrap_err();
            assert!(!e.contains(SECRET), "{e}");
            assert!(e.starts_with("--amqp-url-file "), "{e}");
        }
    }

    #[test]
    fn url_file_errors_say_which_file_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = Broker::from_args(&args(DEFAULT_FOR_TESTS, Some(&missing), None)).unwrap_err();
        assert!(e.contains("missing") && e.contains("No such file"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = Broker::from_args(&args(DEFAULT_FOR_TESTS, Some(&empty), None)).unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn an_ip_address_host_is_kept_not_turned_into_localhost() {
        for (url, host) in [
            ("amqp://u:p@10.0.0.5:5672/%2f", "10.0.0.5"),
            ("amqps://u:p@192.168.1.2/%2f", "192.168.1.2"),
            ("amqp://u:p@[fd00::1]:5672/%2f", "fd00::1"),
            ("amqp://u:p@rabbit.svc:5672/%2f", "rabbit.svc"),
            ("amqp://10.1.2.3", "10.1.2.3"),
        ] {
            assert_eq!(
                Broker::new(url.to_string(), None).unwrap().host(),
                host,
                "{url}"
            );
        }
        // The parser alone loses the address; this pins why host_as_written exists.
        let parsed: AMQPUri = "amqp://u:p@[fd00::1]:5672/%2f".parse().unwrap();
        assert_eq!(parsed.authority.host, "localhost");
    }

    #[test]
    fn scrub_removes_the_password_raw_and_decoded() {
        let url = "amqp://u:a%2Fb@h/";
        assert_eq!(scrub("x a%2Fb y a/b", url), "x *** y ***");
        assert_eq!(
            scrub(&format!("Invalid URL: '{url}'"), url),
            "Invalid URL: 'amqp://u:***@h/'"
        );
    }
}
