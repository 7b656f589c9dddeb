//! `logfence check --ndjson` on a capture of 1,000,000 records of about 90 bytes, run as a
//! user runs it (the release binary, the report to /dev/null), hyperfine-style: a few runs,
//! the median. The baseline, measured in the same run because this machine is shared and
//! absolute times drift: the library's `Pipeline::process` over the same records on one
//! thread, in this process. The target is 300,000 records/s; the ratio says how much of
//! the machine's cores the audit turns into throughput.
//!
//! `LOGFENCE_AUDIT_N` sets the record count, `LOGFENCE_AUDIT_RUNS` the runs (default 5).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use logfence::config::Limits;
use logfence::line::DEFAULT_LINE_FORMAT;
use logfence::pipeline::Pipeline;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Benign records of the three styles, plain text, invalid UTF-8, and a few refusals:
/// about 90 bytes each.
fn records(n: usize) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let words = ["alice", "bob", "carol", "dave", "eve"];
    (0..n)
        .map(|_| {
            let w = words[rng.gen_range(0..words.len())];
            let l = rng.gen_range(0..20);
            match rng.gen_range(0..100) {
                0..=69 => format!(
                    r#"{{"msg":"user %s from %s after %d tries","args":["{w}","10.0.0.{}",{}],"logger":"app.{l}"}}"#,
                    rng.gen_range(0..256),
                    rng.gen_range(1..9)
                )
                .into_bytes(),
                70..=84 => format!(
                    r#"{{"msg":"{{}} took {{:.3f}}s","args":["GET /{w}",{:.4}],"style":"{{","logger":"http"}}"#,
                    rng.gen::<f64>()
                )
                .into_bytes(),
                85..=92 => format!("plain text from {w}: job {} finished, 100% done, no args at all", rng.gen::<u32>())
                    .into_bytes(),
                93..=95 => {
                    let mut b = format!("bytes from {w} that are not UTF-8: ").into_bytes();
                    b.extend([0xff, 0xfe, b' ', 0xc3]);
                    b.extend(format!(" and then some more text {}", rng.gen::<u16>()).into_bytes());
                    b
                }
                96..=98 => format!(r#"{{"msg":"count %d of %s items","args":["{w}"],"logger":"app.{l}"}}"#)
                    .into_bytes(),
                _ => format!(r#"{{"msg":"{{0.__class__}} from {w} attribute","args":[1],"style":"{{"}}"#)
                    .into_bytes(),
            }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_usize("LOGFENCE_AUDIT_N", 1_000_000);
    let runs = env_usize("LOGFENCE_AUDIT_RUNS", 5).max(1);
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("audit-bench");
    let _ = std::fs::create_dir_all(&dir);
    let capture = dir.join(format!("capture-{n}.ndjson"));
    let records = records(n);
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(&capture).unwrap_or_else(|e| panic!("{e}")));
    for r in &records {
        let _ = file.write_all(r);
        let _ = file.write_all(b"\n");
    }
    let _ = file.flush();
    drop(file);
    let bytes = std::fs::metadata(&capture).map(|m| m.len()).unwrap_or(0);
    println!(
        "capture: {n} records, {bytes} bytes ({:.1} bytes a record), {}",
        bytes as f64 / n as f64,
        capture.display()
    );

    let pipeline = Pipeline::new(Limits::default(), DEFAULT_LINE_FORMAT)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_isolation(true);
    let (mut audit, mut library) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_logfence"))
            .args(["check", "--ndjson"])
            .arg(&capture)
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("{e}"));
        let secs = started.elapsed().as_secs_f64();
        assert!(
            status.code().is_some_and(|c| c <= 1),
            "audit failed: {status}"
        );
        audit.push(n as f64 / secs);

        let started = Instant::now();
        let mut ok = 0usize;
        for r in &records {
            ok += usize::from(pipeline.process(r).verdict == logfence::pipeline::Verdict::Ok);
        }
        let secs = started.elapsed().as_secs_f64();
        std::hint::black_box(ok);
        library.push(n as f64 / secs);
        println!(
            "run {}: check --ndjson {:>9.0} records/s   library, one thread {:>9.0} records/s",
            run + 1,
            audit[run],
            library[run]
        );
    }
    let (a, l) = (median(audit), median(library));
    println!(
        "median: check --ndjson {a:.0} records/s ({:.1} MB/s); library on one thread {l:.0} records/s; ratio {:.2}; target >= 300000 records/s: {}",
        a * bytes as f64 / n as f64 / 1e6,
        a / l,
        if a >= 300_000.0 { "met" } else { "NOT met" }
    );
}
