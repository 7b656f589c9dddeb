//! The Python handler, `logfence-handler` (clients/python): its pytest suite run by this
//! integration binary, so the README's one test command runs it too. A virtual environment
//! under target/ (scripts/pyenv.sh) gets the package installed with its test extras, then
//! pytest runs clients/python/tests against the real broker and this build's `logfence`
//! (`LOGFENCE_BIN`, `LOGFENCE_TEST_AMQP_URL`). Without python3, its venv module or PyPI the
//! test fails and says which; without a broker it fails naming `scripts/broker.sh`, as every
//! broker test does (`LOGFENCE_SKIP_BROKER_TESTS=1` shows it as ignored instead).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::broker::{url, Rabbit, URL_VAR};

/// Far above the suite's own waits (it takes well under two minutes): only a hang reaches it.
const PYTEST_LIMIT: Duration = Duration::from_secs(600);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// target/py-venv: beside the test binaries' own scratch directory.
fn venv_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("py-venv")
}

/// The venv's python, the package installed (again only when it changed).
fn prepared_python() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("scripts/pyenv.sh"))
        .arg(venv_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash scripts/pyenv.sh: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python handler's tests could not get a Python environment \
         (python3 >= 3.9 with venv, and pip's access to PyPI for pika and pytest, are needed):\n{stderr}"
    );
    let python = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        Path::new(&python).exists(),
        "scripts/pyenv.sh printed {python:?}, which does not exist\n{stderr}"
    );
    PathBuf::from(python)
}

#[test]
#[cfg_attr(logfence_skip_broker, ignore = "LOGFENCE_SKIP_BROKER_TESTS is set")]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
fn python_handler_pytest_suite_passes_against_the_real_broker_and_binary() {
    let _rabbit = Rabbit::connect();
    let python = prepared_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("pytest.log");
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pytest",
        "-q",
        "-rA",
        "--show-capture=stdout",
        "--durations=0",
    ])
    .args(["-p", "no:cacheprovider"])
    .arg(repo().join("clients/python/tests"))
    .current_dir(repo().join("clients/python"))
    .env("LOGFENCE_BIN", env!("CARGO_BIN_EXE_logfence"))
    .env(URL_VAR, url())
    .env("PYTHONDONTWRITEBYTECODE", "1")
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(&log).expect("log file"))
    .stderr(Stdio::from(
        std::fs::File::options()
            .append(true)
            .open(&log)
            .expect("log file"),
    ));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for pytest") {
            break Some(status);
        }
        if started.elapsed() > PYTEST_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    println!("{output}");
    let status = status.unwrap_or_else(|| {
        panic!("pytest still running after {PYTEST_LIMIT:?}; its output:\n{output}")
    });
    assert!(
        status.success(),
        "pytest clients/python/tests failed ({status}):\n{output}"
    );
    assert!(output.contains(" passed"), "pytest ran no test:\n{output}");
}
