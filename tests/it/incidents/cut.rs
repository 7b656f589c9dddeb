//! Scenario 3, the cancelled request: a TCP proxy between the consumer and the broker adds
//! latency and cuts every connection at moments spread over the run. Nothing may be lost, no
//! line may carry another record's data, and no ack may cross a reconnect (a stale delivery
//! tag on a new channel is a channel error: PRECONDITION_FAILED, unknown delivery tag).
//!
//! The run ends exactly: every distinct token is on the sink and the queue holds nothing
//! (ready and unacknowledged, asked of the broker) while the consumer runs; then the consumer
//! stops, and the queue must still be empty. A record is lost only if its token is neither
//! on the sink nor in the queues (the queue and its DLQ are read back after the stop). Lines
//! alone do not tell: they count duplicates, and right after a cut the broker still holds the
//! cut channel's deliveries as unacknowledged, not ready.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::super::broker::{broker_addr, url, Depth, Rabbit, TestQueue};
use super::super::consume::{benign, spawn_consumer};
use super::Goals;

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
    fn start(upstream: String) -> Proxy {
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
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(broker) = TcpStream::connect(upstream.as_str()).await else {
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

/// The tokens on the sink, read as it grows: each line's `tok-NNNNNN`, counted.
struct SinkTokens {
    path: PathBuf,
    /// Bytes read so far (up to the last complete line).
    offset: u64,
    lines: usize,
    /// Lines per token.
    per_token: HashMap<String, usize>,
    /// Lines holding no token or more than one (a line with another record's data).
    mixed: usize,
}

impl SinkTokens {
    fn new(path: &Path) -> SinkTokens {
        SinkTokens {
            path: path.to_path_buf(),
            offset: 0,
            lines: 0,
            per_token: HashMap::new(),
            mixed: 0,
        }
    }

    /// Reads the lines written since the last look.
    fn update(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let mut new = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut new).is_err() {
            return;
        }
        let Some(end) = memchr::memrchr(b'\n', &new) else {
            return;
        };
        self.offset += end as u64 + 1;
        for line in new[..end].split(|b| *b == b'\n') {
            self.lines += 1;
            let line = String::from_utf8_lossy(line);
            let tokens = tokens(&line);
            if tokens.len() != 1 {
                self.mixed += 1;
            }
            if let Some(t) = tokens.first() {
                *self.per_token.entry(t.to_string()).or_default() += 1;
            }
        }
    }

    fn distinct(&self) -> usize {
        self.per_token.len()
    }
}

/// The `tok-NNNNNN` tokens in a line.
fn tokens(line: &str) -> Vec<&str> {
    line.match_indices("tok-")
        .map(|(at, _)| &line[at..(at + 10).min(line.len())])
        .collect()
}

#[test]
#[ignore = "scenario: run with scripts/incidents.sh"]
fn incident_cut_connections_lose_nothing_and_never_ack_across_a_reconnect() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::classic(&rabbit, "cut");
    let dead_queue = format!("{}.dead", queue.name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let sink = tmp.path().join("out.log");
    rabbit.publish_transient(&queue.name, &(0..RECORDS).map(benign).collect::<Vec<_>>());

    let upstream = broker_addr();
    let proxy = Proxy::start(upstream.clone());
    let via = url().replacen(&upstream, &proxy.addr.to_string(), 1);
    let mut consumer = spawn_consumer(
        &queue.name,
        &sink,
        tmp.path(),
        &["--queue-type", "classic", "--prefetch", PREFETCH],
        &[("AMQP_URL", via.as_str())],
        tmp.path().join("stderr.log"),
    );
    let mut seen = SinkTokens::new(&sink);
    // A cut each time another twenty-first of the records is through, at a random moment
    // within the next stretch (so cuts land mid-batch, mid-ack, mid-publish).
    let started = Instant::now();
    let mut cuts = 0;
    let step = RECORDS / (CUTS + 1);
    let mut rng = rand::thread_rng();
    while cuts < CUTS && started.elapsed() < Duration::from_secs(240) {
        seen.update();
        if seen.lines >= step * (cuts + 1) {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..50)));
            proxy.cut_all();
            cuts += 1;
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // The end: every token written and nothing left in the broker, ready or unacked. (A
    // record the sandbox dead-lettered, which a starved machine can make it do by timing out
    // on a suspect, is never written: the wait counts it as done, and the goals below tell.)
    // On the way, the moment the old end condition (as many lines as records, none ready)
    // held, and how many tokens were still missing then.
    let mut early: Option<usize> = None;
    let mut depth = Depth {
        ready: u64::MAX,
        unacked: u64::MAX,
        consumers: 0,
    };
    let until = Instant::now() + Duration::from_secs(240);
    let drained = loop {
        seen.update();
        if early.is_none() && seen.lines >= RECORDS && rabbit.ready(&queue.name) == 0 {
            early = Some(RECORDS - seen.distinct());
        }
        if seen.distinct() + rabbit.ready(&dead_queue) as usize >= RECORDS {
            depth = rabbit.depth(&queue.name);
            if depth.ready + depth.unacked == 0 {
                break true;
            }
        }
        if Instant::now() >= until {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    consumer.terminate();
    let status = consumer.wait_for(Duration::from_secs(30));
    let stderr = consumer.stderr();
    drop(proxy.rt);
    seen.update();

    // After the stop: what the broker still holds, read back, so a token missing from the
    // sink is lost only if it is not there either.
    let after = rabbit.depth_at_rest(&queue.name, Duration::from_secs(15));
    let dead = rabbit.take_all(&dead_queue);
    let in_queue: HashSet<String> = rabbit
        .take_all(&queue.name)
        .iter()
        .chain(dead.iter())
        .flat_map(|(body, _)| {
            tokens(&String::from_utf8_lossy(body))
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let missing: Vec<&String> = in_queue
        .iter()
        .filter(|t| !seen.per_token.contains_key(*t))
        .collect();
    let lost = RECORDS.saturating_sub(seen.distinct() + missing.len());
    let duplicates: usize = seen.per_token.values().map(|n| n - 1).sum();
    let stale = stderr.matches("unknown delivery tag").count()
        + stderr.matches("PRECONDITION_FAILED").count();
    let sessions = stderr.matches("\"connected\"").count() + stderr.matches(" connected ").count();

    let mut goals = Goals::new("3 cancelled request");
    goals.goal("connection cuts", cuts, "20", cuts == CUTS);
    goals.report("sessions (connects)", sessions);
    goals.goal(
        "drained (queue empty)",
        if drained { "yes" } else { "no" },
        "yes",
        drained,
    );
    goals.goal(
        "distinct tokens on the sink",
        seen.distinct(),
        "100000",
        seen.distinct() == RECORDS,
    );
    goals.goal("dead-lettered", dead.len(), "0", dead.is_empty());
    goals.goal("lost records", lost, "0", lost == 0);
    goals.goal(
        "left in the queue after the stop",
        format!("{} ready + {} unacked", after.ready, after.unacked),
        "0 + 0",
        after.ready + after.unacked == 0,
    );
    goals.report(
        "missing at the old end condition",
        early.map_or("never held".to_string(), |n| n.to_string()),
    );
    goals.goal(
        "lines with another's token",
        seen.mixed,
        "0",
        seen.mixed == 0,
    );
    goals.goal("stale-ack channel errors", stale, "0", stale == 0);
    let bound = CUTS * PREFETCH.parse::<usize>().unwrap_or(500);
    goals.goal(
        "duplicates",
        duplicates,
        &format!("<= {bound}"),
        duplicates <= bound,
    );
    goals.goal(
        "clean exit",
        format!("{status:?}"),
        "exit 0",
        status.is_some_and(|s| s.success()),
    );
    goals.report("elapsed", format!("{:.1} s", elapsed.as_secs_f64()));
    goals.check(format!(
        "{} distinct of {RECORDS} on the sink, {} lines; broker before the stop {depth:?}, \
         after {after:?}; {} not on the sink but in the queues\n{stderr}",
        seen.distinct(),
        seen.lines,
        missing.len()
    ));
}
