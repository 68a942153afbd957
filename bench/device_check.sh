#!/usr/bin/env bash
# device_check.sh: everything the CUDA backend must show on a GPU, in one run of a few minutes, from the bundle that
# bench/device_bundle.sh made on the build machine (.device/bundle.tar.xz, carried to the GPU machine):
#   1. the machine: nvidia-smi and `kosmos info`;
#   2. every op case on the CUDA backend against the fp64 reference (on cuda-owngemm, the own GEMM kernel, and on
#      cuda-wmma, attention on the WMMA kernels instead of mma.sync, in stage 7);
#   3. the NCCL communicator on this GPU (one rank: its one-rank, host and point-to-point paths; the collectives
#      themselves need two or more GPUs, where `mpirun -np N kosmos_mpi_tests` runs them);
#      the tiny preset trained 5 steps on CUDA and on the CPU: losses within 1e-2 relative (fp32), and CUDA's
#      --precision bf16 run within 2e-2 of the CPU's fp32 one;
#   4. the paper-size step (kosmos1, micro-batch 8 x 2048, --precision bf16: bf16 activations) with `kosmos bench`
#      and --recompute ffn (about 47 GiB by estimate, under the goal's 60), and the PyTorch peer
#      (.device/peer/torch_kosmos.py compile; eager, in a process of its own, after the combined step of 7, then
#      the card's ceilings as PyTorch measures them) on the same card;
#   5. checkpoints across backends: 3 steps on the CPU resumed on CUDA to 6, and the reverse, against all-CPU;
#   6. a profiled paper step (the time per op; no op may have left its fast path);
#   7. the variants: the paper step with --gemm-tuning 8, with --attention-backward atomic, with it on cuda-cudnn
#      (cuDNN's fused attention, whose op cases run too; no cuDNN warning may appear), then the fastest of those
#      combined (best_step), then the peer's eager mode, then every op case on cuda-owngemm and cuda-wmma, and the
#      step on cuda-wmma; the tiny preset's fp16 run (dynamic loss scaling) within 1e-2 of the CPU's, and
#      --recompute attention (the attention sub-layers and FFN tails again) against the run without; `kosmos bench
#      ops` at the kosmos1 shapes on cuda and on cuda-wmma (the f32 and the bf16 tensor-core attention side by side,
#      both bf16 backwards), and for the step's rows on cuda and on cuda-cudnn (cuDNN's attention in the rows "...
#      atomic"); the paper step without recomputation (about 55 GiB by the planner), with attention (38) and with
#      layer (31) (the table has the device memory peaks: our buffers' count, and all the card had in use as
#      nvidia-smi saw it);
# then one table. Each stage has its own time limit and logs into WORK_DIR; a failing stage does not stop the
# others, and the run as a whole stops starting stages near DEADLINE_S (below).
# The device call brings back at most 8 files, so the logs travel packed: after every stage, LOGDIR gets
# logs.tar.gz (WORK_DIR's logs and results, checkpoints left out) and summary.txt. WORK_DIR (default
# /tmp/kosmos-check, on the GPU machine, outside the call's $OUT, which each call empties) keeps what ran: a second
# call on the machine while it is still warm, with the same bundle, starts only the stages the first one did not
# finish (cut by the deadline, or never reached), and its table has the rows of both. A rebuilt bundle, or FRESH=1,
# starts over. STAGES="NAME ..." runs the stages named, and only those, finished before or not (a short call that
# measures one change: STAGES="machine ops_bench step_kosmos1", say).
# Usage (on the GPU machine, in the repository root):
#   [DEADLINE_S=N] [WORK_DIR=DIR] [FRESH=1] [STAGES="NAME ..."] bash .device/device_check.sh LOGDIR [SKIP_COMPILE]
set -uo pipefail
packed="${1:?usage: device_check.sh LOGDIR}"
skip_compile="${2:-}"
logs="${WORK_DIR:-/tmp/kosmos-check}"
bundle="$(cd "$(dirname "$0")" && pwd)"
# What an earlier call ran counts only for the same bundle: a rebuilt one (a change to measure) starts over.
if [ -f "$bundle/bundle.tar.xz" ]; then
  bundle_sum=$(sha256sum < "$bundle/bundle.tar.xz")
