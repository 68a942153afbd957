"""PyTorch side of the CPU attention comparison (the code a user would otherwise write).

Times forward + backward of plain softmax attention, exactly as the shared PyTorch peer computes it on
PyTorch 1.13 (which has no scaled_dot_product_attention): scores = q k^T * dh^-0.5, causal mask by masked_fill,
softmax, probabilities @ v; then backward from a random output gradient. Prints one JSON line per shape with the
median and the spread of the repeats. Run it beside build/bench/kosmos_bench_ops in the same session, e.g.
  OMP_NUM_THREADS=2 env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/attention_torch.py
"""
import json
import statistics
import sys
import time

import torch


def attention(q, k, v, causal):
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        n = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def time_shape(batch, heads, length, head_dim, causal, repeats=21):
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, head_dim, requires_grad=True) for _ in range(3))
    dout = torch.randn(batch, heads, length, head_dim)
    times = []
    for repeat in range(repeats + 1):
        start = time.perf_counter()
        out = attention(q, k, v, causal)
        out.backward(dout)
        elapsed = time.perf_counter() - start
        q.grad = k.grad = v.grad = None
        if repeat > 0:  # the first run warms allocator and caches
            times.append(elapsed)
    return {
        "what": "attention forward+backward", "library": f"PyTorch {torch.__version__}", "B": batch, "H": heads,
        "T": length, "dh": head_dim, "causal": causal, "threads": torch.get_num_threads(),
        "median_ms": round(statistics.median(times) * 1e3, 3),
        "min_ms": round(min(times) * 1e3, 3), "max_ms": round(max(times) * 1e3, 3), "repeats": repeats,
    }


if __name__ == "__main__":
    shape = [int(x) for x in sys.argv[1:5]] if len(sys.argv) >= 5 else [4, 4, 256, 64]
    for causal in (True, False):
        print(json.dumps(time_shape(*shape, causal)), flush=True)
