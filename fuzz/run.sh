#!/usr/bin/env bash
# Coverage-guided fuzzing of the C++ log-mel frontend (fuzz/fuzz_online_log_mel.cc) with
# libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer, for a bounded time.
#
#   fuzz/run.sh [SECONDS]     default 60; exits non-zero on a finding (crash, failed check,
#                             sanitizer report, leak, timeout of one input, memory blow-up)
#
# Needs clang with libFuzzer (Debian/Ubuntu: apt-get install clang). The corpus grows in
# build/fuzz/corpus between runs; a finding is saved in build/fuzz/artifacts/ and replays with
#   build/fuzz/fuzz_online_log_mel build/fuzz/artifacts/crash-...
set -euo pipefail
seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${FUZZ_BUILD_DIR:-$root/build/fuzz}"
cxx="${FUZZ_CXX:-clang++}"
if ! command -v "$cxx" > /dev/null; then
  echo "fuzz/run.sh: $cxx not found; install clang (apt-get install clang)" >&2
  exit 2
fi
mkdir -p "$out/corpus" "$out/artifacts"
# -ffp-contract=off as in CMakeLists.txt: the one-frame and four-frame paths agree bitwise.
"$cxx" -std=c++17 -O1 -g -fno-omit-frame-pointer -ffp-contract=off \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I"$root/csrc" "$root/fuzz/fuzz_online_log_mel.cc" \
  "$root/csrc/fft.cc" "$root/csrc/mel_filterbank.cc" "$root/csrc/log_mel_options.cc" \
  "$root/csrc/online_log_mel.cc" "$root/csrc/frame_ring.cc" \
  -o "$out/fuzz_online_log_mel"
echo "fuzz/run.sh: fuzzing OnlineLogMel for ${seconds} s" >&2
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
"$out/fuzz_online_log_mel" -max_total_time="$seconds" -max_len=16384 -len_control=0 -timeout=30 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/artifacts/" "$out/corpus"
