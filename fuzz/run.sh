#!/usr/bin/env bash
# Coverage-guided fuzzing of the C++ core with libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer, for a bounded time: the log-mel frontend
# (fuzz/fuzz_online_log_mel.cc), the loudness meter (fuzz/fuzz_loudness_meter.cc) or the float
# arrays read back from JSON (fuzz/fuzz_json_numbers.cc).
#
#   fuzz/run.sh [SECONDS] [TARGET]   SECONDS default 60; TARGET online_log_mel (default),
#                                    loudness_meter or json_numbers; exits non-zero on a
#                                    finding (crash, failed check, sanitizer report, leak,
#                                    timeout of one input, memory blow-up)
#
# Needs clang and its libFuzzer + sanitizer runtimes (Debian/Ubuntu: apt-get install clang
# libclang-rt-dev; the runtimes are only a Recommends of clang there). The corpus grows in
# build/fuzz/TARGET/corpus between runs; a finding is saved in build/fuzz/TARGET/artifacts/ and
# replays with
#   build/fuzz/TARGET/fuzz_TARGET build/fuzz/TARGET/artifacts/crash-...
set -euo pipefail
seconds="${1:-60}"
target="${2:-online_log_mel}"
root="$(cd "$(dirname "$0")/.." && pwd)"
case "$target" in
  online_log_mel) sources=("$root/csrc/fft.cc" "$root/csrc/mel_filterbank.cc"
                           "$root/csrc/log_mel_options.cc" "$root/csrc/online_log_mel.cc"
                           "$root/csrc/frame_ring.cc" "$root/csrc/window_level.cc"
                           "$root/csrc/tonal_peaks.cc") ;;
  loudness_meter) sources=("$root/csrc/loudness_meter.cc") ;;
  json_numbers) sources=("$root/csrc/json_numbers.cc") ;;
  *) echo "fuzz/run.sh: unknown target $target (online_log_mel, loudness_meter or" \
       "json_numbers)" >&2; exit 2 ;;
esac
out="${FUZZ_BUILD_DIR:-$root/build/fuzz}/$target"
cxx="${FUZZ_CXX:-clang++}"
if ! command -v "$cxx" > /dev/null; then
  echo "fuzz/run.sh: $cxx not found; install clang (apt-get install clang)" >&2
  exit 2
fi
mkdir -p "$out/corpus" "$out/artifacts"
# -ffp-contract=off as in CMakeLists.txt: the one-frame and four-frame paths agree bitwise.
"$cxx" -std=c++17 -O1 -g -fno-omit-frame-pointer -ffp-contract=off \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I"$root/csrc" -I"$root/fuzz" "$root/fuzz/fuzz_$target.cc" "${sources[@]}" \
  -o "$out/fuzz_$target" || {
  echo "fuzz/run.sh: build failed; a missing libclang_rt.fuzzer or libclang_rt.asan means the" \
    "runtimes are not installed (apt-get install libclang-rt-dev)" >&2
  exit 2
}
echo "fuzz/run.sh: fuzzing $target for ${seconds} s" >&2
# Stacks with file:line from binutils' addr2line where llvm-symbolizer is not installed (clang
# does not pull it in with --no-install-recommends).
symbolizer=""
if ! command -v llvm-symbolizer > /dev/null && command -v addr2line > /dev/null; then
  symbolizer="external_symbolizer_path=$(command -v addr2line)"
fi
# a target's dictionary of tokens, where it has one (fuzz/TARGET.dict)
dict=()
if [ -f "$root/fuzz/$target.dict" ]; then dict=("-dict=$root/fuzz/$target.dict"); fi
status=0
ASAN_OPTIONS="$symbolizer" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${symbolizer:+:$symbolizer}" \
"$out/fuzz_$target" "${dict[@]}" -max_total_time="$seconds" -max_len=16384 -len_control=0 \
  -timeout=30 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/artifacts/" "$out/corpus" \
  || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzz/run.sh: FINDING (exit $status); reproducer(s), newest last:" >&2
  ls -1tr "$out"/artifacts/* 2> /dev/null | sed 's/^/  /' >&2 || true
  echo "fuzz/run.sh: replay with $out/fuzz_$target <reproducer>" >&2
  exit "$status"
fi
