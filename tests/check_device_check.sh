#!/usr/bin/env bash
# check_device_check.sh: bench/device_check.sh, the one script a GPU session runs, end to end on this machine, so that
# a mistake in it (a stage's flags, a comparison, the table's reading of the results) does not cost a GPU run. It runs
# from a stand-in bundle: the build's test binaries; `kosmos` behind a wrapper that runs every GPU stage on the CPU
# (the cuda backends become cpu, the kosmos1 preset tiny, 2048 positions 32); nvidia-smi a script that names a card
# and reports memory in use; and the PyTorch peer a script that writes one result line per mode, with the keys the
# peer writes, then a line cut off. Checked: every stage but the two below passes (the trainings and their
# comparisons, the resumes across backends, the profile and its fast paths, the steps and the op benchmarks); the op
# tests and the NCCL tests fail, since no CUDA case ran (gtest alone would pass them: its filter matched nothing, or
# the tests skipped); the table has the card's name, a row for each of our steps and each of the peer's modes and
# the card's ceilings as the peer measures them, and says that it left out the cut line; the combined step says which
# variants it combined; with the peer's eager mode out of memory (as on an H100), the compiled row stays and the table
# says why eager has none.
# Usage: check_device_check.sh KOSMOS OP_TESTS MPI_TESTS COMPARE_RUNS OUT_DIR (the build's binaries)
set -euo pipefail
kosmos=$(realpath "$1") op_tests=$(realpath "$2") mpi_tests=$(realpath "$3") compare_runs=$(realpath "$4") out=$5
root="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$out/bundle"
rm -rf "$out" && mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/peer" "$out/path"
cp "$root/bench/device_check.sh" "$bundle/device_check.sh"
ln -s "$op_tests" "$bundle/bin/kosmos_op_tests"
ln -s "$mpi_tests" "$bundle/bin/kosmos_mpi_tests"
ln -s "$compare_runs" "$bundle/bin/kosmos_compare_runs"
ln -s /usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3 "$bundle/lib/openmpi3"
ln -s /usr/lib/x86_64-linux-gnu/pmix2/lib/pmix "$bundle/lib/pmix"
cat > "$bundle/bin/kosmos" << EOF
#!/usr/bin/env bash
args=()
for arg in "\$@"; do
  case "\$arg" in
    cuda | cuda-owngemm | cuda-wmma | cuda-cudnn) args+=(cpu) ;;
    kosmos1) args+=(tiny) ;;
    2048) args+=(32) ;;
    *) args+=("\$arg") ;;
  esac
done
exec "$kosmos" "\${args[@]}"
EOF
cat > "$out/path/nvidia-smi" << 'EOF'
#!/bin/sh
case "$*" in
  *memory.used*) echo 2048 ;;
  *name*) echo "stand-in card" ;;
  *) echo "nvidia-smi stand-in" ;;
esac
EOF
cat > "$bundle/peer/torch_kosmos.py" << 'EOF'
import json, os, sys
if "eager" in sys.argv and os.environ.get("PEER_OUT_OF_MEMORY"):  # as on an H100, where eager's 86 GiB do not fit
    sys.exit("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.95 GiB (stand-in)")
with open(os.path.join(os.environ["OUT"], "anchor.jsonl"), "a") as anchor:
    for mode in sys.argv[1:]:
        line = json.dumps(dict(label="ceilings", gpu="stand-in card", bf16_gemm_tflops=700.0, d2d_tb_s=3.9)
                          if mode == "ceilings" else
                          dict(label=mode, step_s_median=2.0, tokens_per_s=8192.0, tflops=100.0, peak_gib=50.0))
        print(line)
        anchor.write(line + "\n")
    anchor.write('{"label": "cut off')  # as a peer stopped by the stage's limit while writing may leave
EOF
chmod +x "$bundle/bin/kosmos" "$out/path/nvidia-smi"

