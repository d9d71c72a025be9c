"""The table sparse conv as one Triton kernel (implicit GEMM): out = sum_k feats[table[:, k]] @ W[k].

The table form (`sparse_conv.NeighbourTable`) gathers every output row's K neighbours into an
(M', K*C_in) matrix and multiplies it once; on a GPU that matrix is written and read back (27x the
features per conv) and the gather kernel itself was the LiDAR encoder's largest cost. Here each
program takes BLOCK_M output rows x BLOCK_N output channels and, tap by tap, loads its rows'
neighbours straight into registers (a missing neighbour, table value num_in, loads zeros; a tap that
no row of the block has is skipped) and accumulates `tl.dot` in fp32: nothing is materialised.

Inference only (no autograd), opt-in: `sparse_conv_algorithm("triton")` (benchmarks, test/cuda).
Triton is not a dependency: it comes with PyTorch's CUDA builds; the CPU build lacks it, and
`TRITON_INTERPRET=1` with the `triton` package runs the same kernel on the CPU (slowly) for checks.
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # PyTorch's CPU build has no Triton: implicit_gemm_conv says so when called
    triton = None

if triton is not None:
    @triton.jit
    def _implicit_gemm_kernel(feats_ptr, table_ptr, weight_ptr, out_ptr, num_out, num_in, c_in, c_out,
                              K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
                              FP32_DOT: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_c = tl.arange(0, BLOCK_C)
        m_ok = offs_m < num_out
        n_ok = offs_n < c_out
        c_ok = offs_c < c_in
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(K):
            rows = tl.load(table_ptr + offs_m.to(tl.int64) * K + k, mask=m_ok, other=num_in)  # (BLOCK_M,)
            if tl.min(rows) < num_in:  # some row of the block has this neighbour
                present = rows < num_in
                a = tl.load(feats_ptr + rows[:, None] * c_in + offs_c[None, :],
                            mask=present[:, None] & c_ok[None, :], other=0.0)  # (BLOCK_M, BLOCK_C)
                b = tl.load(weight_ptr + (k * c_in + offs_c[:, None]).to(tl.int64) * c_out + offs_n[None, :],
                            mask=c_ok[:, None] & n_ok[None, :], other=0.0)  # (BLOCK_C, BLOCK_N)
                if FP32_DOT:  # fp32 features (exact fp32 products, as torch's matmul), or the interpreter
                    acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
                else:  # bf16/fp16 on tensor cores
                    acc += tl.dot(a, b)
        out = out_ptr + offs_m.to(tl.int64)[:, None] * c_out + offs_n[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


    # rows per program and warps, chosen per layer shape at its first call (the node's warm-up) on a GPU;
    # the interpreter cannot time configurations and runs the plain kernel with 64 rows
    _tuned_kernel = triton.autotune(
        configs=[triton.Config({"BLOCK_M": m}, num_warps=w) for m, w in ((32, 2), (64, 4), (128, 4), (128, 8))],
        key=["c_in", "c_out"],
    )(_implicit_gemm_kernel)


def _pow2(n: int, least: int) -> int:
    return max(least, 1 << (max(int(n), 1) - 1).bit_length())


def implicit_gemm_conv(feats: torch.Tensor, weight: torch.Tensor, table: torch.Tensor, num_in: int) -> torch.Tensor:
    """out (M', C_out) = sum_k feats[table[:, k]] @ weight[k]; feats (num_in, C_in), weight (K, C_in, C_out)
    in feats' dtype, table (M', K) int64 with num_in marking a missing neighbour. fp32 accumulation."""
    if triton is None:
        raise RuntimeError("the 'triton' sparse conv needs the triton package (PyTorch's CUDA builds include it)")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if not feats.is_cuda and not interpreted:
        raise RuntimeError("the 'triton' sparse conv runs on CUDA tensors (on the CPU only under TRITON_INTERPRET=1)")
    K, c_in, c_out = weight.shape
    if feats.shape != (num_in, c_in) or table.ndim != 2 or table.shape[1] != K:
        raise ValueError(f"implicit_gemm_conv: feats {tuple(feats.shape)}, weight {tuple(weight.shape)}, "
                         f"table {tuple(table.shape)} and num_in {num_in} do not fit")
    feats, weight, table = feats.contiguous(), weight.to(feats.dtype).contiguous(), table.contiguous()
    num_out = table.shape[0]
    out = feats.new_empty(num_out, c_out)
    if num_out == 0:
        return out
    block_n = min(64, _pow2(c_out, 16))
    grid = lambda meta: (triton.cdiv(num_out, meta["BLOCK_M"]), triton.cdiv(c_out, block_n))  # noqa: E731
    # the interpreter (TRITON_INTERPRET=1, CPU checks) multiplies half precisions wrongly: fp32 there
    fp32_dot = feats.dtype == torch.float32 or interpreted
    args = (feats, table, weight, out, num_out, num_in, c_in, c_out)
    constants = {"K": K, "BLOCK_C": _pow2(c_in, 16), "BLOCK_N": block_n, "FP32_DOT": fp32_dot}
    if interpreted:
        _implicit_gemm_kernel[grid](*args, BLOCK_M=64, **constants)
    else:
        _tuned_kernel[grid](*args, **constants)
    return out
