//! One connection to the broker, and the wait between attempts.
//!
//! Reconnecting is ours, not lapin's auto-recovery: a lost connection ends the session, its
//! deliveries are abandoned with it (the broker requeues them; their `Acker`s are poisoned, so
//! a tag of the old channel can never ack a message of a new one), and the next session
//! starts from a fresh connection, fresh topology and a fresh consumer. The wait grows
//! exponentially and is jittered, so a fleet of sidecars that lost the same broker does not
//! come back in lock-step and stampede it as it recovers.
//!
//! A cluster is several addresses, one per node ([`Broker`] holds them all). The first
//! connection goes to a randomly chosen node and every later attempt to the next one, so a
//! fleet spreads over the nodes and a dead node costs one failed attempt: the wait only
//! starts once a whole round of nodes has failed (see [`Backoff::for_nodes`]).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
/// How long one connection attempt may take (TCP, TLS and the AMQP handshake). A node that
/// is gone without refusing (its packets dropped) costs this much, then the next one is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Jittered exponential backoff ("equal jitter": half the step fixed, half random), so the
/// wait is never zero yet two clients that failed together drift apart.
///
/// With several nodes, the failures of one round (one attempt per node) cost no wait but the
/// last: the next node is tried at once, and only a round in which every node failed waits,
/// growing round by round as one node's failures do.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    /// Nodes in a round (at least 1).
    nodes: u32,
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
            nodes: 1,
            attempt: 0,
        }
    }

    /// The default backoff over a round of `nodes` nodes.
    pub fn for_nodes(nodes: usize) -> Backoff {
        Backoff {
            nodes: u32::try_from(nodes).unwrap_or(u32::MAX).max(1),
            ..Backoff::default()
        }
    }

    /// The wait before the next attempt; each call counts one more failure. Zero while the
    /// round of nodes is not over.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        if !self.attempt.is_multiple_of(self.nodes) {
            return Duration::ZERO;
        }
        let step = self.step(self.attempt / self.nodes - 1);
        let half = step / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// base × 2^round, capped.
    fn step(&self, round: u32) -> Duration {
        let factor = 1u32.checked_shl(round.min(30)).unwrap_or(u32::MAX);
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

/// One node of the broker and how to trust it: the URI (which holds the password, so this
/// type's `Debug` and `Display` show it redacted, and every error about it is worded without
/// it) and, for `amqps://`, an optional private CA.
#[derive(Clone, PartialEq, Eq)]
pub struct Node {
    /// The URI as given: for connecting only.
    url: String,
    /// The URI parsed once, at start-up, with the host as written (see [`host_as_written`]).
    uri: AMQPUri,
    /// `--tls-ca`, read and checked; only with `amqps://`.
    tls_ca: Option<TlsCa>,
}

impl Node {
    /// `what` names where the URL came from, for messages.
    fn checked(url: String, what: &str, tls_ca: Option<&TlsCa>) -> Result<Node, String> {
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
            Some(ca) if !tls => {
                return Err(format!(
                    "--tls-ca {}: given, but {what} {shown} is amqp:// (no TLS); use amqps://",
                    ca.path().display()
                ))
            }
            other => other.cloned(),
        };
        Ok(Node { url, uri, tls_ca })
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
    /// `rabbitmqctl list_connections`), with no automatic recovery (see the module doc), within
    /// [`CONNECT_TIMEOUT`]. A failed TLS handshake comes back as an error that says so (see
    /// [`super::tls`]).
    pub async fn connect(&self) -> Result<Connection, lapin::Error> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("logfence (pid {})", std::process::id()).into());
        let mut builder = DefaultConnectionBuilder::new()?
            .with_uri(self.uri.clone())
            .with_properties(props);
        if let Some(ca) = &self.tls_ca {
            builder = builder.with_tls_config(ca.tls_config());
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, builder.connect()).await {
            Ok(connected) => {
                connected.map_err(|e| tls::explain(e, self.host(), self.tls_ca.is_some()))
            }
            Err(_) => Err(lapin::Error::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            ))),
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("url", &redact(&self.url))
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// Where the broker is: one node, or every node of a cluster, in the order given. Clones share
/// the turn: each [`Broker::next_node`] is the node after the previous one, starting from a
/// randomly chosen one.
#[derive(Clone)]
pub struct Broker {
    /// At least one.
    nodes: Vec<Node>,
    /// Counts the attempts; the next node is this modulo the number of nodes.
    turn: Arc<AtomicUsize>,
}

impl PartialEq for Broker {
    fn eq(&self, other: &Broker) -> bool {
        self.nodes == other.nodes
    }
}

impl Eq for Broker {}

