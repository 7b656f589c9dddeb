//! TLS for `amqps://`: the private CA of `--tls-ca`, checked at start-up, and a failed
//! handshake told apart from the other reasons a connection fails.
//!
//! The handshake itself is lapin's (rustls on ring, Mozilla's roots built in). A CA file is
//! read and checked once, before the first connection, so a wrong path or a key pasted where
//! the certificate should be is a usage error at start-up rather than a reconnect loop that
//! says "IO error" every thirty seconds. The CA is trusted in addition to the built-in roots:
//! that is how lapin's rustls connector takes extra roots.
//!
//! A certificate problem is not something a retry fixes, but the consumer retries every
//! failed connection (a broker restarting with a new certificate is a legitimate case), so
//! the error it logs each attempt has to say plainly that the certificate is the problem.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use lapin::tcp::OwnedTLSConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, RootCertStore};

/// A `--tls-ca` file larger than this is not a CA bundle (the whole Mozilla bundle is ~230 KiB).
pub const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The CA certificates of `--tls-ca`, read and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsCa {
    /// Where they came from, for messages.
    path: PathBuf,
    /// The file's text, handed to lapin, which parses it again at each connection.
    pem: String,
    /// How many certificates it holds.
    certificates: usize,
}

impl TlsCa {
    /// Reads and checks a PEM file of CA certificates; `Err` is a usage message.
    pub fn load(path: &Path) -> Result<TlsCa, String> {
        let what = format!("--tls-ca {}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| format!("{what}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{what}: not a regular file"));
        }
        if meta.len() > MAX_CA_FILE_BYTES {
            return Err(format!(
                "{what}: {} bytes is too large for a CA file (at most {MAX_CA_FILE_BYTES})",
                meta.len()
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{what}: {e}"))?;
        TlsCa::from_pem(path, &bytes).map_err(|e| format!("{what}: {e}"))
    }

    /// Checks PEM text: at least one `CERTIFICATE` block, every one a well-formed X.509
    /// certificate usable as a trust anchor. Other blocks (a private key) are ignored, as
    /// rustls ignores them.
    pub fn from_pem(path: &Path, bytes: &[u8]) -> Result<TlsCa, String> {
        let Ok(pem) = std::str::from_utf8(bytes) else {
            return Err(
                "not a PEM text file (it is not UTF-8; DER? convert it with \
                 `openssl x509 -inform der -in FILE -out FILE.pem`)"
                    .to_string(),
            );
        };
        let certs = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not valid PEM: {e}"))?;
        if certs.is_empty() {
            return Err(
                "no certificate in it (expected PEM blocks: -----BEGIN CERTIFICATE-----)"
                    .to_string(),
            );
        }
        let total = certs.len();
        let (_, unusable) = RootCertStore::empty().add_parsable_certificates(certs);
        if unusable > 0 {
            return Err(format!(
                "{unusable} of its {total} PEM certificate(s) is not a valid X.509 certificate"
            ));
        }
        Ok(TlsCa {
            path: path.to_path_buf(),
            pem: pem.to_string(),
            certificates: total,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many CA certificates the file holds.
    pub fn certificates(&self) -> usize {
        self.certificates
    }

    /// For lapin: these certificates as extra roots, no client certificate.
    pub fn tls_config(&self) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: None,
            cert_chain: Some(self.pem.clone()),
        }
    }
}

impl fmt::Debug for TlsCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCa")
            .field("path", &self.path)
            .field("certificates", &self.certificates)
            .finish()
    }
}

/// Why a TLS handshake with the broker failed, in words an operator can act on. Never holds
/// the URI, so never the password.
#[derive(Debug, thiserror::Error)]
pub enum TlsFailure {
    #[error(
        "TLS certificate problem: the broker's certificate (at {host}) is not signed by a \
         trusted CA ({source}); {hint}"
    )]
    UntrustedCertificate {
        host: String,
        hint: &'static str,
        source: rustls::Error,
    },
    #[error(
        "TLS certificate problem: the broker's certificate is not valid for the name {host} \
         in the URL ({source}); connect by a name the certificate holds"
    )]
    WrongName { host: String, source: rustls::Error },
    #[error("TLS certificate problem: the broker's certificate (at {host}) was refused: {source}")]
    BadCertificate { host: String, source: rustls::Error },
    #[error(
        "TLS handshake with {host} failed: {source} (is that port a TLS listener? RabbitMQ \
         listens for amqps on 5671, for plain amqp on 5672)"
    )]
    Handshake { host: String, source: rustls::Error },
}

