//! Scenario 5, the telemetry stampede: twenty consumers lose the broker together
//! (`rabbitmqctl stop_app`, then `start_app`). Their reconnects must be spread by jitter (no
//! more than two per consumer in any second, fleet-wide), and every consumer's `/metrics` must
//! answer throughout. This restarts the shared broker: run it alone (scripts/incidents.sh).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::super::broker::{rabbitmqctl_command, wait_until, Rabbit, TestQueue};
use super::super::consume::{spawn_consumer, ConsumerProcess};
use super::super::metrics::{metrics_addr, samples};
use super::Goals;

const CONSUMERS: usize = 20;
const DOWN_FOR: Duration = Duration::from_secs(10);

/// The test broker's `rabbitmqctl` (the one `LOGFENCE_TEST_RABBITMQCTL` names).
fn rabbitmqctl(args: &[&str]) -> bool {
    rabbitmqctl_command()
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn scrape_within(addr: SocketAddr, limit: Duration) -> Option<BTreeMap<String, f64>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.1 200")
        .then(|| samples(body.split_once("\r\n\r\n").map_or("", |(_, b)| b)))
}

#[test]
#[ignore = "scenario: restarts the broker; run alone with scripts/incidents.sh"]
fn incident_broker_restart_no_stampede_and_metrics_answer_throughout() {
    let rabbit = Rabbit::connect();
    let queue = TestQueue::classic(&rabbit, "stampede");
    let tmp = tempfile::tempdir().expect("tempdir");
    let consumers: Vec<ConsumerProcess> = (0..CONSUMERS)
        .map(|i| {
            let dir = tmp.path().join(format!("c{i}"));
            std::fs::create_dir_all(&dir).expect("dir");
            spawn_consumer(
                &queue.name,
                &dir.join("out.log"),
                &dir,
                &["--queue-type", "classic"],
                &[],
                dir.join("stderr.log"),
            )
        })
        .collect();
    let addrs: Vec<SocketAddr> = consumers.iter().map(metrics_addr).collect();
    let connected = |addr: &SocketAddr| {
        scrape_within(*addr, Duration::from_secs(1))
            .and_then(|s| s.get("logfence_amqp_connected").copied())
            == Some(1.0)
    };
    assert!(
        wait_until(Duration::from_secs(60), || addrs.iter().all(connected)),
        "not all connected"
    );
    drop(queue);
    drop(rabbit);

    // Scrape everyone every 250 ms from before the stop until all are back; attempts per
    // second are the fleet's increase of logfence_amqp_reconnects_total.
    let started = Instant::now();
    assert!(rabbitmqctl(&["stop_app"]), "rabbitmqctl stop_app failed");
    let mut restarted = false;
    let (mut asked, mut answered) = (0usize, 0usize);
    let mut attempts_by_second: BTreeMap<u64, f64> = BTreeMap::new();
    let mut last: Vec<f64> = vec![0.0; CONSUMERS];
    let mut back = false;
    while started.elapsed() < Duration::from_secs(120) {
        if !restarted && started.elapsed() >= DOWN_FOR {
            assert!(rabbitmqctl(&["start_app"]), "rabbitmqctl start_app failed");
            restarted = true;
        }
        let second = started.elapsed().as_secs();
        let mut all_connected = true;
        for (i, addr) in addrs.iter().enumerate() {
            asked += 1;
            if let Some(s) = scrape_within(*addr, Duration::from_secs(1)) {
                answered += 1;
                let total = s
                    .get("logfence_amqp_reconnects_total")
                    .copied()
                    .unwrap_or(0.0);
                *attempts_by_second.entry(second).or_default() += total - last[i];
                last[i] = total;
                all_connected &= s.get("logfence_amqp_connected").copied() == Some(1.0);
            } else {
                all_connected = false;
            }
        }
        if restarted && all_connected {
            back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if !restarted {
        rabbitmqctl(&["start_app"]);
    }
    let recovered_in = started.elapsed();
    let peak = attempts_by_second.values().copied().fold(0.0, f64::max);
    let total: f64 = attempts_by_second.values().sum();
    drop(consumers);

    let mut goals = Goals::new("5 stampede");
    goals.goal("consumers", CONSUMERS, "20", CONSUMERS == 20);
    goals.goal(
        "all reconnected after",
        format!(
            "{:.1} s (down {} s)",
            recovered_in.as_secs_f64(),
            DOWN_FOR.as_secs()
        ),
        "all back",
        back,
    );
    goals.report("connection attempts", total);
    goals.goal(
        "peak attempts in one second",
        peak,
        "<= 40",
        peak <= 2.0 * CONSUMERS as f64,
    );
    let pct = 100.0 * answered as f64 / asked.max(1) as f64;
    goals.goal(
        "/metrics answered",
        format!("{pct:.1}% of {asked}"),
        "100%",
        answered == asked,
    );
    goals.check(format!("{attempts_by_second:?}"));
}
