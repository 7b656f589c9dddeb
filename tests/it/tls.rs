//! `amqps://`, `--tls-ca` and `--amqp-url-file` (docs/commands.md), for real: each test makes its
//! own CA and a certificate for `localhost` (rcgen), and puts a TLS endpoint in front of the shared
//! broker — a tokio-rustls proxy on an ephemeral port, forwarding to `broker_addr()` — so the broker's own
//! configuration is never touched. The consumer is the built binary, as a user runs it.
//!
//! And the password never shows: every failure path (a bad URL, a wrong password, no broker,
//! an untrusted certificate) runs with a distinctive password that must not appear in what
//! the process prints, nor on its `/metrics`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::broker::{broker_addr, sink_lines, wait_until, Rabbit, TestQueue};
use super::consume::{benign, spawn_consumer, ConsumerProcess};
use super::metrics::{metrics_addr, scrape};
use logfence::amqp::topology::QueueType;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The password of every URL that must fail; it must never be printed.
const SECRET: &str = "s3cr3t-Hunter2";

/// A CA, and a server certificate it signed for `names`.
struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Pki {
    fn new(names: &[&str]) -> Pki {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "logfence test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let server = rcgen::CertificateParams::new(names)
            .expect("server params")
            .signed_by(&key, &issuer)
            .expect("server certificate");
        Pki {
            ca_pem: ca.pem(),
            chain: vec![server.der().clone(), ca.der().clone()],
            key: key.serialize_der(),
        }
    }

    fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.ca_pem).expect("write CA");
        path
    }
}

/// A TLS-terminating proxy to the broker, on its own runtime; stops when dropped.
struct TlsProxy {
    port: u16,
    /// Handshakes that completed / that failed (the client refused us, or gave up).
    accepted: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl TlsProxy {
    fn start(pki: &Pki) -> TlsProxy {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                pki.chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone())),
            )
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let upstream = broker_addr();
        let (accepted, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (ok, bad) = (accepted.clone(), refused.clone());
        rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, upstream, ok, bad) =
                    (acceptor.clone(), upstream.clone(), ok.clone(), bad.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(client).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            bad.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    ok.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut broker) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                });
            }
        });
        TlsProxy {
            port,
            accepted,
            refused,
            _rt: rt,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// An `amqps://` URL to the broker through this proxy, by `host`.
    fn url(&self, host: &str, user: &str, password: &str) -> String {
        format!("amqps://{user}:{password}@{host}:{}/%2f", self.port)
    }
}

/// Asserts the password is nowhere in `text`.
fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password:\n{text}");
}