impl Broker {
    /// Validates `--amqp-url` (each given several times or holding several URLs separated by
    /// commas or line breaks) / `--amqp-url-file` (the same, in a file) / `--tls-ca`; `Err` is
    /// a usage message that never holds a password.
    pub fn from_args(args: &BrokerArgs) -> Result<Broker, String> {
        let tls_ca = args.tls_ca.as_deref().map(TlsCa::load).transpose()?;
        match &args.amqp_url_file {
            Some(path) => {
                let what = format!("--amqp-url-file {}", path.display());
                let text = std::fs::read_to_string(path).map_err(|e| format!("{what}: {e}"))?;
                let urls = split_urls(&text);
                if urls.is_empty() {
                    return Err(format!("{what}: the file is empty"));
                }
                Broker::checked(urls, &what, tls_ca.as_ref())
            }
            None => {
                let urls: Vec<&str> = args.amqp_url.iter().flat_map(|u| split_urls(u)).collect();
                if urls.is_empty() {
                    return Err("--amqp-url: no URL given".to_string());
                }
                Broker::checked(urls, "--amqp-url", tls_ca.as_ref())
            }
        }
    }

    /// One URL, or several separated by commas or line breaks.
    pub fn new(urls: &str, tls_ca: Option<PathBuf>) -> Result<Broker, String> {
        let tls_ca = tls_ca.as_deref().map(TlsCa::load).transpose()?;
        let urls = split_urls(urls);
        if urls.is_empty() {
            return Err("--amqp-url: no URL given".to_string());
        }
        Broker::checked(urls, "--amqp-url", tls_ca.as_ref())
    }

    fn checked(urls: Vec<&str>, what: &str, tls_ca: Option<&TlsCa>) -> Result<Broker, String> {
        let nodes = urls
            .into_iter()
            .map(|url| Node::checked(url.to_string(), what, tls_ca))
            .collect::<Result<Vec<Node>, String>>()?;
        let first = rand::thread_rng().gen_range(0..nodes.len().max(1));
        Ok(Broker {
            nodes,
            turn: Arc::new(AtomicUsize::new(first)),
        })
    }

    /// Every node, in the order given.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node whose turn it is; the turn moves on to the one after it.
    pub fn next_node(&self) -> &Node {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        &self.nodes[turn % self.nodes.len()]
    }

    /// A backoff whose rounds are one attempt per node.
    pub fn backoff(&self) -> Backoff {
        Backoff::for_nodes(self.nodes.len())
    }

    /// Connects to the next node ([`Broker::next_node`]): that one node only, once. Returns
    /// the node with the outcome, for messages.
    pub async fn connect(&self) -> (&Node, Result<Connection, lapin::Error>) {
        let node = self.next_node();
        (node, node.connect().await)
    }

