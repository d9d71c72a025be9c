"""transfer: host-to-device copies without stream syncs (the CUDA side is in test/cuda)."""
from __future__ import annotations

import torch

from fusionocc_core.transfer import device_constant, upload


def test_upload_converts_on_the_host_and_keeps_cpu_tensors_as_they_are() -> None:
    t = torch.arange(6, dtype=torch.float32).view(2, 3)
    assert upload(t, "cpu") is t  # nothing to copy
    as64 = upload(t, torch.device("cpu"), torch.float64)
    assert as64.dtype == torch.float64 and torch.equal(as64, t.double())


def test_device_constants_are_made_once_per_values_device_and_dtype() -> None:
    a = device_constant((1.5, -2.0), torch.device("cpu"), torch.float32)
    assert a is device_constant((1.5, -2.0), torch.device("cpu"), torch.float32)
    assert a.tolist() == [1.5, -2.0] and a.dtype == torch.float32
    b = device_constant((1.5, -2.0), torch.device("cpu"), torch.float64)
    assert b is not a and b.dtype == torch.float64