else
  bundle_sum=$(sha256sum < "$bundle/bin/kosmos")
fi
if [ "${FRESH:-0}" = 1 ] || [ "$(cat "$logs/bundle.sha256" 2> /dev/null)" != "$bundle_sum" ]; then
  rm -rf "$logs"
fi
if [ -f "$bundle/bundle.tar.xz" ]; then  # packed by device_bundle.sh: unpack it outside the working tree
  mkdir -p /tmp/kosmos-bundle && tar -C /tmp/kosmos-bundle -xJf "$bundle/bundle.tar.xz" && bundle=/tmp/kosmos-bundle
fi
mkdir -p "$logs/done" "$packed"
echo "$bundle_sum" > "$logs/bundle.sha256"
summary="$logs/summary.txt"  # one line per stage run, over every call on this machine
touch "$summary"

# CUDA's libraries from the toolkit, or from PyTorch's wheels where the toolkit lacks one.
cuda_libs="/usr/local/cuda/lib64:/usr/local/cuda/lib"
wheel_libs="$(python3 -c 'import glob, os, nvidia; print(":".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")))))' 2> /dev/null || true)"
image_library_path="${LD_LIBRARY_PATH:-}"  # the peer's: PyTorch must not load the bundle's Debian libraries
export LD_LIBRARY_PATH="$bundle/lib:$cuda_libs:$wheel_libs:${LD_LIBRARY_PATH:-}"
export OMPI_MCA_mca_base_component_path="$bundle/lib/openmpi3" PMIX_MCA_mca_base_component_path="$bundle/lib/pmix"
export OMPI_MCA_ess_singleton_isolated=1 OMPI_MCA_mca_base_component_show_load_errors=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=8
kosmos="$bundle/bin/kosmos"

# The whole run ends within DEADLINE_S seconds (default 560: the table is printed inside the device's 10-minute
# command limit): a stage gets the smaller of its own limit and what is left, and one with under 15 s left is
# skipped (status "skip" in the summary).
deadline="${DEADLINE_S:-560}"

# pack: LOGDIR's copy of the logs and results so far (what a call cut off at its limit still brings back).
pack() {
  tar -C "$logs" --exclude='*.h5' --exclude='done' -czf "$packed/logs.tar.gz.part" . 2> /dev/null &&
    mv "$packed/logs.tar.gz.part" "$packed/logs.tar.gz"
  cp "$summary" "$packed/summary.txt"
}

# stage NAME SECONDS COMMAND...: runs it with a limit, logs to WORK_DIR/NAME.log, records status and time. A stage
# that an earlier call on this machine finished is not run again; one cut short by the deadline is.
stage() {
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS status=0 left=$((deadline - SECONDS)) cut=0
  if [ -n "${STAGES:-}" ] && [[ " $STAGES " != *" $name "* ]]; then
    return 0
  fi
  if [ -f "$logs/done/$name" ] && [ -z "${STAGES:-}" ]; then
    echo "== $name: finished by an earlier call ($(cat "$logs/done/$name"))"
    return 0
  fi
  if [ "$left" -lt 15 ]; then
    printf '%-14s skip (the deadline of %d s is near)\n' "$name" "$deadline" | tee -a "$summary"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left cut=1
  echo "== $name (limit ${limit} s)"
  timeout "$limit" bash -c '"$@"' "$name" "$@" > "$logs/$name.log" 2>&1 || status=$?  # bash: runs functions too
  tail -n 15 "$logs/$name.log"
  printf '%-14s exit %-4s %5d s\n' "$name" "$status" $((SECONDS - start)) | tee -a "$summary"
  [ "$status" = 124 ] && [ "$cut" = 1 ] || echo "exit $status" > "$logs/done/$name"
  pack
}

# compare A B TOLERANCE: every loss of B within TOLERANCE (relative) of A's.
compare() {
  python3 - "$@" << 'PY'
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
tolerance = float(sys.argv[3])
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b)) if a and len(a) == len(b) else float("inf")
print("losses", " ".join("%.5f" % x for x in a), "|", " ".join("%.5f" % y for y in b), "| worst relative", worst)
sys.exit(0 if worst <= tolerance else 1)
PY
}