    /// Connects to the first node that answers, trying each once, in turn; `Err` says why
    /// each failed (redacted).
    pub async fn connect_any(&self) -> Result<(&Node, Connection), String> {
        let mut why = Vec::with_capacity(self.nodes.len());
        for _ in 0..self.nodes.len() {
            match self.connect().await {
                (node, Ok(connection)) => return Ok((node, connection)),
                (node, Err(e)) => why.push(if self.nodes.len() == 1 {
                    e.to_string()
                } else {
                    format!("{node}: {e}")
                }),
            }
        }
        Err(why.join("; "))
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            fmt::Display::fmt(node, f)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// The URLs in `text`: separated by commas or line breaks, each trimmed, empty ones dropped.
fn split_urls(text: &str) -> Vec<&str> {
    text.split([',', '\n', '\r'])
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
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
    use std::path::Path;

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
            amqp_url: vec![url.to_string()],
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
        assert!(b.nodes()[0].is_tls());
        assert_eq!(b.nodes()[0].host(), "broker.internal");
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
        assert_eq!(b.nodes().len(), 1);
        assert_eq!(b.nodes()[0].url(), url);
        assert!(b.nodes()[0].is_tls());
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
                Broker::new(url, None).unwrap().nodes()[0].host(),
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

    #[test]
    fn several_urls_from_repeated_flags_commas_and_line_breaks() {
        let mut a = args("amqp://u:p@a:5672/%2f, amqp://u:p@b:5672/%2f", None, None);
        a.amqp_url
            .push("amqp://u:p@c:5672/%2f\namqp://u:p@d:5672/%2f\n".to_string());
        let b = Broker::from_args(&a).unwrap();
        let hosts: Vec<&str> = b.nodes().iter().map(Node::host).collect();
        assert_eq!(hosts, ["a", "b", "c", "d"]);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("urls");
        std::fs::write(
            &file,
            "amqp://u:p@x:5672/%2f\r\n\n  amqp://u:p@y:5672/%2f ,amqp://u:p@z:5672/%2f\n",
        )
        .unwrap();
        let b = Broker::from_args(&args(DEFAULT_FOR_TESTS, Some(&file), None)).unwrap();
        let hosts: Vec<&str> = b.nodes().iter().map(Node::host).collect();
        assert_eq!(hosts, ["x", "y", "z"]);

        let e = Broker::from_args(&args(" , \n", None, None)).unwrap_err();
        assert!(e.contains("no URL"), "{e}");
        std::fs::write(&file, ",\n,").unwrap();
        let e = Broker::from_args(&args(DEFAULT_FOR_TESTS, Some(&file), None)).unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn every_url_of_a_list_is_checked_and_shown_redacted() {
        let list = format!(
            "amqp://u:{SECRET}@a:5672/%2f,amqps://v:{SECRET}@b:5671/%2f,amqp://w:{SECRET}@[fd00::1]/%2f"
        );
        let b = Broker::new(&list, None).unwrap();
        let shown = format!("{b} {b:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert_eq!(
            b.to_string(),
            "amqp://u:***@a:5672/%2f, amqps://v:***@b:5671/%2f, amqp://w:***@[fd00::1]/%2f"
        );
        assert_eq!(b.nodes()[2].host(), "fd00::1");
        // One bad URL anywhere in the list refuses the whole list, naming it redacted.
        let bad = format!("amqp://u:{SECRET}@a/%2f,http://u:{SECRET}@b/%2f");
        let e = Broker::new(&bad, None).unwrap_err();
        assert!(e.contains("http://u:***@b/%2f"), "{e}");
        assert!(!e.contains(SECRET), "{e}");
        // A private CA with a plain URL anywhere in the list is refused too.
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_file(&dir);
        let mixed = format!("amqps://u:{SECRET}@a/%2f,amqp://u:{SECRET}@b/%2f");
        let e = Broker::new(&mixed, Some(ca)).unwrap_err();
        assert!(e.contains("no TLS") && !e.contains(SECRET), "{e}");
    }

    #[test]
    fn nodes_are_taken_in_turn_from_a_random_first_one() {
        let list = "amqp://a,amqp://b,amqp://c";
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let b = Broker::new(list, None).unwrap();
            let shared = b.clone();
            let turns: Vec<String> = (0..7)
                .map(|i| {
                    // Clones share the turn.
                    let which = if i % 2 == 0 { &b } else { &shared };
                    which.next_node().host().to_string()
                })
                .collect();
            firsts.insert(turns[0].clone());
            let start = ["a", "b", "c"].iter().position(|h| *h == turns[0]).unwrap();
            for (i, host) in turns.iter().enumerate() {
                assert_eq!(host, ["a", "b", "c"][(start + i) % 3], "{turns:?}");
            }
        }
        assert_eq!(firsts.len(), 3, "the first node is not random: {firsts:?}");
        let one = Broker::new("amqp://only", None).unwrap();
        assert!((0..3).all(|_| one.next_node().host() == "only"));
    }

    #[test]
    fn a_round_of_nodes_costs_no_wait_but_its_last_failure() {
        let mut b = Backoff::for_nodes(3);
        let delays: Vec<Duration> = (0..9).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            if i % 3 == 2 {
                let round = (i / 3) as u32;
                let step = BACKOFF_BASE * 2u32.pow(round);
                assert!(*d >= step / 2 && *d <= step, "failure {i}: {d:?}");
            } else {
                assert_eq!(*d, Duration::ZERO, "failure {i} within a round waited");
            }
        }
        assert_eq!(b.failures(), 9);
        b.reset();
        assert_eq!(b.next_delay(), Duration::ZERO);
        // One node: every failure waits, as before.
        let mut one = Backoff::for_nodes(1);
        assert!(one.next_delay() >= BACKOFF_BASE / 2);
        assert!(Backoff::for_nodes(0).next_delay() >= BACKOFF_BASE / 2);
    }

    #[tokio::test]
    async fn connect_any_tries_every_node_once_and_names_each_failure() {
        // Two ports nothing listens on: both refused, both named, no password shown.
        let dead = |port: u16| format!("amqp://u:{SECRET}@127.0.0.1:{port}/%2f");
        let list = format!("{},{}", dead(1), dead(2));
        let b = Broker::new(&list, None).unwrap();
        let e = b.connect_any().await.map(|_| ()).unwrap_err();
        assert!(
            e.contains("127.0.0.1:1/") && e.contains("127.0.0.1:2/"),
            "{e}"
        );
        assert!(!e.contains(SECRET), "{e}");
    }
}
