"""Which scaled_dot_product_attention kernel the Swin window attention gets, and its cost, per bias form.

    python benchmarks/bench_window_attention.py [--device cuda] [--dtype bf16]

Swin-B stage 1 at the official input (6 images, 128x352 tokens, window 12 -> 1980 windows of 144
tokens, 4 heads of 32): the relative-position bias alone (1, h, L, L) broadcast over the windows (the
unshifted blocks), the same bias materialised per window (Bw, h, L, L) (what the shifted blocks pass,
with the shift mask added), and each form restricted to one backend. Prints the median ms and the CUDA
kernels that ran (from the profiler), or why a backend refused.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F


def timed(fn, iters: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def kernels(fn) -> str:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = {e.key for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA}
    return ", ".join(sorted(n[:60] for n in names if "attention" in n.lower() or "fmha" in n.lower()
                            or "sdpa" in n.lower() or "softmax" in n.lower() or "flash" in n.lower())) or "(none named)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"))
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    from torch.nn.attention import SDPBackend, sdpa_kernel

    Bw, h, L, d = 1980, 4, 144, 32
    q, k, v = (torch.randn(Bw, h, L, d, device=args.device, dtype=dtype) for _ in range(3))
    rel = torch.randn(1, h, L, L, device=args.device, dtype=dtype)
    shift = (torch.rand(330, 1, L, L, device=args.device) < 0.3).to(dtype) * -100.0
    forms = {
        "broadcast (1,h,L,L)": rel.expand(Bw, h, L, L),
        "broadcast, no expand": rel,
        "materialised (Bw,h,L,L)": (rel + shift).unsqueeze(0).expand(Bw // 330, -1, -1, -1, -1).reshape(Bw, h, L, L),
    }
    backends = {"auto": None, "cudnn": SDPBackend.CUDNN_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "math": SDPBackend.MATH}
    print(f"# SDPA, q/k/v ({Bw}, {h}, {L}, {d}) {args.dtype}, torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for name, bias in forms.items():
        for bname, backend in backends.items():
            def run(bias=bias):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    if backend is None:
                        ms, used = timed(run), kernels(run)
                    else:
                        with sdpa_kernel([backend]):
                            ms, used = timed(run), kernels(run)
                print(f"{name:<26} {bname:<10} {ms:8.2f} ms  kernels: {used}")
            except RuntimeError as exc:
                why = "; ".join(str(w.message).splitlines()[0][:150] for w in caught) or str(exc).splitlines()[0][:150]
                print(f"{name:<26} {bname:<10}   refused: {why}")


if __name__ == "__main__":
    main()
