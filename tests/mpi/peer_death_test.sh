#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs dynasparse_mpi_tests --peer-death (tests/mpi/peer_death.cpp), whose rank 1 dies after
# the first forward pass, and checks that the job ends on its own within a bound, with a
# non-zero status, and that every error a surviving rank prints names rank 1. Exit 0 when all
# holds.
#   peer_death_test.sh <ranks> <exit|kill> <survivors must report: yes|no> <program> <mpirun command...>
set -u
ranks=$1 how=$2 must_report=$3 program=$4
shift 4
limit=30       # seconds; a hang is a failure, not a wait for CTest's own timeout
timeout_ms=2000  # the communicator's: long enough for oversubscribed ranks to keep up

out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$(date +%s%N)
timeout -k 5 "$limit" "$@" "$program" --peer-death "$how" "$timeout_ms" >"$out" 2>&1
status=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

echo "--- job output (exit status $status after $elapsed_ms ms)"
cat "$out"
echo "---"
if [ "$status" -eq 124 ] || [ "$elapsed_ms" -ge $((limit * 1000)) ]; then
  fail "the job did not end within $limit s (it hung)"
elif [ "$status" -eq 0 ]; then
  fail "the job exited with status 0 although rank 1 died"
fi
grep -q "^rank 1: first pass done" "$out" || fail "rank 1 did not get through the first pass (nothing died mid-run)"
grep -q "finished without rank 1" "$out" && fail "a rank finished its passes without rank 1"
# A survivor names rank 1 as the one that does not answer, or quotes the survivor that did.
names_peer='rank(\(s\))? 1 .*\(not responding: dead or stalled\)'
for ((r = 0; r < ranks; ++r)); do
  [ "$r" -eq 1 ] && continue
  line=$(grep "^rank $r of $ranks: dynasparse" "$out")
  if [ -z "$line" ]; then
    [ "$must_report" = yes ] && fail "rank $r reported no error"
  elif ! grep -Eq "$names_peer" <<<"$line"; then
    fail "rank $r's error does not name rank 1 as dead: $line"
  fi
done
if [ "$failures" -eq 0 ]; then echo "PASS: the job ended in $elapsed_ms ms with status $status"; fi
[ "$failures" -eq 0 ]
