//! Scenario 3, the cancelled request: a TCP proxy between the consumer and the broker adds
//! latency and cuts every connection at moments spread over the run. Nothing may be lost, no
//! line may carry another record's data, and no ack may cross a reconnect (a stale delivery
//! tag on a new channel is a channel error: PRECONDITION_FAILED, unknown delivery tag).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::super::broker::{wait_until, Rabbit, TestQueue};
use super::super::consume::{benign, spawn_consumer};
use super::figure;

const RECORDS: usize = 100_000;
const CUTS: usize = 20;
const PREFETCH: &str = "500";

/// A proxy to the broker: each chunk waits 0–2 ms each way; a new value on `cut` closes every
/// connection open at that moment.
struct Proxy {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    cut: watch::Sender<u64>,
}

impl Proxy {
    fn start() -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, cuts) = watch::channel(0u64);
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cuts = cuts.clone();
                tokio::spawn(async move {
                    let Ok(broker) = TcpStream::connect("127.0.0.1:5672").await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = broker.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (br, bw) = broker.into_split();
                    let mut cuts = cuts;
                    cuts.borrow_and_update();
                    tokio::select! {
                        _ = pipe(cr, bw) => {}
                        _ = pipe(br, cw) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Proxy { rt, addr, cut }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = rand::thread_rng().gen_range(0..=2000);
        tokio::time::sleep(Duration::from_micros(delay)).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[test]
#[ignore = "scenario: run with scripts/incidents.sh"]
fn incident_cut_connections_lose_nothing_and_never_ack_across_a_reconnect() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::classic(&rabbit, "cut");
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = tmp.path().join("out.log");
    rabbit.publish_transient(&queue.name, &(0..RECORDS).map(benign).collect::<Vec<_>>());

    let proxy = Proxy::start();
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let consumer = spawn_consumer(
        &queue.name,
        &sink,
        tmp.path(),
        &["--queue-type", "classic", "--prefetch", PREFETCH],
        &[("AMQP_URL", url.as_str())],
        tmp.path().join("stderr.log"),
    );
    let count = || {
        std::fs::read(&sink)
            .map(|b| memchr::memchr_iter(b'\n', &b).count())
            .unwrap_or(0)
    };
    // A cut each time another twenty-first of the records is through, at a random moment
    // within the next stretch (so cuts land mid-batch, mid-ack, mid-publish).
    let started = Instant::now();
    let mut cuts = 0;
    let step = RECORDS / (CUTS + 1);
    let mut rng = rand::thread_rng();
    while cuts < CUTS && started.elapsed() < Duration::from_secs(240) {
        let target = step * (cuts + 1);
        if count() >= target {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..50)));
            proxy.cut_all();
            cuts += 1;
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let drained = wait_until(Duration::from_secs(240), || {
        count() >= RECORDS && rabbit.ready(&queue.name) == 0
    });
    let elapsed = started.elapsed();
    consumer.terminate();
    let stderr = consumer.stderr();
    drop(proxy.rt);
    assert!(drained, "not drained after {cuts} cuts:\n{stderr}");

    let text = std::fs::read_to_string(&sink).expect("sink");
    let mut per_token: HashMap<&str, usize> = HashMap::new();
    let mut mixed = 0;
    for line in text.lines() {
        let tokens: Vec<&str> = line
            .match_indices("tok-")
            .map(|(at, _)| &line[at..(at + 10).min(line.len())])
            .collect();
        if tokens.len() != 1 {
            mixed += 1;
        }
        if let Some(t) = tokens.first() {
            *per_token.entry(t).or_default() += 1;
        }
    }
    let lost = RECORDS - per_token.len();
    let duplicates: usize = per_token.values().map(|n| n - 1).sum();
    let stale = stderr.matches("unknown delivery tag").count()
        + stderr.matches("PRECONDITION_FAILED").count();
    let sessions = stderr.matches("\"connected\"").count() + stderr.matches(" connected ").count();

    let s = "3 cancelled request";
    figure(s, "connection cuts", cuts, "20", cuts == CUTS);
    figure(s, "sessions (connects)", sessions, "report", true);
    let no_loss = figure(s, "lost records", lost, "0", lost == 0);
    let no_mix = figure(s, "lines with another's token", mixed, "0", mixed == 0);
    let no_stale = figure(s, "stale-ack channel errors", stale, "0", stale == 0);
    let bound = CUTS * PREFETCH.parse::<usize>().unwrap_or(500);
    figure(
        s,
        "duplicates",
        duplicates,
        &format!("report (<= {bound})"),
        duplicates <= bound,
    );
    figure(
        s,
        "elapsed",
        format!("{:.1} s", elapsed.as_secs_f64()),
        "report",
        true,
    );
    assert!(cuts == CUTS && no_loss && no_mix && no_stale, "{stderr}");
}