cross() {  # cross FIRST SECOND: 3 steps on FIRST with a checkpoint, then resumed on SECOND to step 6
  local dir="$logs/resume_$1_$2"
  local resume=(train --preset tiny --steps 6 --seed 2 --log-every 1)
  rm -rf "$dir" && mkdir -p "$dir"
  "$kosmos" "${resume[@]}" --backend "$1" --stop-at 3 --save-dir "$dir/run" &&
    "$kosmos" "${resume[@]}" --backend "$2" --save-dir "$dir/run" --resume auto --metrics "$dir/resumed.jsonl" &&
    "$kosmos" "${resume[@]}" --backend cpu --metrics "$dir/whole.jsonl" &&
    python3 -c 'import sys; l = open(sys.argv[1]).readlines(); open(sys.argv[2], "w").writelines(l[3:])' \
      "$dir/whole.jsonl" "$dir/whole_tail.jsonl" &&
    compare "$dir/whole_tail.jsonl" "$dir/resumed.jsonl" 1e-2
}
# on_card NAME COMMAND...: runs it while nvidia-smi samples the memory in use on the card it runs on, every half
# second, into LOGDIR/NAME.card (MiB per line): what the process holds beyond the model's own count, the CUDA
# context, NCCL's and cuBLASLt's internal allocations included (the table's "card GiB"). One query per sample, so
# each line is written whole however the sampler ends (`timeout` stops it with the stage's process group).
on_card() {
  local name=$1 status=0 card="${CUDA_VISIBLE_DEVICES:-0}"
  shift
  : > "$logs/$name.card"
  while nvidia-smi -i "${card%%,*}" --query-gpu=memory.used --format=csv,noheader,nounits >> "$logs/$name.card" \
    2> /dev/null; do sleep 0.5; done &
  local sampler=$!
  "$@" || status=$?
  kill "$sampler" 2> /dev/null
  wait "$sampler" 2> /dev/null
  return "$status"
}
# checked_gtest REGEXES BINARY ARGS...: runs a gtest binary, which must pass, skip no test, and pass at least one test
# whose name matches each of the space-separated REGEXES: gtest passes a filter that matched nothing, and that is
# what a backend that sees no device (a driver the runtime does not accept, say) leaves of its cases.
# checked_gtest_skipping REASON REGEXES BINARY ARGS...: the same, but a test may skip where its message holds REASON
# (the cases a backend leaves to another test by design).
checked_gtest() { checked_gtest_skipping "" "$@"; }
checked_gtest_skipping() {
  local allowed=$1 regexes=$2 output status=0 regex passed unexpected
  shift 2
  output=$(mktemp)
  "$@" --gtest_color=no > "$output" 2>&1 || status=$?
  cat "$output"
  # A skip's message comes between its test's RUN line and its SKIPPED line (which ends in the time taken).
  unexpected=$(awk -v allowed="$allowed" '/^\[ RUN      \]/ {reason = ""; next}
    /^\[  SKIPPED \] .* \([0-9]+ ms\)$/ {if (allowed == "" || index(reason, allowed) == 0) print; next}
    !/^\[/ {reason = reason " " $0}' "$output")
  if [ -n "$unexpected" ]; then
    echo "device_check: tests were skipped:"
    echo "$unexpected"
    status=1
  fi
  for regex in $regexes; do
    passed=$(grep -c -E "^\[       OK \] .*$regex" "$output")
    echo "device_check: $passed tests passed matching $regex"
    [ "$passed" -gt 0 ] || status=1
  done
  rm -f "$output"
  return "$status"
}
# fast_paths PROFILE_LOG: the profile lists the products, and no op in it left its fast path.
fast_paths() {
  grep -q '^  matmul' "$1" || { echo "no profile in $1"; return 1; }
  ! grep -E '\((own GEMM|f32 kernels)\)' "$1"
}
# cudnn_ran LOG: a run on cuda-cudnn whose log has no cuDNN warning: cuDNN was found and took the graphs (else the
# mma.sync kernels ran the attention, and its numbers are theirs).
cudnn_ran() {
  [ -f "$1" ] || { echo "no log $1"; return 1; }
  ! grep -E 'warning: (cuDNN declined|--backend cuda-cudnn)' "$1"
}
# best_step ARGS...: `kosmos ARGS` (the paper step, with --backend) with the fastest of the variants timed before it
# combined: the attention of the fastest of step_kosmos1 (mma.sync, two passes), step_kosmos1_atomic (one pass) and
# step_kosmos1_cudnn (cuDNN, if its cudnn_ran stage passed), and --gemm-tuning 8 if step_kosmos1_tuned beat
# step_kosmos1; run on the card (on_card) as step_kosmos1_best, saying what it combined.
best_step() {
  local choice backend name tuning extra i
  choice=$(python3 - "$logs" "$(cat "$logs/done/cudnn_ran" 2> /dev/null)" << 'PY'
import json, os, sys
logs, cudnn_ran = sys.argv[1], sys.argv[2] == "exit 0"
def seconds(name):
    try:
        return json.load(open(os.path.join(logs, name + ".json")))["step_seconds_median"]
    except (OSError, ValueError, KeyError):
        return float("inf")
attention = [("step_kosmos1", "cuda", ""), ("step_kosmos1_atomic", "cuda", "--attention-backward atomic")]
if cudnn_ran:
    attention.append(("step_kosmos1_cudnn", "cuda-cudnn", "--attention-backward atomic"))
name, backend, flags = min(attention, key=lambda variant: seconds(variant[0]))
print(backend, name, "tuned" if seconds("step_kosmos1_tuned") < seconds("step_kosmos1") else "untuned", flags)
PY
  ) || return 1
  read -r backend name tuning extra <<< "$choice"
  local args=("$@")
  for i in "${!args[@]}"; do
    [ "${args[$i]}" = --backend ] && args[$((i + 1))]=$backend
  done
  [ "$tuning" = tuned ] && args+=(--gemm-tuning 8)
  echo "device_check: the fastest attention was ${name}'s (--backend $backend $extra), GEMM $tuning"
  # shellcheck disable=SC2086  # extra: the variant's flags, split into words
  on_card step_kosmos1_best "$kosmos" "${args[@]}" $extra
}
# peer MODE: the PyTorch peer in one mode, its result appended to anchor.jsonl on a line of its own (after a line an
# earlier mode's process left cut off, stopped by its limit as it wrote).
peer() {
  local anchor="$logs/anchor.jsonl"
  [ -s "$anchor" ] && [ -n "$(tail -c 1 "$anchor")" ] && echo >> "$anchor"
  env OUT="$logs" PYTHONUNBUFFERED=1 LD_LIBRARY_PATH="$image_library_path" python3 "$bundle/peer/torch_kosmos.py" "$1"
}
export -f compare cross peer on_card checked_gtest checked_gtest_skipping fast_paths cudnn_ran best_step
export kosmos logs bundle image_library_path

# A bundle that does not start here (a library missing from it or from the image) fails every stage: say why, once.
if ! "$kosmos" info > "$logs/start.log" 2>&1; then
  echo "device_check: kosmos does not start on this machine:"
  cat "$logs/start.log"
  ldd "$kosmos" | grep 'not found'
  cp "$logs/start.log" "$packed/"
  exit 1
fi

# The stages run in the order of what matters most (issue 7's points first), so that a run cut short still has it.
stage machine 60 bash -c "nvidia-smi; '$kosmos' info"
# Every op case on the CUDA backend; its kernel variants' further down (each backend in a process of its own, so
# that a kernel that brings its process down costs one backend's results).
stage ops_cuda 180 checked_gtest '/cuda_' "$bundle/bin/kosmos_op_tests" \
  --gtest_filter='*cuda*:XPosVector*-*cuda_owngemm*:*cuda_wmma*:*cuda_cudnn*' --gtest_output="xml:$logs/ops_cuda.xml"
stage nccl 60 checked_gtest 'NcclComm\..*/cuda[[:space:]]' "$bundle/bin/kosmos_mpi_tests" --gtest_filter='*NcclComm.*'

tiny=(train --preset tiny --steps 5 --seed 1 --log-every 1)
stage tiny_cpu 120 "$kosmos" "${tiny[@]}" --backend cpu --metrics "$logs/tiny_cpu.jsonl"
stage tiny_cuda 120 "$kosmos" "${tiny[@]}" --backend cuda --metrics "$logs/tiny_cuda.jsonl"
stage tiny_compare 30 compare "$logs/tiny_cpu.jsonl" "$logs/tiny_cuda.jsonl" 1e-2
stage tiny_cuda_bf16 120 "$kosmos" "${tiny[@]}" --backend cuda --precision bf16 --metrics "$logs/tiny_cuda_bf16.jsonl"
stage tiny_compare_bf16 30 compare "$logs/tiny_cpu.jsonl" "$logs/tiny_cuda_bf16.jsonl" 2e-2

# One image per sequence, as the PyTorch peer's batches (the synthetic set's default puts two in every third).
paper=(bench --preset kosmos1 --backend cuda --precision bf16 --batch 8 --length 2048 --peak-tflops 790
       --one-image-per-sequence)
stage step_kosmos1 300 on_card step_kosmos1 "$kosmos" "${paper[@]}" --recompute ffn --steps 4 --warmup 1 \
  --out "$logs/step_kosmos1.json"
# The peer's two modes in processes of their own: compiled here (the goal's measure), eager after the combined step
# below. Eager peaked at 85.7 GiB on the H200 of 2026-12-04, more than an H100 holds, and its running out of memory
# must not cost the compiled row.
[ -z "$skip_compile" ] && stage peer_compile 330 peer compile
# Checkpoints across backends (a point of issue 7's "done when"), before the variants below.
stage resume_cpu_cuda 180 cross cpu cuda
stage resume_cuda_cpu 180 cross cuda cpu
# Where the paper step's time goes: each op timed by events on the GPU's stream, over the two steps after the
# warm-up (whose one-off work, choosing GEMM algorithms and loading kernels, bench leaves out of the table).
stage profile_kosmos1 240 "$kosmos" "${paper[@]}" --recompute ffn --steps 3 --warmup 1 --profile
# ... in which no op may have left its fast path (the profile names a product off cuBLASLt "(own GEMM)", a bf16
# attention widened "(f32 kernels)"; tests/check_gpu_fast_paths.cmake checks the same on the emulated GPU).
stage fast_paths 10 fast_paths "$logs/profile_kosmos1.log"
# The same step with GEMM tuning: each new product shape times cuBLASLt's first 8 algorithms and keeps the fastest
# (the log ends with what it chose and what the timings say it saves), against the heuristic's first choices above.
stage step_kosmos1_tuned 240 on_card step_kosmos1_tuned "$kosmos" "${paper[@]}" --recompute ffn --gemm-tuning 8 \
  --steps 4 --warmup 1 --out "$logs/step_kosmos1_tuned.json"
# The same step with the attention backward in one pass (dq added up by atomics), against the two passes above.
stage step_kosmos1_atomic 240 on_card step_kosmos1_atomic "$kosmos" "${paper[@]}" --recompute ffn \
  --attention-backward atomic --steps 3 --warmup 1 --out "$logs/step_kosmos1_atomic.json"
# ... and on cuDNN's fused attention (cuda-cudnn takes the ops whose dropout masks and dq order may be its own: those
# of --attention-backward atomic), which must have run it.
paper_cudnn=("${paper[@]}")
paper_cudnn[4]=cuda-cudnn  # --backend's value
stage step_kosmos1_cudnn 240 on_card step_kosmos1_cudnn "$kosmos" "${paper_cudnn[@]}" --recompute ffn \
  --attention-backward atomic --steps 3 --warmup 1 --out "$logs/step_kosmos1_cudnn.json"
stage cudnn_ran 10 cudnn_ran "$logs/step_kosmos1_cudnn.log"
# Every op case on cuda-cudnn: cuDNN runs those without dropout in any order against the fp64 reference; those with
# dropout it takes draw cuDNN's masks and skip, as test_cudnn_attention.cpp reads those off the forward and checks.
stage ops_cuda_cudnn 150 checked_gtest_skipping "cuDNN draws its own dropout masks" "/cuda_cudnn_ CudnnDropout" \
  "$bundle/bin/kosmos_op_tests" --gtest_filter='*cuda_cudnn*' --gtest_output="xml:$logs/ops_cuda_cudnn.xml"
stage cudnn_ran_ops 10 cudnn_ran "$logs/ops_cuda_cudnn.log"
# The fastest of the variants above combined (best_step says which), the step to quote.
stage step_kosmos1_best 240 best_step "${paper[@]}" --recompute ffn --steps 4 --warmup 1 \
  --out "$logs/step_kosmos1_best.json"
stage peer_eager 150 peer eager
# The card's ceilings as PyTorch measures them (a bf16 product of 8192 cubed, a 1 GiB device copy): the rates that
# `kosmos bench ops`' products and memory-bound ops read against.
stage peer_ceilings 60 peer ceilings
# Every op case on cuda-owngemm (the own GEMM kernel) and cuda-wmma (attention on the WMMA kernels, which keep no
# dropout record: test_attention_keep.cpp skips there by design): backends the paper step does not use, so after
# the steps that measure it (the 2026-12-04 call needed all its 539 s for fewer stages than there are now).
for variant in owngemm wmma; do
  allowed=""
  [ "$variant" = wmma ] && allowed="keeps no record"
  stage "ops_cuda_$variant" 150 checked_gtest_skipping "$allowed" "/cuda_${variant}_" "$bundle/bin/kosmos_op_tests" \
    --gtest_filter="*cuda_$variant*" --gtest_output="xml:$logs/ops_cuda_$variant.xml"
done
# The same step with the WMMA attention kernels, against the mma.sync ones above.
paper_wmma=("${paper[@]}")
paper_wmma[4]=cuda-wmma  # --backend's value
stage step_kosmos1_wmma 240 on_card step_kosmos1_wmma "$kosmos" "${paper_wmma[@]}" --recompute ffn --steps 3 \
  --warmup 1 --out "$logs/step_kosmos1_wmma.json"

stage tiny_cuda_fp16 120 "$kosmos" "${tiny[@]}" --backend cuda --precision fp16 --metrics "$logs/tiny_cuda_fp16.jsonl"
stage tiny_compare_fp16 30 compare "$logs/tiny_cpu.jsonl" "$logs/tiny_cuda_fp16.jsonl" 1e-2
stage tiny_cuda_recompute 120 "$kosmos" "${tiny[@]}" --backend cuda --recompute attention \
  --metrics "$logs/tiny_cuda_recompute.jsonl"
stage tiny_compare_recompute 30 compare "$logs/tiny_cuda.jsonl" "$logs/tiny_cuda_recompute.jsonl" 1e-6
# Every op family at the kosmos1 shapes for one sequence of 2048: attention's f32 kernels against the bf16
# tensor-core ones (TFLOP/s), the matmuls, the memory-bound rest (GB/s).
stage ops_bench 150 "$kosmos" bench ops --preset kosmos1 --backend cuda --batch 1 --length 2048
stage ops_bench_wmma 120 "$kosmos" bench ops --preset kosmos1 --backend cuda-wmma --batch 1 --length 2048
# ... and over the paper step's 8 sequences (16384 rows, as the step's products run).
stage ops_bench_step_rows 120 "$kosmos" bench ops --preset kosmos1 --backend cuda --batch 8 --length 2048
stage ops_bench_cudnn 120 "$kosmos" bench ops --preset kosmos1 --backend cuda-cudnn --batch 8 --length 2048
for recompute in none attention layer; do
  stage "step_kosmos1_$recompute" 240 on_card "step_kosmos1_$recompute" "$kosmos" "${paper[@]}" \
    --recompute "$recompute" --steps 3 --warmup 1 \
    --out "$logs/step_kosmos1_$recompute.json"
done

# The table, kept in WORK_DIR/table.txt too (so in the packed logs).
{
echo "== table (card: $(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -n 1))"
python3 - "$logs" << 'PY'
import json, os, re, sys
logs = sys.argv[1]
rows = []
def card_gib(name):  # the most nvidia-smi saw in use during the stage
    try:
        return max(float(line) for line in open(os.path.join(logs, name + ".card")) if line.strip()) / 1024
    except (OSError, ValueError):
        return float("nan")
for name, label in (("step_kosmos1", "kosmos bf16 rc ffn"), ("step_kosmos1_best", "kosmos bf16 rc ffn best"),
                    ("step_kosmos1_tuned", "kosmos bf16 rc ffn tuned"),
                    ("step_kosmos1_atomic", "kosmos bf16 rc ffn atomic"),
                    ("step_kosmos1_cudnn", "kosmos bf16 rc ffn cudnn"),
                    ("step_kosmos1_wmma", "kosmos bf16 rc ffn wmma"),
                    ("step_kosmos1_none", "kosmos bf16"),
                    ("step_kosmos1_attention", "kosmos bf16 rc attn"), ("step_kosmos1_layer", "kosmos bf16 rc layer")):
    ours = os.path.join(logs, name + ".json")
    if os.path.exists(ours):
        try:  # one unreadable result (a run cut off while writing it) costs its row, not the table
            r = json.load(open(ours))
            rows.append((label, r["step_seconds_median"], r["tokens_per_s_median"], r["tflops_full_median"],
                         r.get("device_peak_gib", float("nan")), card_gib(name)))
        except (ValueError, KeyError) as error:
            print("no row for %s: %s: %r" % (label, ours, error))
anchor = os.path.join(logs, "anchor.jsonl")
if os.path.exists(anchor):
    for line in open(anchor):
        try:
            r = json.loads(line)
        except ValueError:
            print("no row for a line of %s: %r" % (anchor, line[:80]))
            continue
        if r.get("label") == "ceilings":
            print("card ceilings by PyTorch: bf16 product 8192^3 %.0f TFLOP/s, device copy %.2f TB/s (read + write)"
                  % (r.get("bf16_gemm_tflops", float("nan")), r.get("d2d_tb_s", float("nan"))))
        if "step_s_median" in r:
            rows.append(("pytorch " + r["label"], r["step_s_median"], r.get("tokens_per_s", float("nan")),
                         r.get("tflops", float("nan")), r.get("peak_gib", float("nan")), float("nan")))
for mode in ("compile", "eager"):  # a mode that left no row: the error its log ends with (out of memory, say)
    log = os.path.join(logs, "peer_%s.log" % mode)
    if os.path.exists(log) and not any(row[0].startswith("pytorch") and mode in row[0] for row in rows):
        errors = [line.strip() for line in open(log, errors="replace") if re.match(r"[\w.]*(Error|Exception)\b", line)]
        print("no row for pytorch %s: %s" % (mode, errors[-1][:200] if errors else "no result; see " + log))
# peak GiB: ours, the most our buffers (arenas, weights, kernel scratch) held; the peer's, torch's
# max_memory_allocated. card GiB: all the card had in use while our step ran (context and libraries included).
print("%-24s %10s %12s %10s %10s %10s" % ("what", "step s", "tokens/s", "TFLOP/s", "peak GiB", "card GiB"))
for name, step, tokens, tflops, peak, card in rows:
    print("%-24s %10.3f %12.0f %10.1f %10.1f %10.1f" % (name, step, tokens, tflops, peak, card))
PY
# The bf16 products, attention, the FFN's GELU sub-LN, xPos and the loss at the paper's widths, for one sequence
# (ops_bench) and for the step's eight (ops_bench_step_rows); the head's products on dense and on padded rows; and the
# step's attention on cuda-cudnn (its rows "... atomic" cuDNN's).
for bench_log in ops_bench ops_bench_step_rows ops_bench_cudnn; do
  if [ -f "$logs/$bench_log.log" ]; then
    echo "== bf16 ops at kosmos1 widths ($bench_log.log)"
    grep -E '^(matmul .*bf16|attention .*bf16|layernorm .*gelu|xpos .*bf16|cross_entropy)' "$logs/$bench_log.log"
  fi
done
} 2>&1 | tee "$logs/table.txt"
cat "$summary"
pack
