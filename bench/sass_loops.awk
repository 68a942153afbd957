# sass_loops.awk: the instruction mix of each kernel's main loop in a `cuobjdump -sass` listing, for
# bench/attention_sass_counts.sh. GPU time is rare, so the attention kernels' issue work is first judged without a
# GPU: a step spends the issue slots its tensor-core instructions (HMMA) leave on softmax, dropout and addresses,
# and its instruction count is what a change can lower. A loop is a backward branch's span; the main loop is the one
# with the most HMMA (ties: the longest). Static counts: each instruction of the span once, so a path a step skips
# at run time counts too. Prints a line a kernel whose mangled name holds `part` (awk -v part=...):
#   MANGLED-NAME <tab> INSTRUCTIONS <tab> HMMA <tab> the twelve most frequent opcodes with their counts
function hex(text,    i, digit, value) {  # mawk has no strtonum
  value = 0
  text = tolower(text)
  for (i = 1; i <= length(text); ++i) {
    digit = index("0123456789abcdef", substr(text, i, 1))
    if (digit == 0) break
    value = value * 16 + digit - 1
  }
  return value
}
function finish(    i, j, first, hmma, best_hmma, best_length, best_first, best_last, op, n, k, mix, counts) {
  if (name == "" || index(name, part) == 0) return
  best_hmma = -1
  for (i = 1; i <= count; ++i) {
    if (target[i] < 0 || target[i] > address[i] || !(target[i] in at)) continue
    first = at[target[i]]
    hmma = 0
    for (j = first; j <= i; ++j) if (opcode[j] == "HMMA") ++hmma
    if (hmma > best_hmma || (hmma == best_hmma && i - first > best_length)) {
      best_hmma = hmma; best_length = i - first; best_first = first; best_last = i
    }
  }
  if (best_hmma < 0) return
  split("", counts)
  for (j = best_first; j <= best_last; ++j) ++counts[opcode[j]]
  mix = ""
  for (k = 0; k < 12; ++k) {
    op = ""
    for (n in counts) if (op == "" || counts[n] > counts[op] || (counts[n] == counts[op] && n < op)) op = n
    if (op == "") break
    mix = mix (mix == "" ? "" : ", ") op " " counts[op]
    delete counts[op]
  }
  printf "%s\t%d\t%d\t%s\n", name, best_last - best_first + 1, best_hmma, mix
}
/Function : / {
  finish()
  name = $0; sub(/.*Function : /, "", name); sub(/[ \t]+$/, "", name)
  count = 0; split("", at)
  next
}
/^[ \t]+\/\*[0-9a-f]+\*\/[ \t]+[^ ]/ {  # /*0120*/  @!P0 BRA 0x80 ;
  line = $0
  sub(/^[ \t]+\/\*/, "", line)
  here = hex(substr(line, 1, index(line, "*/") - 1))
  text = substr(line, index(line, "*/") + 2)
  sub(/^[ \t]+/, "", text); sub(/;.*/, "", text)
  sub(/^@!?U?P[A-Z0-9]+[ \t]+/, "", text)  # the predicate
  split(text, words, /[ \t]+/)
  op = words[1]; sub(/\..*/, "", op)
  ++count
  address[count] = here; opcode[count] = op; at[here] = count; target[count] = -1
  if (op == "BRA" && match(text, /0x[0-9a-f]+/)) target[count] = hex(substr(text, RSTART + 2, RLENGTH - 2))
}
END { finish() }
