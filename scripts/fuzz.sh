#!/usr/bin/env bash
# Runs the cargo-fuzz targets of tests/fuzz for SECONDS each (default 60), one
# after another, and prints per target the executions, the coverage and the findings.
# Exits 1 when any target found a crash (its input is under tests/fuzz/artifacts/TARGET/),
# 2 on a setup or build failure.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]        # all targets when none is named
#
# Environment:
#   FUZZ_SANITIZER  address | none (default: address, cargo-fuzz's own)
#   FUZZ_JOBS       targets run side by side (default 1)
#   FUZZ_MAX_LEN    libFuzzer -max_len (default 8192)
#   CARGO_TARGET_DIR  honoured (default: cargo's)
#
# The toolchain is stable; cargo-fuzz needs -Z flags, so it runs with RUSTC_BOOTSTRAP=1.
# The code under test has no `unsafe` and allocates through jemalloc, which ASan does not
# see, so `FUZZ_SANITIZER=none` loses little and runs faster; either way a panic, an
# overflow (debug assertions are on) or a broken invariant (tests/fuzz/src/lib.rs) is the
# finding. Seeds are generated from fixtures/ into tests/fuzz/corpus/TARGET (not
# committed); the corpus a run grows stays there for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
all_targets=(record format_percent format_brace format_dollar detect line_escape)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi
sanitizer=${FUZZ_SANITIZER:-address}
jobs=${FUZZ_JOBS:-1}
max_len=${FUZZ_MAX_LEN:-8192}
fuzz_dir=tests/fuzz
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || { echo "cannot install cargo-fuzz"; exit 2; }
fi

echo "== seeds from fixtures/"
python3 - "$fuzz_dir/corpus" "$max_len" <<'PY' || exit 2
"""Per-target seed files from fixtures/: the format cases, the poison and the realistic
records, each in the input shape its target reads (see tests/fuzz/src/lib.rs)."""
import hashlib, json, pathlib, sys

sys.set_int_max_str_digits(0)
out, max_len = pathlib.Path(sys.argv[1]), int(sys.argv[2])
seeds = {t: set() for t in
         ["record", "format_percent", "format_brace", "format_dollar", "detect", "line_escape"]}

def strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, list):
        for x in v:
            yield from strings(x)
    elif isinstance(v, dict):
        for k, x in v.items():
            yield k
            yield from strings(x)

def add_record(body: bytes):
    seeds["record"].add(body)
    try:
        rec = json.loads(body.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError):
        rec = None
    if not isinstance(rec, dict) or not isinstance(rec.get("msg"), str):
        text = body.decode("utf-8", "replace")
        seeds["detect"].add(text.encode())
        seeds["line_escape"].add(("\0info\0root\0" + text).encode())
        return
    msg = rec["msg"]
    target = {"%": "format_percent", "{": "format_brace", "$": "format_dollar"}.get(
        rec.get("style", "%"))
    if target and "args" in rec:
        seeds[target].add(msg.encode("utf-8", "replace") + b"\0" + json.dumps(rec["args"]).encode())
    others = [s for k in ("args", "fields") for s in strings(rec.get(k))]
    seeds["detect"].add("\0".join([msg] + others).encode("utf-8", "replace"))
    parts = [str(rec.get("ts", "")), str(rec.get("level", "info")),
             str(rec.get("logger", "root")), msg]
    seeds["line_escape"].add("\0".join(parts).encode("utf-8", "replace"))

for style, name in [("%", "percent"), ("{", "brace"), ("$", "dollar")]:
    for line in pathlib.Path(f"fixtures/format/{name}.json").read_text().splitlines():
        line = line.strip().rstrip(",")
        if not line.startswith("{"):
            continue
        case = json.loads(line)
        body = {"msg": case["msg"], "args": case["args"], "style": style}
        add_record(json.dumps(body).encode())
for d in ["fixtures/poison", "fixtures/realistic", "fixtures/fuzz"]:
    for p in sorted(pathlib.Path(d).glob("*")):
        if p.is_file() and p.suffix != ".md":
            if d == "fixtures/fuzz":
                # A saved crash seeds its own target again.
                target = p.name.rsplit("-", 1)[0]
                if target in seeds:
                    seeds[target].add(p.read_bytes())
            else:
                add_record(p.read_bytes())
for target, bodies in seeds.items():
    dest = out / target
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for b in bodies:
        if len(b) <= max_len:
            (dest / ("seed-" + hashlib.sha1(b).hexdigest())).write_bytes(b)
            n += 1
    print(f"{target}: {n} seeds")
PY

echo "== build (sanitizer: $sanitizer)"
build_start=$(date +%s)
cargo fuzz build --fuzz-dir "$fuzz_dir" -O --sanitizer "$sanitizer" || exit 2
echo "build took $(( $(date +%s) - build_start )) s"

mkdir -p "$fuzz_dir/logs"
run_target() {
    local t=$1 dict=()
    mkdir -p "$fuzz_dir/artifacts/$t"
    touch "$fuzz_dir/logs/$t.log.start"
    local d="$fuzz_dir/dicts/${t#format_}.dict"
    [ -f "$d" ] && dict=("-dict=$d")
    cargo fuzz run --fuzz-dir "$fuzz_dir" -O --sanitizer "$sanitizer" "$t" -- \
        -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" >"$fuzz_dir/logs/$t.log" 2>&1
}

pids=()
for t in "${targets[@]}"; do
    run_target "$t" &
    pids+=("$!")
    if [ "${#pids[@]}" -ge "$jobs" ]; then
        wait "${pids[0]}" || true
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || true; done

echo "== results ($seconds s per target)"
printf '%-15s %12s %9s %7s %7s %9s\n' target execs exec/s cov ft findings
crashed=0
for t in "${targets[@]}"; do
    log="$fuzz_dir/logs/$t.log"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    found=$(find "$fuzz_dir/artifacts/$t" -type f \
        \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) \
        -newer "$log.start" 2>/dev/null | wc -l || true)
    if grep -qE '^==[0-9]+== ERROR: libFuzzer|panicked at|SUMMARY: libFuzzer' "$log"; then
        found=$(( found > 0 ? found : 1 ))
    fi
    printf '%-15s %12s %9s %7s %7s %9s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
        "${ft:-?}" "$found"
    if [ "$found" -gt 0 ]; then
        crashed=1
        grep -m3 -E 'panicked at|ERROR: libFuzzer|Test unit written' "$log" | sed 's/^/    /'
    fi
done
exit "$crashed"
