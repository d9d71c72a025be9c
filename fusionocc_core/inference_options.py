"""Names of the inference options the Predictor, the node's parameters and the tools share. No torch
here: the node checks its parameters against these before it imports torch."""
from __future__ import annotations

PRECISION_NAMES = ("fp32", "bf16", "fp16")  # autocast dtypes; the half precisions on CUDA only
# the sparse conv's rulebook form: auto (table on CUDA, pairs on the CPU), pairs, table, or triton (the
# table applied by one implicit-GEMM Triton kernel; CUDA, inference)
SPARSE_CONV_ALGORITHMS = ("auto", "pairs", "table", "triton")
