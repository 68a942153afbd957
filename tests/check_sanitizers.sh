#!/usr/bin/env bash
# check_sanitizers.sh: builds kosmos with AddressSanitizer and UndefinedBehaviorSanitizer (-DKOSMOS_SANITIZE=ON,
# GCC; any undefined behaviour aborts) in BUILD_DIR, then
#   1. runs the test programs that do not start MPI (unit, op and io tests) with leak detection on;
#   2. runs the whole ctest suite (every MPI run included) with leak detection off: Open MPI and PMIx keep memory
#      until exit in plugins they unload, whose allocations LeakSanitizer can neither name nor suppress, and its
#      scan of their mappings takes a minute per process. Every other check (overflows, use after free, undefined
#      behaviour) stays on in every process.
# The one test left out is fuzz_targets, which builds its own sanitized programs with clang whatever this build is.
# Takes about an hour on 2 cores: not part of CI; run it before a release and after changes to parsing, memory or
# threading code. Usage: tests/check_sanitizers.sh [BUILD_DIR] [extra ctest arguments, e.g. -L mpi]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${1:-$root/build-sanitize}"
shift || true
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKOSMOS_SANITIZE=ON -DKOSMOS_CUDA=OFF \
  -DKOSMOS_ROCM=OFF -DKOSMOS_BUILD_BENCH=OFF "${launcher[@]}"
cmake --build "$build_dir" -j "$(nproc)"
# Every process the tests start (mpirun's ranks included) inherits these.
checks="abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0"
start=$(date +%s)
status=0
for program in kosmos_unit_tests kosmos_op_tests kosmos_io_tests; do
  ASAN_OPTIONS="$checks:detect_leaks=1" "$build_dir/tests/$program" --gtest_brief=1 > "$build_dir/$program.log" 2>&1 ||
    { status=$?; tail -n 40 "$build_dir/$program.log"; }
  echo "check_sanitizers.sh: $program with leak detection: $(grep -E 'PASSED|FAILED' "$build_dir/$program.log" | head -n 1)"
done
ASAN_OPTIONS="$checks:detect_leaks=0" ctest --test-dir "$build_dir" -j "$(nproc)" --timeout 1800 \
  --output-on-failure -E '^fuzz_targets$' "$@" || status=$?
echo "check_sanitizers.sh: exit $status after $(( $(date +%s) - start )) s"
exit $status