impl TlsFailure {
    /// The failure inside a connection error, if it is a TLS one.
    pub fn classify(error: &lapin::Error, host: &str, custom_ca: bool) -> Option<TlsFailure> {
        let lapin::ErrorKind::IOError(io) = error.kind() else {
            return None;
        };
        let tls = io.get_ref()?.downcast_ref::<rustls::Error>()?.clone();
        let host = host.to_string();
        Some(match &tls {
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => TlsFailure::UntrustedCertificate {
                host,
                hint: if custom_ca {
                    "is --tls-ca the CA that signed it?"
                } else {
                    "for a private CA, give its certificate with --tls-ca"
                },
                source: tls,
            },
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => TlsFailure::WrongName { host, source: tls },
            rustls::Error::InvalidCertificate(_) => {
                TlsFailure::BadCertificate { host, source: tls }
            }
            _ => TlsFailure::Handshake { host, source: tls },
        })
    }
}

/// A connection error with its TLS failure, if any, spelled out; other errors unchanged.
pub fn explain(error: lapin::Error, host: &str, custom_ca: bool) -> lapin::Error {
    match TlsFailure::classify(&error, host, custom_ca) {
        Some(failure) => {
            let kind = match error.kind() {
                lapin::ErrorKind::IOError(io) => io.kind(),
                _ => io::ErrorKind::InvalidData,
            };
            lapin::Error::from(io::Error::new(kind, failure))
        }
        None => error,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A self-signed CA certificate (rcgen, P-256), as a CA file holds it.
    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_pem_ca_file_is_accepted_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let one = write(&dir, "one.pem", ca_pem().as_bytes());
        assert_eq!(TlsCa::load(&one).unwrap().certificates(), 1);
        let bundle = format!("# our CAs\n{}\n{}", ca_pem(), ca_pem());
        let two = write(&dir, "two.pem", bundle.as_bytes());
        let ca = TlsCa::load(&two).unwrap();
        assert_eq!(ca.certificates(), 2);
        assert_eq!(ca.tls_config().cert_chain.as_deref(), Some(bundle.as_str()));
        assert!(ca.tls_config().identity.is_none());
    }

    #[test]
    fn a_missing_or_unreadable_ca_file_says_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = TlsCa::load(&missing).unwrap_err();
        assert!(e.starts_with("--tls-ca "), "{e}");
        assert!(e.contains("nope.pem") && e.contains("No such file"), "{e}");
        let e = TlsCa::load(dir.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in [
            ("empty.pem", Vec::new()),
            ("text.pem", b"hello\n".to_vec()),
            (
                "key.pem",
                rcgen::KeyPair::generate()
                    .unwrap()
                    .serialize_pem()
                    .into_bytes(),
            ),
        ] {
            let e = TlsCa::load(&write(&dir, name, &body)).unwrap_err();
            assert!(e.contains("no certificate in it"), "{name}: {e}");
        }
    }

    #[test]
    fn a_der_file_is_refused_with_a_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let der = CertificateDer::from_pem_slice(ca_pem().as_bytes()).unwrap();
        let e = TlsCa::load(&write(&dir, "ca.der", der.as_ref())).unwrap_err();
        assert!(
            e.contains("not a PEM text file") || e.contains("no certificate"),
            "{e}"
        );
    }

    #[test]
    fn broken_pem_or_a_certificate_that_is_not_x509_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pem = ca_pem();
        let truncated = &pem[..pem.len() - 30];
        let e = TlsCa::load(&write(&dir, "cut.pem", truncated.as_bytes())).unwrap_err();
        assert!(e.contains("not valid PEM"), "{e}");

        let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        let bundle = format!("{pem}{junk}");
        let e = TlsCa::load(&write(&dir, "junk.pem", bundle.as_bytes())).unwrap_err();
        assert!(e.contains("1 of its 2"), "{e}");
    }

    #[test]
    fn an_oversized_ca_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.pem");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_CA_FILE_BYTES + 1).unwrap();
        let e = TlsCa::load(&path).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn tls_failures_are_told_apart_and_other_errors_pass_through() {
        let wrap =
            |e: rustls::Error| lapin::Error::from(io::Error::new(io::ErrorKind::InvalidData, e));
        let untrusted = explain(
            wrap(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
            "broker.internal",
            true,
        )
        .to_string();
        assert!(
            untrusted.contains("TLS certificate problem")
                && untrusted.contains("broker.internal")
                && untrusted.contains("--tls-ca the CA that signed it"),
            "{untrusted}"
        );
        let name = explain(
            wrap(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            )),
            "10.0.0.5",
            false,
        )
        .to_string();
        assert!(name.contains("not valid for the name 10.0.0.5"), "{name}");
        let expired = explain(
            wrap(rustls::Error::InvalidCertificate(CertificateError::Expired)),
            "h",
            false,
        )
        .to_string();
        assert!(expired.contains("TLS certificate problem"), "{expired}");
        let plain = explain(
            wrap(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType,
            )),
            "h",
            false,
        )
        .to_string();
        assert!(plain.contains("TLS handshake with h failed"), "{plain}");

        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let other = explain(lapin::Error::from(refused), "h", false);
        assert!(TlsFailure::classify(&other, "h", false).is_none());
        assert!(!other.to_string().contains("TLS"), "{other}");
    }
}
