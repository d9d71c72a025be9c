"""Synchronized batch norm that also works on CPU (gloo), for multi-process training.

torch's SyncBatchNorm refuses CPU tensors. This one computes the batch mean and variance over
all ranks with differentiable all-reduces, so N ranks x batch b normalise exactly like one
process with batch N*b. On CUDA the native SyncBatchNorm is used instead.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: y = sum_r x_r; the gradient is all-reduced the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training-mode statistics are all-reduced over the default group on any device.

    Not a subclass of nn.SyncBatchNorm, which DDP refuses on CPU; same parameters and buffers as
    BatchNorm*d, so state dicts are interchangeable."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return F.batch_norm(x, self.running_mean if not self.training or self.track_running_stats else None,
                                self.running_var if not self.training or self.track_running_stats else None,
                                self.weight, self.bias, self.training or self.running_mean is None,
                                self.momentum if self.momentum is not None else 0.0, self.eps)
        dims = [0] + list(range(2, x.dim()))  # every dim but channels
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        count = all_reduce_sum(count)  # (1,) samples per channel over all ranks
        if float(count) < 2:  # too few values over all ranks: running stats (as SparseBatchNorm1d)
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        mean = all_reduce_sum(x.sum(dims)) / count  # (C,)
        centred = x - mean.reshape(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / count  # (C,) biased
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Replace every BatchNorm*d by a synchronized one (native on CUDA, CpuSyncBatchNorm elsewhere)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, (nn.SyncBatchNorm, CpuSyncBatchNorm)):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out
