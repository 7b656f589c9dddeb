//! `deploy/rabbitmq/definitions.json`: the same topology logfence declares (so `consume`
//! with or without `--no-declare` accepts it), loaded into the real broker.
//!
//! The broker test imports a copy into a scratch vhost of its own (every `vhost` field
//! rewritten; `rabbitmqctl import_definitions` of 3.10 has no vhost option and the HTTP API is
//! not enabled here), runs `logfence consume --no-declare` on it, then a `consume` that
//! declares, and deletes the vhost at the end, also when it fails.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use logfence::amqp::topology::{QueueType, Topology, DLX};
use logfence::config::Limits;
use logfence::pipeline::Pipeline;
use serde_json::Value;

use super::super::broker::{rabbitmqctl_command, sink_lines, url, wait_until, Rabbit, TS};
use super::{json_file, missing_tool, yaml_documents};

const DEFINITIONS: &str = "deploy/rabbitmq/definitions.json";

/// The queue settings the manifests give logfence (deploy/k8s/configmap.yaml).
fn configured_topology() -> Topology {
    let docs = yaml_documents("deploy/k8s/configmap.yaml");
    let data = &docs[0]["data"];
    let queue = data["LOGFENCE_QUEUE"].as_str().expect("LOGFENCE_QUEUE");
    let queue_type = match data["LOGFENCE_QUEUE_TYPE"].as_str() {
        None | Some("quorum") => QueueType::Quorum,
        Some("classic") => QueueType::Classic,
        Some(other) => panic!("LOGFENCE_QUEUE_TYPE {other}"),
    };
    let max: u32 = data["LOGFENCE_MAX_DELIVERIES"]
        .as_str()
        .map_or(5, |m| m.parse().expect("a number"));
    Topology::new(queue, queue_type, max).expect("a valid queue name")
}

/// Queue arguments as the definitions format writes them.
fn as_json(args: &FieldTable) -> Value {
    let map: serde_json::Map<String, Value> = args
        .inner()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes())),
                AMQPValue::LongLongInt(i) => Value::from(*i),
                other => panic!("{k}: an argument type the test does not know: {other:?}"),
            };
            (k.to_string(), v)
        })
        .collect();
    Value::Object(map)
}

fn find<'a>(defs: &'a Value, section: &str, name: &str) -> &'a Value {
    defs[section]
        .as_array()
        .expect("a section")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{DEFINITIONS}: no {section} entry {name}"))
}

#[test]
fn definitions_declare_exactly_what_consume_declares() {
    let defs = json_file(DEFINITIONS);
    let t = configured_topology();
    let queue = find(&defs, "queues", &t.queue);
    assert_eq!(queue["durable"], true);
    assert_eq!(queue["auto_delete"], false);
    assert_eq!(
        queue["arguments"],
        as_json(&t.queue_arguments()),
        "{}",
        t.queue
    );
    let dead = find(&defs, "queues", &t.dead_queue());
    assert_eq!(dead["durable"], true);
    assert_eq!(
        dead["arguments"],
        as_json(&t.dead_queue_arguments()),
        "{}: any other argument would make logfence's declare fail with 406; caps go in a policy",
        t.dead_queue()
    );
    let dlx = find(&defs, "exchanges", DLX);
    assert_eq!(
        (&dlx["type"], &dlx["durable"]),
        (&"direct".into(), &true.into())
    );
    let bindings = defs["bindings"].as_array().expect("bindings");
    assert!(bindings.iter().any(|b| b["source"] == DLX
        && b["destination"] == t.dead_queue().as_str()
        && b["destination_type"] == "queue"
        && b["routing_key"] == t.queue.as_str()));

    // The dead-letter queue's cap is a policy that matches it and nothing of logfence's else.
    let capped: Vec<&Value> = defs["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter(|p| {
            let re = regex::Regex::new(p["pattern"].as_str().expect("pattern")).expect("a regex");
            assert!(
                !re.is_match(&t.queue),
                "a policy would override the work queue's arguments"
            );
            re.is_match(&t.dead_queue())
        })
        .collect();
    assert_eq!(capped.len(), 1, "one policy caps {}", t.dead_queue());
    let cap = &capped[0]["definition"];
    assert!(
        cap["max-length"].as_u64().is_some_and(|n| n > 0),
        "a max-length"
    );
    assert_eq!(
        cap["overflow"], "reject-publish",
        "a full DLQ refuses, it does not drop"
    );
    // A dead-letter queue declared before it had a delivery limit of its own (which logfence
    // accepts as it is) gets the same one from the policy: RabbitMQ 4.0-4.2 would otherwise
    // apply a default of 20 to it, and drop messages listed more often than that.
    assert_eq!(
        cap["delivery-limit"].as_i64(),
        Some(logfence::amqp::topology::DEAD_DELIVERY_LIMIT),
        "the policy's delivery-limit is the dead-letter queue's own"
    );
}