# The GPUs hidden, so that the CUDA cases have no device on a machine that has one too. Two calls, as on a GPU
# machine kept warm between them: the first with a deadline that leaves most stages to the second.
run_check() {  # run_check LOG [DEADLINE_S [WORK_DIR]]
  PATH="$out/path:$PATH" CUDA_VISIBLE_DEVICES= HIP_VISIBLE_DEVICES= WORK_DIR="${3:-$out/logs}" DEADLINE_S="${2:-560}" \
    bash "$bundle/device_check.sh" "$out/packed" > "$1" 2>&1 ||
    { cat "$1"; echo "device_check.sh itself failed"; exit 1; }
}
# A call that measures one change runs the stages it names alone.
STAGES="machine tiny_cpu" run_check "$out/named_stages.log" 560 "$out/named_stages"
run_check "$out/first_call.log" 20
# The peer's eager mode out of memory: the compiled row stays, and the table says why eager has none.
PEER_OUT_OF_MEMORY=1 STAGES="peer_compile peer_eager" run_check "$out/eager_oom.log" 560 "$out/eager_oom"
run_check "$out/run.log"

failed=0
[ "$(awk '{print $1}' "$out/named_stages/summary.txt" | tr '\n' ' ')" = "machine tiny_cpu " ] ||
  { echo "STAGES=\"machine tiny_cpu\" ran other stages too:"; cat "$out/named_stages/summary.txt"; failed=1; }
{ grep -qE '^pytorch compile +[0-9]' "$out/eager_oom.log" &&
  grep -q '^no row for pytorch eager: torch.OutOfMemoryError' "$out/eager_oom.log" &&
  grep -qE '^peer_eager +exit 1 ' "$out/eager_oom/summary.txt"; } ||
  { echo "with the peer's eager mode out of memory, the table lost the compiled row or did not say why:"
    sed -n '/^== table/,$p' "$out/eager_oom.log"; failed=1; }
# A stage's status: its last run's (a stage cut by the first call's deadline ran again in the second).
status_of() { awk -v name="$1" '$1 == name && $2 == "exit" {status = $3} END {print status}' "$out/logs/summary.txt"; }
grep -q '^== machine: finished by an earlier call' "$out/run.log" ||
  { echo "the second call ran the machine stage again (or the first did not run it)"; failed=1; }
grep -q '^== step_kosmos1_layer (limit' "$out/first_call.log" &&
  { echo "the first call ran every stage: its deadline of 20 s cut nothing"; failed=1; }
# A stage the first call's deadline skipped starts in the second.
left_over=$(awk '$2 == "skip" {print $1; exit}' "$out/first_call.log")
{ [ -n "$left_over" ] && grep -q "^== $left_over (limit" "$out/run.log"; } ||
  { echo "the second call did not run '$left_over', which the first call skipped"; failed=1; }
packed_logs=$(tar -tzf "$out/packed/logs.tar.gz")
for file in ./ops_cuda.log ./step_kosmos1_layer.log ./table.txt ./summary.txt; do
  grep -qxF "$file" <<< "$packed_logs" || { echo "the packed logs lack $file"; failed=1; }
done
grep -q '\.h5$' <<< "$packed_logs" && { echo "the packed logs carry checkpoints"; failed=1; }
cmp -s "$out/logs/summary.txt" "$out/packed/summary.txt" || { echo "the packed summary is not the last one"; failed=1; }
# A rebuilt bundle starts over, on a copy of the work folder: nothing counts as finished before.
cp -r "$out/logs" "$out/logs_rebuilt"
echo "# rebuilt" >> "$bundle/bin/kosmos"
run_check "$out/rebuilt.log" 16 "$out/logs_rebuilt"
{ grep -q '^== machine (limit' "$out/rebuilt.log" && ! grep -q 'finished by an earlier call' "$out/rebuilt.log"; } ||
  { echo "a rebuilt bundle took the earlier call's stages as finished"; failed=1; }
# A bundle that does not start here fails at once, saying why, with its start log among the packed files.
mkdir -p "$out/broken/bin"
cp "$root/bench/device_check.sh" "$out/broken/device_check.sh"
printf '#!/bin/sh\necho "error while loading shared libraries: libstand-in.so" >&2\nexit 127\n' \
  > "$out/broken/bin/kosmos"
