#!/bin/bash
# check_sass_loops.sh: bench/sass_loops.awk on a made-up `cuobjdump -sass` listing: each kernel's main loop is its
# backward branch's span with the most HMMA (not the longest loop, nor one a forward branch or another kernel's
# address makes), predicates and modifiers stripped from the opcodes, a kernel without a loop left out, and only the
# kernels whose names hold the part asked for.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
listing=$(mktemp)
trap 'rm -f "$listing"' EXIT
cat > "$listing" <<'LISTING'
	code for sm_90
		Function : _Z5firstv
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                      /* 0x00000a00ff017b82 */
        /*0010*/                   IMAD.MOV.U32 R2, RZ, RZ, 0x1 ;
        /*0020*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
        /*0030*/              @!P0 BRA 0x10 ;
        /*0040*/                   IADD3 R2, R2, 0x1, RZ ;
        /*0050*/                   LOP3.LUT R3, R2, 0x1, RZ, 0xc0, !PT ;
        /*0060*/                   IADD3 R2, R2, 0x1, RZ ;
        /*0070*/                   FADD R5, R5, R6 ;
        /*0080*/               @P1 BRA 0x40 ;
        /*0090*/                   BRA 0xa0 ;
        /*00a0*/                   EXIT ;
		Function : _Z6secondv
        /*0000*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
        /*0010*/                   MUFU.EX2 R2, R3 ;
        /*0020*/                   EXIT ;
		Function : _Z5thirdv
        /*0000*/                   IADD3 R2, R2, 0x1, RZ ;
        /*0010*/                   BRA 0x0 ;
LISTING
actual=$(awk -v part= -f "$here/bench/sass_loops.awk" "$listing")
expected=$(printf '%s\t%s\t%s\t%s\n' _Z5firstv 3 1 "BRA 1, HMMA 1, IMAD 1" _Z5thirdv 2 0 "BRA 1, IADD3 1")
if [ "$actual" != "$expected" ]; then
  echo "check_sass_loops.sh: expected"; echo "$expected"; echo "got"; echo "$actual"; exit 1
fi
only=$(awk -v part=third -f "$here/bench/sass_loops.awk" "$listing" | cut -f1)
[ "$only" = _Z5thirdv ] || { echo "check_sass_loops.sh: part=third gave '$only'"; exit 1; }
echo "check_sass_loops.sh: passed"
