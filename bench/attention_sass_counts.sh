#!/bin/bash
# attention_sass_counts.sh: the instructions of a step of each mma.sync attention kernel (head size 64, bf16, sm_90),
# counted without a GPU, on the path a training step at the paper's shapes takes: a copy of the sources is compiled
# with the cold paths cut (every step taken as one the causal diagonal does not cut, every operand as 16-byte
# aligned), and bench/sass_loops.awk reads each kernel's main loop. Static counts: they say how much issue work a
# change removed, not how fast a GPU runs it (bench/gpu_notes.md has both).
#
# usage: bench/attention_sass_counts.sh [TREE]
#   TREE: a checkout whose kernels to count (default this one), e.g. a `git worktree` of an older commit.
#   Needs the CUDA toolkit's nvcc (NVCC, default /usr/local/cuda/bin/nvcc) and cuobjdump (CUOBJDUMP, default on
#   PATH; where the toolkit lacks it, PyPI's nvidia-cuda-cuobjdump wheel holds it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tree=$(cd "${1:-$here}" && pwd)
nvcc=${NVCC:-/usr/local/cuda/bin/nvcc}
cuobjdump=${CUOBJDUMP:-cuobjdump}
command -v "$cuobjdump" > /dev/null || { echo "attention_sass_counts.sh: no $cuobjdump; set CUOBJDUMP" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$tree/backends" "$work/"
cuda=$work/backends/cuda
# The cold paths: the steps that the causal diagonal or the end of the rows cuts (1 of a row's 32 at 2048 tokens),
# in the kernels' two spellings (before 24936eb the mask went through query_scores_base2's flag), the
# element-by-element tile loads of unaligned operands,
sed -i -e 's/if (!s\.sees_all(/if (false \&\& !s.sees_all(/' \
  -e 's/query_scores_base2(\(.*\), !s\.sees_all(/query_scores_base2(\1, false \&\& !s.sees_all(/' \
  "$cuda/kernels_attention_mma.cu"
sed -i 's/if (vector_aligned(rows)) {/if (true || vector_aligned(rows)) {/' "$cuda/attention_tiles.cuh"
# and the element-by-element copy of a backward step's keep bits whose first row is no multiple of 8 (since the keep
# record; a causal step of a key block where Tk - Tq is not one).
if grep -q 'copy_step_keep' "$cuda/attention_mma.cuh" 2> /dev/null; then
  sed -i 's/if (first_row % 8 == 0) {/if (true || first_row % 8 == 0) {/' "$cuda/attention_mma.cuh"
  grep -q 'if (true || first_row % 8 == 0) {' "$cuda/attention_mma.cuh" ||
    { echo "attention_sass_counts.sh: expected the keep copy's alignment test to cut in $tree" >&2; exit 1; }
fi
[ "$(grep -c 'false && !s.sees_all' "$cuda/kernels_attention_mma.cu")" -eq 3 ] ||
  { echo "attention_sass_counts.sh: expected three masked-step tests to cut in $tree" >&2; exit 1; }
"$nvcc" -I"$work" -I"$tree" -isystem=/usr/local/cuda/include -O3 -DNDEBUG -DOMPI_SKIP_MPICXX=1 -w \
  --generate-code=arch=compute_90,code=sm_90 --expt-relaxed-constexpr -std=c++17 -x cu \
  -c "$cuda/kernels_attention_mma.cu" -o "$work/mma.o"
"$cuobjdump" -sass "$work/mma.o" > "$work/mma.sass"
awk -v part=Li64E13__nv_bfloat16 -f "$here/bench/sass_loops.awk" "$work/mma.sass" |
  while IFS=$'\t' read -r mangled instructions hmma mix; do
    kernel=$(c++filt "$mangled" |
      sed -e 's/(anonymous namespace):://' -e 's/(.*//' -e 's/.*:://' -e 's/__nv_bfloat16/bf16/')
    echo "$kernel: $instructions instructions, HMMA $hmma: $mix"
  done
