"""Host-to-device copies that do not wait for the device.

A plain `tensor.to("cuda")` of pageable host memory is a copy followed by a stream synchronisation
(torch's memcpy_and_sync): the host stops until every kernel queued before it has run, e.g. the
image backbone, and the GPU then idles while the host prepares and queues the next work. These
helpers stage through page-locked memory and copy asynchronously, in stream order.
"""
from __future__ import annotations

import functools

import torch


def upload(tensor: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`tensor` (converted to dtype on the host first) on `device`. From the CPU to a CUDA device
    through a page-locked copy and a non-blocking transfer (torch's caching host allocator keeps the
    page-locked block until the transfer has run); anything else as `tensor.to`."""
    device = torch.device(device)
    if dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)  # on the tensor's own device: the host for a CPU tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@functools.lru_cache(maxsize=None)
def device_constant(values: tuple[float, ...] | tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The 1-D constant `values` on `device`, made once per (values, device, dtype): a fresh copy per
    call would synchronise the stream each time. Shared between callers: never modify it."""
    return torch.tensor(values, dtype=dtype, device=device)
