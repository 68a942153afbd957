#!/usr/bin/env python3
"""sass_loops.py: the instruction mix of each kernel's main loop in a `cuobjdump -sass` listing.

GPU time is rare, so the attention kernels' issue work is first judged without a GPU: their steps spend the issue
slots that the tensor-core instructions (HMMA) leave on softmax, dropout and address arithmetic, and a step's
instruction count is the number a change can lower. A loop is a backward branch's span; the main loop is the one
with the most HMMA (ties: the longest). The count is static: every instruction of the span once, so a path the
step skips at run time counts too (bench/attention_sass_counts.sh compiles the kernels with the cold paths cut).

usage: sass_loops.py LISTING [NAME_PART]   (kernels whose mangled name holds NAME_PART)
"""
import collections
import re
import subprocess
import sys


def kernels(listing):
    """(mangled name, [(address, instruction)]) for each function of the listing."""
    for part in re.split(r"\n\s+Function : ", listing)[1:]:
        name = part.split("\n", 1)[0].strip()
        code = []
        for line in part.split("\n"):
            match = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
            if match:
                code.append((int(match.group(1), 16), match.group(2).strip()))
        yield name, code


def main_loop(code):
    """(first, last, Counter of opcodes) of the loop with the most HMMA, or None without a loop."""
    index_of = {address: i for i, (address, _) in enumerate(code)}
    best = None
    for i, (address, text) in enumerate(code):
        target = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if not target or int(target.group(1), 16) > address or int(target.group(1), 16) not in index_of:
            continue
        first = index_of[int(target.group(1), 16)]
        ops = collections.Counter()
        for _, instruction in code[first:i + 1]:
            opcode = re.sub(r"^@!?U?P\w+\s+", "", instruction).split()[0]
            ops[opcode.split(".")[0]] += 1
        key = (ops["HMMA"], i + 1 - first)
        if best is None or key > best[0]:
            best = (key, first, i, ops)
    return None if best is None else best[1:]


def short_name(mangled):
    """The kernel's name and template arguments (c++filt's, without namespaces and parameters)."""
    try:
        name = subprocess.run(["c++filt", mangled], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return mangled
    name = name.replace("(anonymous namespace)::", "").split("(")[0]
    name = re.sub(r"^.*::", "", name)
    return name.replace("__nv_bfloat16", "bf16")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as listing:
        text = listing.read()
    part = sys.argv[2] if len(sys.argv) > 2 else ""
    for name, code in kernels(text):
        if part not in name:
            continue
        loop = main_loop(code)
        if loop is None:
            continue
        first, last, ops = loop
        mix = ", ".join(f"{op} {count}" for op, count in ops.most_common(12))
        print(f"{short_name(name)}: {last + 1 - first} instructions, HMMA {ops['HMMA']}: {mix}")


if __name__ == "__main__":
    main()
