#!/usr/bin/env bash
# run_fuzz.sh: builds the libFuzzer targets of this folder with Debian's clang-15 (libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer; each target compiles only the parser it fuzzes and what that needs), seeds each from
# the project's own files, and runs each for SECONDS. Any crash, sanitizer report or leak fails the run; libFuzzer
# writes the input that caused it into OUT_DIR (crash-*), to be added as a regression test. Prints the executions.
# The targets build, then run, as many at a time as there are cores (ctest runs this test alone).
# Usage: tests/fuzz/run_fuzz.sh OUT_DIR [SECONDS]     (apt-get install clang-15 libclang-common-15-dev)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:?usage: run_fuzz.sh OUT_DIR [SECONDS]}"
seconds="${2:-20}"
clang=$(command -v clang++-15 || true)
[ -n "$clang" ] || { echo "run_fuzz.sh: clang++-15 is missing: apt-get install clang-15 libclang-common-15-dev"; exit 77; }
mkdir -p "$out"
flags=(-std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$root")
at_once=$(nproc)
pids=()
build() {  # build NAME SOURCES-AND-LIBRARIES... in the background, waiting first while at_once builds run
  local name=$1
  shift
  if [ "${#pids[@]}" -ge "$at_once" ]; then
    wait "${pids[0]}" || { echo "run_fuzz.sh: a fuzz target failed to build"; exit 1; }
    pids=("${pids[@]:1}")
  fi
  "$clang" "${flags[@]}" "$@" -o "$out/$name" &
  pids+=($!)
}
core=("$root/backends/error.cpp" "$root/backends/dtype.cpp" "$root/backends/tensor.cpp")
build fuzz_safetensors "$root/tests/fuzz/fuzz_safetensors.cpp" "$root/io/safetensors.cpp" "${core[@]}"
build fuzz_image "$root/tests/fuzz/fuzz_image.cpp" "$root/io/image.cpp" "${core[@]}" -lpng -ljpeg
build fuzz_model_config "$root/tests/fuzz/fuzz_model_config.cpp" "$root/model/config.cpp" "${core[@]}"
build fuzz_run_config "$root/tests/fuzz/fuzz_run_config.cpp"
build fuzz_document "$root/tests/fuzz/fuzz_document.cpp" "$root/io/document.cpp" "${core[@]}"
read -r -a hdf5_flags <<< "$(pkg-config --cflags --libs hdf5-openmpi)"
build fuzz_checkpoint_meta "$root/tests/fuzz/fuzz_checkpoint_meta.cpp" "$root/io/checkpoint_meta.cpp" \
  "$root/io/hdf5.cpp" "${core[@]}" "${hdf5_flags[@]}"
for pid in "${pids[@]}"; do wait "$pid" || { echo "run_fuzz.sh: a fuzz target failed to build"; exit 1; }; done

# Seeds: what the project itself reads.
targets=(safetensors image model_config run_config document checkpoint_meta)
for target in "${targets[@]}"; do mkdir -p "$out/corpus_$target"; done
find "$root/tests/golden" -name '*.safetensors' -size -2M -exec cp {} "$out/corpus_safetensors/" \;
find "$root/tests/images" \( -name '*.png' -o -name '*.jpg' \) -size -1M -exec cp {} "$out/corpus_image/" \;
cp "$root"/configs/*.json "$root"/tests/data/*.json "$out/corpus_model_config/"
cp "$root"/tests/data/*.toml "$out/corpus_run_config/"
printf '%s' '[{"text": "A cat"}, {"image": "images/cat.png"}, {"text": "sits."}]' > "$out/corpus_document/interleaved"
printf '%s' '{"segments": [{"image": "a.jpg"}, {"text": "caption"}], "id": 7}' > "$out/corpus_document/object"
# Inputs that once failed (tests/fuzz/regressions/<target>_*) are replayed first, as part of the corpus.
for target in "${targets[@]}"; do
  find "$root/tests/fuzz/regressions" -name "${target}_*" -exec cp {} "$out/corpus_$target/" \;
done

fuzz() {  # fuzz TARGET: runs it for $seconds, says what came of it; non-zero on a crash, report or leak
  local target=$1 log="$out/fuzz_$1.log"
  if (cd "$out" && ASAN_OPTIONS=detect_leaks=1 "./fuzz_$target" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 "corpus_$target" > "$log" 2>&1); then
    runs=$(grep -o "stat::number_of_executed_units: *[0-9]*" "$log" | grep -o "[0-9]*$" || echo "?")
    echo "fuzz_$target: $runs executions in $seconds s, no crash"
  else
    echo "fuzz_$target: FAILED (see $log; the input is in $out/crash-* or leak-*)"
    tail -n 30 "$log"
    return 1
  fi
}
status=0
for ((first = 0; first < ${#targets[@]}; first += at_once)); do  # at_once targets at a time
  pids=()
  for target in "${targets[@]:first:at_once}"; do
    fuzz "$target" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
done
exit $status
