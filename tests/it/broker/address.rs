//! Where the tests' broker is: `LOGFENCE_TEST_AMQP_URL`, or RabbitMQ's defaults on this
//! machine (what `scripts/broker.sh` starts). The one place the address is written down; the
//! integration tests and the end-to-end bench both read it from here.

/// The broker `scripts/broker.sh` starts: guest/guest on 127.0.0.1:5672, the default vhost.
pub(crate) const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The variable that points the tests (and the e2e bench) at another broker.
pub(crate) const URL_VAR: &str = "LOGFENCE_TEST_AMQP_URL";

/// The test broker's AMQP URL.
pub(crate) fn url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// `host:port` of the broker in [`url`], for the tests' TCP proxies in front of it.
pub(crate) fn broker_addr() -> String {
    let real = url();
    let rest = real.rsplit_once('@').map_or(real.as_str(), |(_, r)| r);
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    match rest.split('/').next() {
        Some(addr) if !addr.is_empty() => addr.to_string(),
        _ => panic!("{URL_VAR}={real:?} names no host:port"),
    }
}