/// Runs a consumer that cannot connect until it has said why `attempts` times, stops it, and
/// returns its stderr (checked free of the password).
fn failing_consumer(
    what: &str,
    queue: &str,
    dir: &Path,
    extra: &[&str],
    attempts: usize,
) -> String {
    let sink = dir.join(format!("{what}.log"));
    let mut consumer: ConsumerProcess = spawn_consumer(
        queue,
        &sink,
        dir,
        extra,
        // Not the working broker: the flags must be what it uses.
        &[("AMQP_URL", "amqp://nobody:nothing@127.0.0.1:1/%2f")],
        dir.join(format!("{what}.stderr")),
    );
    let tried = wait_until(Duration::from_secs(60), || {
        consumer.stderr().matches("session ended").count() >= attempts
    });
    let metrics = scrape(metrics_addr(&consumer));
    assert!(
        metrics.contains("logfence_"),
        "{what}: no metrics:\n{metrics}"
    );
    assert_no_secret(&format!("{what} /metrics"), &metrics);
    consumer.terminate();
    let status = consumer.wait_for(Duration::from_secs(20));
    let stderr = consumer.stderr();
    if std::env::var_os("LOGFENCE_TEST_VERBOSE").is_some() {
        eprintln!("--- {what}:\n{stderr}");
    }
    assert!(
        tried,
        "{what}: fewer than {attempts} failed attempts logged:\n{stderr}"
    );
    assert!(
        status.is_some(),
        "{what}: no exit after SIGTERM while reconnecting:\n{stderr}"
    );
    assert!(sink_lines(&sink).is_empty(), "{what}: wrote lines");
    assert_no_secret(what, &stderr);
    stderr
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_over_tls_with_a_private_ca_and_the_url_from_a_file() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "tls", QueueType::Quorum);
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&["localhost"]);
    let ca = pki.write_ca(tmp.path(), "ca.pem");
    let proxy = TlsProxy::start(&pki);
    let url_file = tmp.path().join("amqp-url");
    std::fs::write(
        &url_file,
        format!("{}\n", proxy.url("localhost", "guest", "guest")),
    )
    .expect("write url file");
    let n = 200;
    let bodies: Vec<Vec<u8>> = (0..n).map(benign).collect();
    rabbit.publish(&queue.name, &bodies);

    let sink = tmp.path().join("out.log");
    let mut consumer = spawn_consumer(
        &queue.name,
        &sink,
        tmp.path(),
        &[
            "--amqp-url-file",
            url_file.to_str().expect("utf-8 path"),
            "--tls-ca",
            ca.to_str().expect("utf-8 path"),
        ],
        // The plain URL of the environment must lose to the file.
        &[("AMQP_URL", "amqp://nobody:nothing@127.0.0.1:1/%2f")],
        tmp.path().join("stderr.log"),
    );
    let drained = wait_until(Duration::from_secs(60), || {
        sink_lines(&sink).len() >= n && rabbit.ready(&queue.name) == 0
    });
    consumer.terminate();
    let status = consumer.wait_for(Duration::from_secs(20));
    let stderr = consumer.stderr();
    assert!(drained, "not drained over TLS; stderr:\n{stderr}");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit; stderr:\n{stderr}"
    );
    let lines = sink_lines(&sink);
    assert_eq!(lines.len(), n, "one line per record");
    for i in 0..n {
        let token = format!("tok-{i:06}");
        assert!(
            lines.iter().any(|l| l.contains(&token)),
            "no line for {token}"
        );
    }
    assert!(proxy.accepted() >= 1, "the consumer never came through TLS");
    assert_eq!(proxy.refused(), 0, "a handshake failed; stderr:\n{stderr}");
    assert!(!stderr.contains("TLS"), "TLS complaints:\n{stderr}");
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_refuses_a_broker_certificate_from_another_ca_and_says_so() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "tls-wrong-ca", QueueType::Quorum);
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&["localhost"]);
    let proxy = TlsProxy::start(&pki);
    let other_ca = Pki::new(&["localhost"]).write_ca(tmp.path(), "other-ca.pem");
    let n = 10;
    rabbit.publish(&queue.name, &(0..n).map(benign).collect::<Vec<_>>());

    let url = proxy.url("localhost", "guest", SECRET);
    let stderr = failing_consumer(
        "wrong-ca",
        &queue.name,
        tmp.path(),
        &[
            "--amqp-url",
            &url,
            "--tls-ca",
            other_ca.to_str().expect("utf-8"),
        ],
        2,
    );
    assert!(
        stderr.contains("TLS certificate problem")
            && stderr.contains("not signed by a trusted CA")
            && stderr.contains("--tls-ca the CA that signed it"),
        "no clear TLS error:\n{stderr}"
    );
    assert!(proxy.refused() >= 2, "the proxy saw no refused handshake");
    assert_eq!(
        proxy.accepted(),
        0,
        "a handshake with the wrong CA succeeded"
    );
    assert_eq!(
        rabbit.ready(&queue.name),
        n as u32,
        "records left the queue"
    );

    // Without --tls-ca the built-in public roots do not know our CA either.
    let stderr = failing_consumer("no-ca", &queue.name, tmp.path(), &["--amqp-url", &url], 1);
    assert!(
        stderr.contains("TLS certificate problem")
            && stderr.contains("give its certificate with --tls-ca"),
        "no clear TLS error:\n{stderr}"
    );
    assert_eq!(
        rabbit.ready(&queue.name),
        n as u32,
        "records left the queue"
    );
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_refuses_a_broker_certificate_for_another_name() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "tls-wrong-name", QueueType::Quorum);
    let tmp = tempfile::tempdir().expect("tempdir");
    // Valid for localhost only: connecting by address must fail, the name checked being the
    // address as written.
    let pki = Pki::new(&["localhost"]);
    let ca = pki.write_ca(tmp.path(), "ca.pem");
    let proxy = TlsProxy::start(&pki);
    let url = proxy.url("127.0.0.1", "guest", SECRET);
    let stderr = failing_consumer(
        "wrong-name",
        &queue.name,
        tmp.path(),
        &["--amqp-url", &url, "--tls-ca", ca.to_str().expect("utf-8")],
        1,
    );
    assert!(
        stderr.contains("TLS certificate problem")
            && stderr.contains("not valid for the name 127.0.0.1"),
        "no clear TLS error:\n{stderr}"
    );
    assert_eq!(
        proxy.accepted(),
        0,
        "a handshake for the wrong name succeeded"
    );
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
fn consume_never_prints_the_password_when_the_broker_refuses_it_or_is_not_there() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::new(&rabbit, "tls-secret", QueueType::Quorum);
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&["localhost"]);
    let ca = pki.write_ca(tmp.path(), "ca.pem");
    let proxy = TlsProxy::start(&pki);

    // A wrong password, over TLS (the handshake succeeds, the login does not) and in clear.
    let tls_url = proxy.url("localhost", "guest", SECRET);
    let stderr = failing_consumer(
        "wrong-password-tls",
        &queue.name,
        tmp.path(),
        &[
            "--amqp-url",
            &tls_url,
            "--tls-ca",
            ca.to_str().expect("utf-8"),
        ],
        1,
    );
    assert!(proxy.accepted() >= 1, "never reached the broker:\n{stderr}");
    assert!(!stderr.contains("TLS certificate"), "{stderr}");
    let plain_url = format!("amqp://guest:{SECRET}@{}/%2f", broker_addr());
    failing_consumer(
        "wrong-password",
        &queue.name,
        tmp.path(),
        &["--amqp-url", &plain_url],
        1,
    );
    // Nobody listening, through a URL file.
    let url_file = tmp.path().join("url");
    std::fs::write(&url_file, format!("amqp://guest:{SECRET}@127.0.0.1:1/%2f")).expect("write");
    failing_consumer(
        "unreachable",
        &queue.name,
        tmp.path(),
        &["--amqp-url-file", url_file.to_str().expect("utf-8")],
        2,
    );
}

