#!/usr/bin/env bash
# Coverage-guided fuzzing of the frontends and the fuse pipeline with
# libFuzzer (libfuzzer-sys), on stable Rust: the fuzz crate (fuzz/) is built
# with SanitizerCoverage flags, debug assertions and overflow checks.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]
#
# Targets: onnx_import, safetensors_checkpoint, fuse_pair (default: all),
# 60 s each by default. Seeds come from tests/fuzz_seeds.rs (valid inputs,
# written to fuzz/seeds/); the growing corpus is kept in fuzz/corpus/ and
# anything that crashes, leaks, times out (10 s) or allocates more than
# 512 MB at once is saved in fuzz/artifacts/TARGET/ and fails the script.
# Replay one: fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
secs="${1:-60}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(onnx_import safetensors_checkpoint fuse_pair)
triple="$(rustc -vV | sed -n 's/^host: //p')"

echo "fuzz: writing seeds (tests/fuzz_seeds.rs)" >&2
rm -rf fuzz/seeds
# --release: the profile the tests (scripts/test.sh) already built.
FUSEC_FUZZ_SEEDS="$root/fuzz/seeds" cargo test --release --locked --quiet --test fuzz_seeds >&2

echo "fuzz: building instrumented targets" >&2
# --target keeps the flags off build scripts and proc macros.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing" \
  cargo build --locked --release --manifest-path fuzz/Cargo.toml --target "$triple" --bins >&2

status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t.log"
  echo "fuzz: $t for ${secs}s" >&2
  if ! "fuzz/target/$triple/release/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
      -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    status=1
    echo "fuzz: $t FAILED, see $log and fuzz/artifacts/$t/" >&2
    tail -n 30 "$log" >&2
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)"
  echo "fuzz: $t: ${runs:-0} executions, ${cov:-cov: ?}, corpus $(ls "fuzz/corpus/$t" | wc -l) files" >&2
done
exit "$status"
