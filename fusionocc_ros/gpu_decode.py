"""Batched JPEG decoding on the GPU (nvJPEG through torchvision), where torchvision is installed.

A set's six 1600x900 JPEGs decode in ~1.4 ms on an H200 this way, against ~13 ms for six OpenCV
decoders on a thread pool of its host (BENCHMARKS.md, "On a GPU"). The images stay on the GPU as
(3, H, W) uint8 RGB tensors, which the Predictor's test transform takes as they are. torchvision is
optional (it cannot be installed beside the pinned CPU torch): without it, or for a set that is not
all well-formed JPEG CompressedImages, the assembler decodes on the CPU as before, so every check
and error message of `conversions` still applies.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from fusionocc_ros.conversions import ConversionError, checked_compressed_image

# payloads (CompressedImage messages) -> one (3, H, W) uint8 RGB tensor per payload, or None to
# decode that set on the CPU instead
BatchDecoder = Callable[[list[Any]], Optional[list[torch.Tensor]]]


def cuda_jpeg_decoder(device: torch.device | str) -> BatchDecoder | None:
    """A batched nvJPEG decoder for `device`, or None when it is not a CUDA device or torchvision
    (with decode_jpeg on CUDA) is not importable."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:  # not installed, or built against another torch
        return None

    def decode(payloads: list[Any]) -> list[torch.Tensor] | None:
        datas, sizes = [], []
        for payload in payloads:
            if not hasattr(payload, "format") or not hasattr(payload, "data"):
                return None  # a raw Image (or an already decoded one): the CPU path
            try:
                data, hw, kind = checked_compressed_image(payload)
            except ConversionError:
                return None  # the CPU path raises the same error for the set, with its message
            if kind != "jpeg":
                return None
            datas.append(torch.from_numpy(data.copy()))  # decode_jpeg wants its own uint8 CPU tensor
            sizes.append(hw)
        try:
            images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            return None  # nvJPEG refused one (e.g. corrupt entropy data): let OpenCV judge the set
        if any(tuple(img.shape) != (3, *hw) for img, hw in zip(images, sizes)):
            return None
        return list(images)

    return decode