/// The test broker's `rabbitmqctl` (see [`rabbitmqctl_command`]); panics, saying how to get
/// it, where it is missing (its test carries the `logfence_skip_tools` opt-out, see build.rs).
fn rabbitmqctl(args: &[&str]) -> String {
    let out = rabbitmqctl_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => missing_tool(
            "rabbitmqctl",
            &format!("{e}; scripts/broker.sh installs rabbitmq-server, which has it"),
        ),
    };
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A vhost of the test's own, deleted (with everything in it) when dropped.
struct ScratchVhost {
    name: String,
}

impl ScratchVhost {
    fn create() -> ScratchVhost {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("logfence-test-deploy-{}-{nanos}", std::process::id());
        rabbitmqctl(&["add_vhost", &name]);
        let vhost = ScratchVhost { name };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
        vhost
    }

    /// The test broker's URL with this vhost (its name needs no percent-encoding).
    fn url(&self) -> String {
        let base = url();
        let (server, _) = base.rsplit_once('/').expect("an AMQP URL with a vhost");
        format!("{server}/{}", self.name)
    }
}

impl Drop for ScratchVhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl_command()
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// A copy of the definitions with every vhost renamed to `vhost`.
fn definitions_for(vhost: &str) -> Value {
    fn rename(v: &mut Value, vhost: &str) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if k == "vhost" {
                        *child = Value::from(vhost);
                    } else {
                        rename(child, vhost);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| rename(i, vhost)),
            _ => {}
        }
    }
    let mut defs = json_file(DEFINITIONS);
    rename(&mut defs, vhost);
    for v in defs["vhosts"].as_array_mut().expect("vhosts") {
        v["name"] = Value::from(vhost);
    }
    defs
}

/// The test's own connection to `url`, in confirm mode.
fn rabbit_at(url: &str) -> Rabbit {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (conn, ch) = rt.block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("connect to the scratch vhost");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        (conn, ch)
    });
    Rabbit {
        rt,
        _conn: conn,
        ch,
    }
}

/// Whether the exchange and both queues exist (passive declares, each on a fresh channel:
/// a failed one closes its channel).
fn topology_exists(rabbit: &Rabbit, t: &Topology) -> bool {
    rabbit.rt.block_on(async {
        let Ok(c) = rabbit._conn.create_channel().await else {
            return false;
        };
        let passive_ex = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        if c.exchange_declare(
            DLX.into(),
            ExchangeKind::Direct,
            passive_ex,
            FieldTable::default(),
        )
        .await
        .is_err()
        {
            return false;
        }
        for q in [t.queue.clone(), t.dead_queue()] {
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            if c.queue_declare(q.as_str().into(), passive, FieldTable::default())
                .await
                .is_err()
            {
                return false;
            }
        }
        let _ = c.close(200, "checked".into()).await;
        true
    })
}

/// `logfence consume` on the scratch vhost, writing to a file; killed if still running
/// when dropped.
struct Consumer {
    child: Child,
    stderr_path: std::path::PathBuf,
}

