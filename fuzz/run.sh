#!/usr/bin/env bash
# Run the atheris fuzz targets, each for N seconds, and summarise executions and findings.
#
#   fuzz/run.sh                 every target, 60 s each
#   fuzz/run.sh 300             every target, 300 s each
#   fuzz/run.sh 60 framer urc   only these targets
#   FUZZ_TAG=a fuzz/run.sh ...  a separate work directory and log (parallel workers of one target)
#
# New interesting inputs go to fuzz/.work/<target>/ (not the seed corpus); crashes, leaks and
# timeouts are written as fuzz/findings/<target>-crash-<sha1> (replay one with
# `.venv/bin/python fuzz/fuzz_<target>.py --replay FILE`). Without atheris the targets only replay
# their corpus once. Exit status: 1 if any target had a finding.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

secs=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(framer urc socks5 config)
py=${PYTHON:-.venv/bin/python}
# a per-input limit that catches hangs, and an RSS limit that catches unbounded buffering
timeout=${FUZZ_TIMEOUT:-10}
rss=${FUZZ_RSS_MB:-1024}

if ! "$py" -c 'import atheris' 2>/dev/null; then
  echo "atheris is not installed ($py -m pip install atheris); replaying the seed corpora only"
  rc=0
  for t in "${targets[@]}"; do
    "$py" "fuzz/fuzz_$t.py" --replay "fuzz/corpus/$t" || rc=1
  done
  exit $rc
fi

mkdir -p fuzz/findings
rc=0
summary=()
for t in "${targets[@]}"; do
  work="fuzz/.work/$t${FUZZ_TAG:+-$FUZZ_TAG}"
  log="$work.log"
  mkdir -p "$work"
  echo "== $t${FUZZ_TAG:+ ($FUZZ_TAG)}: ${secs}s, max_len ${FUZZ_MAX_LEN:-8192}"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  start=$(date +%s)
  "$py" "fuzz/fuzz_$t.py" "$work" "fuzz/corpus/$t" "${dict[@]}" \
    -max_total_time="$secs" -timeout="$timeout" -rss_limit_mb="$rss" -max_len="${FUZZ_MAX_LEN:-8192}" \
    -artifact_prefix="fuzz/findings/$t-" -print_final_stats=1 </dev/null >"$log" 2>&1
  status=$?
  took=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  found=$(grep -c -E '^(==[0-9]+== ERROR|=== Uncaught Python exception|.*Test unit written to)' "$log")
  if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then
    rc=1
    echo "   FINDING (exit $status); see $log:"
    grep -E -A25 'Uncaught Python exception|ERROR: libFuzzer' "$log" | head -40
    grep -E 'Test unit written to' "$log"
  fi
  line="$t: ${execs:-?} executions in ${took}s (${rate:-?}/s), ${cov:-cov: ?} edges, exit $status"
  echo "   $line"
  summary+=("$line")
done
echo "== summary"
printf '   %s\n' "${summary[@]}"
exit $rc