chmod +x "$out/broken/bin/kosmos"
if WORK_DIR="$out/broken_logs" bash "$out/broken/device_check.sh" "$out/broken_packed" > "$out/broken.log" 2>&1; then
  echo "device_check.sh passed with a kosmos that does not start"; failed=1
fi
{ grep -q 'kosmos does not start on this machine' "$out/broken.log" &&
  grep -q 'libstand-in' "$out/broken_packed/start.log"; } ||
  { echo "the failed start is not reported:"; cat "$out/broken.log"; failed=1; }
for name in machine tiny_cpu tiny_cuda tiny_compare tiny_cuda_bf16 tiny_compare_bf16 step_kosmos1 peer_compile \
  peer_eager peer_ceilings resume_cpu_cuda resume_cuda_cpu profile_kosmos1 fast_paths step_kosmos1_tuned \
  step_kosmos1_atomic step_kosmos1_cudnn cudnn_ran step_kosmos1_best \
  cudnn_ran_ops ops_bench_cudnn step_kosmos1_wmma tiny_cuda_fp16 \
  tiny_compare_fp16 tiny_cuda_recompute tiny_compare_recompute ops_bench ops_bench_wmma ops_bench_step_rows \
  step_kosmos1_none step_kosmos1_attention step_kosmos1_layer; do
  if [ "$(status_of "$name")" != 0 ]; then
    echo "stage $name: '$(status_of "$name")', expected exit 0; its log:"
    tail -n 20 "$out/logs/$name.log"
    failed=1
  fi
done
for name in ops_cuda ops_cuda_owngemm ops_cuda_wmma ops_cuda_cudnn nccl; do
  if [ "$(status_of "$name")" = 0 ] || [ -z "$(status_of "$name")" ]; then
    echo "stage $name: '$(status_of "$name")', expected a failure (no CUDA case can run here)"
    failed=1
  fi
done
grep -q '^device_check: 0 tests passed matching /cuda_$' "$out/logs/ops_cuda.log" ||
  { echo "ops_cuda.log does not say that no CUDA case passed"; failed=1; }
grep -q '^\[       OK \] XPosVector\.' "$out/logs/ops_cuda.log" ||
  { echo "ops_cuda.log shows no test run: the op tests did not start"; failed=1; }
for row in "kosmos bf16 rc ffn" "kosmos bf16 rc ffn best" "kosmos bf16 rc ffn tuned" "kosmos bf16 rc ffn atomic" \
  "kosmos bf16 rc ffn cudnn" \
  "kosmos bf16 rc ffn wmma" "kosmos bf16" \
  "kosmos bf16 rc attn" "kosmos bf16 rc layer" "pytorch eager" "pytorch compile"; do
  grep -qE "^$row +[0-9]" "$out/run.log" || { echo "the table has no row '$row'"; failed=1; }
done
grep -qE '^device_check: the fastest attention was step_kosmos1(_atomic|_cudnn)?.s \(--backend ' \
  "$out/logs/step_kosmos1_best.log" || { echo "step_kosmos1_best does not say what it combined"; failed=1; }
grep -q '^no row for a line of .*anchor.jsonl' "$out/run.log" ||
  { echo "the cut-off line of the peer's results is not reported"; failed=1; }
grep -q '^== table (card: stand-in card)' "$out/run.log" || { echo "the table does not name the card"; failed=1; }
grep -qF 'card ceilings by PyTorch: bf16 product 8192^3 700 TFLOP/s, device copy 3.90 TB/s' "$out/run.log" ||
  { echo "the table does not give the card's ceilings"; failed=1; }
grep -q '^pytorch ceilings' "$out/run.log" && { echo "the ceilings made a step row"; failed=1; }
if [ "$failed" != 0 ]; then
  sed -n '/^== table/,$p' "$out/run.log"
  exit 1
fi
sed -n '/^== table/,/^machine/p' "$out/run.log"
echo "device_check.sh ran every stage; the op and NCCL tests failed as no CUDA case ran; the table has every row"