impl Consumer {
    fn spawn(url: &str, queue: &str, sink: &Path, dir: &Path, extra: &[&str]) -> Consumer {
        let stderr_path = dir.join(format!("stderr-{}", sink_name(sink)));
        let stderr = File::create(&stderr_path).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_logfence"))
            .arg("consume")
            .args(["--queue", queue])
            .arg("--sink")
            .arg(format!("file:{}", sink.display()))
            .arg("--state-dir")
            .arg(dir)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .env("AMQP_URL", url)
            .env_remove("FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn logfence consume");
        Consumer { child, stderr_path }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then the exit status (at most `limit` later).
    fn terminate(mut self, limit: Duration) -> Option<ExitStatus> {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn sink_name(sink: &Path) -> String {
    sink.file_name()
        .map_or("sink".into(), |n| n.to_string_lossy().into_owned())
}

fn record(msg: &str, args: Value, style: &str) -> Vec<u8> {
    serde_json::json!({"msg": msg, "args": args, "style": style, "level": "info",
                       "logger": "deploy", "ts": TS})
    .to_string()
    .into_bytes()
}

/// Waits until `sink` holds `n` lines; on timeout, fails with the consumer's stderr.
fn wait_for_lines(sink: &Path, n: usize, consumer: &mut Consumer) -> Vec<String> {
    let ok = wait_until(Duration::from_secs(60), || {
        sink_lines(sink).len() >= n || consumer.exited().is_some()
    });
    let lines = sink_lines(sink);
    assert!(
        ok && lines.len() == n,
        "expected {n} lines, got {lines:?}; consumer {:?}:\n{}",
        consumer.exited(),
        consumer.stderr()
    );
    lines
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
#[cfg_attr(
    all(logfence_skip_tools, not(logfence_skip_broker)),
    ignore = "LOGFENCE_SKIP_TOOL_TESTS is set"
)]
fn definitions_load_into_the_broker_and_consume_accepts_them_with_and_without_declaring() {
    // A missing broker fails here, saying so, before rabbitmqctl is asked about it.
    let _default_vhost = Rabbit::connect();
    let vhost = ScratchVhost::create();
    let t = configured_topology();
    let dir = tempfile::tempdir().expect("tempdir");
    // A file, not stdin (the Erlang of RabbitMQ 4.x cannot read a pipe there), under /tmp
    // (which scripts/broker.sh shares with a broker's chroot), readable by the `rabbitmq`
    // user that rabbitmqctl runs as.
    let defs_path = dir.path().join("definitions.json");
    std::fs::write(&defs_path, definitions_for(&vhost.name).to_string()).expect("write copy");
    for (path, mode) in [(dir.path(), 0o755), (defs_path.as_path(), 0o644)] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    rabbitmqctl(&[
        "import_definitions",
        defs_path.to_str().expect("utf-8 path"),
    ]);
    let vurl = vhost.url();
    let rabbit = rabbit_at(&vurl);
    // 3.10 imports asynchronously: wait until the topology is there.
    assert!(
        wait_until(Duration::from_secs(60), || topology_exists(&rabbit, &t)),
        "the imported topology never appeared in {}",
        vhost.name
    );
    // The cap applies to the dead-letter queue, and no policy to the work queue.
    let policies = || {
        let out = rabbitmqctl(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "-p",
            &vhost.name,
            "name",
            "policy",
        ]);
        out.lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(q, p)| (q.to_string(), p.trim().to_string()))
            .collect::<BTreeMap<String, String>>()
    };
    let wanted = BTreeMap::from([
        (t.queue.clone(), String::new()),
        (t.dead_queue(), "logfence-dlq-cap".to_string()),
    ]);
    let mut applied = BTreeMap::new();
    assert!(
        wait_until(Duration::from_secs(60), || {
            applied = policies();
            applied == wanted
        }),
        "policies per queue: {applied:?}"
    );

    // 1. --no-declare: the definitions are all there is.
    let pipeline =
        Pipeline::new(Limits::default(), logfence::line::DEFAULT_LINE_FORMAT).expect("pipeline");
    let benign = record(
        "user %s logged in",
        serde_json::json!(["deploy-benign"]),
        "%",
    );
    let poison = record("{:>2400000000}", serde_json::json!(["x"]), "{");
    let sink = dir.path().join("no-declare.log");
    let mut consumer = Consumer::spawn(&vurl, &t.queue, &sink, dir.path(), &["--no-declare"]);
    rabbit.publish(&t.queue, &[benign.clone(), poison.clone()]);
    let lines = wait_for_lines(&sink, 2, &mut consumer);
    for body in [&benign, &poison] {
        let expected = pipeline
            .process_at(body, chrono::Utc::now())
            .line
            .expect("a line");
        assert!(lines.contains(&expected), "{expected:?} not in {lines:?}");
    }
    assert!(lines
        .iter()
        .any(|l| l.contains("logfence rejected: width-too-large")));
    assert!(
        wait_until(Duration::from_secs(30), || rabbit.ready(&t.dead_queue())
            == 1),
        "the poison record's copy in {}: {}",
        t.dead_queue(),
        consumer.stderr()
    );
    let copies = rabbit.take_all(&t.dead_queue());
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].0, poison, "the copy keeps the body byte for byte");
    assert_eq!(
        copies[0].1.inner().get("x-logfence-rule"),
        Some(&AMQPValue::LongString("width-too-large".into()))
    );
    let status = consumer.terminate(Duration::from_secs(30));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "clean exit after SIGTERM"
    );

    // 2. Declaring: logfence's own declare agrees with the imported topology (a mismatch
    // would exit 78 before consuming anything).
    let sink = dir.path().join("declare.log");
    let mut consumer = Consumer::spawn(&vurl, &t.queue, &sink, dir.path(), &[]);
    let again = record("{} rotated", serde_json::json!(["deploy-declared"]), "{");
    rabbit.publish(&t.queue, std::slice::from_ref(&again));
    let lines = wait_for_lines(&sink, 1, &mut consumer);
    let expected = pipeline
        .process_at(&again, chrono::Utc::now())
        .line
        .expect("a line");
    assert_eq!(lines, [expected]);
    let stderr = consumer.stderr();
    let status = consumer.terminate(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stderr}");
    assert!(!stderr.contains("other arguments"), "{stderr}");
    drop(rabbit);
    drop(vhost);
}