#[test]
fn consume_usage_errors_name_the_problem_without_the_password() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Pki::new(&["localhost"]).write_ca(tmp.path(), "ca.pem");
    let not_pem = tmp.path().join("not.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").expect("write");
    let bad_url_file = tmp.path().join("bad-url");
    std::fs::write(&bad_url_file, format!("amqp://guest:{SECRET}@h:port/%2f\n")).expect("write");
    let good_url = format!("amqps://guest:{SECRET}@localhost:5671/%2f");
    let ca = ca.to_str().expect("utf-8");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--amqp-url".into(), format!("http://guest:{SECRET}@h/%2f")],
            "expected amqp://",
        ),
        (
            vec![
                "--amqp-url".into(),
                format!("amqp://guest:{SECRET}@h:99999/%2f"),
            ],
            "not a valid AMQP URI",
        ),
        (
            vec![
                "--amqp-url-file".into(),
                bad_url_file.to_str().expect("utf-8").into(),
            ],
            "--amqp-url-file",
        ),
        (
            vec![
                "--amqp-url-file".into(),
                tmp.path().join("missing").to_str().expect("utf-8").into(),
            ],
            "No such file",
        ),
        (
            vec![
                "--amqp-url".into(),
                good_url.clone(),
                "--tls-ca".into(),
                tmp.path()
                    .join("missing.pem")
                    .to_str()
                    .expect("utf-8")
                    .into(),
            ],
            "--tls-ca",
        ),
        (
            vec![
                "--amqp-url".into(),
                good_url.clone(),
                "--tls-ca".into(),
                not_pem.to_str().expect("utf-8").into(),
            ],
            "no certificate in it",
        ),
        (
            vec![
                "--amqp-url".into(),
                format!("amqp://guest:{SECRET}@localhost/%2f"),
                "--tls-ca".into(),
                ca.into(),
            ],
            "no TLS",
        ),
    ];
    for (args, says) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_logfence"))
            .arg("consume")
            .args(&args)
            .env_remove("AMQP_URL")
            .env("LOGFENCE_METRICS_ADDR", "127.0.0.1:0")
            .env("LOGFENCE_STATE_DIR", tmp.path())
            .stdin(Stdio::null())
            .output()
            .expect("run logfence");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: stderr:\n{stderr}");
        assert!(
            stderr.contains(says),
            "{args:?}: {says:?} not in:\n{stderr}"
        );
        assert_no_secret(&format!("{args:?} stderr"), &stderr);
        assert_no_secret(&format!("{args:?} stdout"), &stdout);
    }
}
