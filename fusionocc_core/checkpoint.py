"""Checkpoints: import/export of the official mmcv format, and our own config-embedding format.

Official files (reference/fusionocc-architecture.md §5) hold `state_dict` (+ `meta`), EMA files
`state_dict` + `epoch` + `updates`; keys may carry `module.` prefixes. Our parameter names equal
the official ones, so the mapping is the identity except for two layouts:
* sparse-conv kernels: ours = mmcv (kx, ky, kz, C_in, C_out); spconv 2.x files hold
  (C_out, kx, ky, kz, C_in) and are permuted on load (told apart by shape);
* Swin patch merging: the official (mmseg) 4C channels follow nn.Unfold (c, ki, kj); a Swin
  whose PatchMerging declares `channel_order = "concat"` (timm order x0,x1,x2,x3) gets the
  permutation mmseg's swin_convert applies, inverted.
A checkpoint that does not fit is refused with one message listing missing, unexpected and
mis-shaped keys. Our own files (`save_checkpoint`) embed the config and are written atomically.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from fusionocc_core.cli import ToolError
from fusionocc_core.config import Config, config_from_dict
from fusionocc_core.ops.sparse_conv import _SparseConvBase
from fusionocc_core.tools.atomic import atomic_write

FORMAT_NAME = "fusionocc_ros"
FORMAT_VERSION = 1
_RESERVED = {"format", "format_version", "config", "state_dict"}
_LIST_LIMIT = 8  # keys named per category in a mismatch message


class CheckpointError(ToolError, ValueError):
    """A checkpoint file that cannot be read or used (one-line message naming the file)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not fit the model."""


# ----------------------------------------------------------------------------- file I/O


def _numpy_safe_globals() -> list:
    """numpy scalar/dtype constructors that mmcv metadata may pickle (e.g. a numpy seed)."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2 (and a shim in 1.26)
    except ImportError:  # pragma: no cover - older numpy
        from numpy.core.multiarray import scalar
    found = [scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return found


def _torch_load(path: str | Path, map_location: Any, trusted: bool) -> Any:
    """torch.load with weights_only unless `trusted`; every failure becomes a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        if trusted:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(exc), re.I)
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path}: holds a pickled {unsafe.group(1)}, not only tensors and plain data; "
                "load it with trusted=True only if you trust its source"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*$", str(exc), re.M | re.S)
        reason = detail.group(1).splitlines()[0].strip() if detail and detail.group(1).strip() else "unpickling failed"
        raise CheckpointError(f"checkpoint {path}: not a readable PyTorch checkpoint ({reason})") from None
    except MemoryError:
        raise CheckpointError(f"checkpoint {path}: not a readable PyTorch checkpoint (it asks for more memory "
                              "than there is)") from None
    except Exception as exc:  # a text file or garbage: the unpickler fails with any error type
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"checkpoint {path}: not a readable PyTorch checkpoint "
                              f"({type(exc).__name__}{': ' + detail if detail else ''})") from None


def _atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write to a temporary file beside `path`, fsync, rename: an I/O error leaves `path` untouched."""
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports I/O errors as RuntimeError
        errno = getattr(exc, "errno", None)
        if errno:
            raise OSError(errno, f"could not write checkpoint {path}: {exc.strerror or exc}") from exc
        raise OSError(f"could not write checkpoint {path}: {exc}") from exc


# ----------------------------------------------------------------------------- layouts


def sparse_kernel_to_spconv(weight: torch.Tensor) -> torch.Tensor:
    """mmcv (kx, ky, kz, C_in, C_out) -> spconv 2.x (C_out, kx, ky, kz, C_in)."""
    return weight.permute(4, 0, 1, 2, 3).contiguous()


def sparse_kernel_from_spconv(weight: torch.Tensor) -> torch.Tensor:
    """spconv 2.x (C_out, kx, ky, kz, C_in) -> mmcv (kx, ky, kz, C_in, C_out)."""
    return weight.permute(1, 2, 3, 4, 0).contiguous()


def merge_unfold_to_concat(t: torch.Tensor) -> torch.Tensor:
    """Patch-merging 4C axis (last) from nn.Unfold order (c, ki, kj) to concat order [x0, x1, x2, x3].

    x0 = (0,0), x1 = (1,0), x2 = (0,1), x3 = (1,1) in (ki, kj); works on the reduction weight
    (2C, 4C) and on the norm's (4C,) weight/bias.
    """
    lead, c4 = t.shape[:-1], t.shape[-1]
    q = t.reshape(*lead, c4 // 4, 4).transpose(-1, -2)  # (..., 4 quadrants in (ki, kj) order, C)
    return q[..., [0, 2, 1, 3], :].reshape(*lead, c4).contiguous()


def merge_concat_to_unfold(t: torch.Tensor) -> torch.Tensor:
    """Inverse of merge_unfold_to_concat (mmseg's correct_unfold_*_order)."""
    lead, c4 = t.shape[:-1], t.shape[-1]
    q = t.reshape(*lead, 4, c4 // 4)[..., [0, 2, 1, 3], :]  # (..., 4 in (ki, kj) order, C)
    return q.transpose(-1, -2).reshape(*lead, c4).contiguous()


def _sparse_kernel_names(model: nn.Module) -> set[str]:
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, _SparseConvBase)}


def _merge_names(model: nn.Module, order: str) -> set[str]:
    """State-dict keys of PatchMerging modules whose channel_order is `order` (default: unfold)."""
    names = set()
    for name, m in model.named_modules():
        if type(m).__name__ == "PatchMerging" and getattr(m, "channel_order", "unfold") == order:
            names |= {f"{name}.reduction.weight", f"{name}.norm.weight", f"{name}.norm.bias"}
    return names


# ----------------------------------------------------------------------------- checks


def _fmt(names: list[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    return shown + (f", ... and {len(names) - _LIST_LIMIT} more" if len(names) > _LIST_LIMIT else "")


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise CheckpointMismatchError listing missing / unexpected / mis-shaped keys (one line)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shaped = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_fmt(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_fmt(unexpected)}")
        if shaped:
            parts.append(f"{len(shaped)} mis-shaped: {_fmt(shaped)}")
        raise CheckpointMismatchError(f"{source} does not fit the model ({'; '.join(parts)})")


def _load_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    check_state_dict(model, state, source)
    model.load_state_dict(dict(state), strict=False)  # strictness enforced above (num_batches_tracked may be absent)


# ----------------------------------------------------------------------------- official format


def extract_state_dict(obj: Any, source: str = "checkpoint", prefer_ema: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """The tensor dict inside an mmcv/EMA/bare checkpoint object, `module.` prefixes stripped.

    Returns (state, kind) with kind in {"state_dict", "ema_state_dict", "model", "bare"}.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict, got {type(obj).__name__}")
    order = ["ema_state_dict", "state_dict"] if prefer_ema else ["state_dict", "ema_state_dict"]
    kind = next((k for k in order + ["model"] if isinstance(obj.get(k), Mapping)), None)
    state = obj[kind] if kind else obj
    kind = kind or "bare"
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad or not state:
        raise CheckpointError(f"{source}: no tensor state dict found (top-level keys: {_fmt(sorted(map(str, obj)))})")
    state = dict(state)
    for prefix in ("module.", "ema.", "model."):
        while state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, kind


def official_to_ours(state: Mapping[str, torch.Tensor], model: nn.Module, source_merge_order: str = "unfold") -> dict[str, torch.Tensor]:
    """Map an official state dict onto our key/layout conventions (sparse kernels, patch merging)."""
    ours = model.state_dict()
    out = dict(state)
    for k in _sparse_kernel_names(model):
        if k in out and out[k].ndim == 5 and ours[k].ndim == 5 and tuple(out[k].shape) != tuple(ours[k].shape):
            if tuple(sparse_kernel_from_spconv(out[k]).shape) == tuple(ours[k].shape):
                out[k] = sparse_kernel_from_spconv(out[k])
    target = "concat" if source_merge_order == "unfold" else "unfold"
    convert = merge_unfold_to_concat if source_merge_order == "unfold" else merge_concat_to_unfold
    for k in _merge_names(model, target):
        if k in out:
            out[k] = convert(out[k])
    return out


def ours_to_official(model: nn.Module, sparse_layout: str = "mmcv", merge_order: str = "unfold") -> dict[str, torch.Tensor]:
    """Our state dict in the official layout (inverse of official_to_ours)."""
    if sparse_layout not in ("mmcv", "spconv"):
        raise ValueError(f"sparse_layout must be 'mmcv' or 'spconv', got {sparse_layout!r}")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if sparse_layout == "spconv":
        for k in _sparse_kernel_names(model):
            state[k] = sparse_kernel_to_spconv(state[k])
    source = "concat" if merge_order == "unfold" else "unfold"
    convert = merge_concat_to_unfold if merge_order == "unfold" else merge_unfold_to_concat
    for k in _merge_names(model, source):
        state[k] = convert(state[k])
    return state


def load_official_checkpoint(
    model: nn.Module,
    path: str | Path,
    map_location: Any = "cpu",
    trusted: bool = False,
    prefer_ema: bool = True,
    source_merge_order: str = "unfold",
) -> dict[str, Any]:
    """Load an official FusionOcc (mmcv, plain or EMA) checkpoint into `model`, strictly.

    Returns a summary {"kind", "num_tensors", "meta"}; raises CheckpointMismatchError listing every
    missing / unexpected / mis-shaped key if the file does not fit.
    """
    obj = _torch_load(path, map_location, trusted)
    state, kind = extract_state_dict(obj, f"checkpoint {path}", prefer_ema)
    state = official_to_ours(state, model, source_merge_order)
    _load_checked(model, state, f"checkpoint {path}")
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    return {"kind": kind, "num_tensors": len(state), "meta": meta}


def export_official_checkpoint(
    model: nn.Module,
    path: str | Path,
    ema: bool = False,
    sparse_layout: str = "mmcv",
    merge_order: str = "unfold",
    module_prefix: bool = False,
    meta: Optional[dict] = None,
) -> None:
    """Write `model` as an official-format file: {'state_dict', 'meta'} or, with ema, the EMA hook's
    {'epoch', 'state_dict', 'updates'}; optional `module.` prefixes (a DDP-wrapped save)."""
    state = ours_to_official(model, sparse_layout, merge_order)
    if module_prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    obj: dict[str, Any]
    if ema:
        obj = {"epoch": 0, "state_dict": state, "updates": 0}
    else:
        obj = {"state_dict": state, "meta": dict(meta or {"exported_by": FORMAT_NAME})}
    _atomic_torch_save(obj, path)


# ----------------------------------------------------------------------------- our format


def save_checkpoint(path: str | Path, model: nn.Module, cfg: Config, **extra: Any) -> None:
    """Atomically write {format, config (plain dict), state_dict, **extra} to `path`."""
    clash = _RESERVED & set(extra)
    if clash:
        raise ValueError(f"save_checkpoint: extra keys {sorted(clash)} are reserved")
    obj = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": cfg.to_dict(), "state_dict": model.state_dict(), **extra}
    _atomic_torch_save(obj, path)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read one of our checkpoints; 'config' comes back as a Config, the rest as saved."""
    obj = _torch_load(path, map_location, trusted=False)
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"checkpoint {path}: not a {FORMAT_NAME} checkpoint (an official FusionOcc file loads with load_official_checkpoint)"
        )
    if not isinstance(obj.get("format_version", 0), int):
        raise CheckpointError(f"checkpoint {path}: format_version {obj.get('format_version')!r} is not an integer")
    if int(obj.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format_version {obj['format_version']} is newer than this code ({FORMAT_VERSION})")
    out = dict(obj)
    try:
        out["config"] = config_from_dict(obj["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: embedded config is invalid ({exc})") from None
    return out


def load_model_weights(model: nn.Module, path: str | Path, map_location: Any = "cpu", prefer_ema: bool = True) -> str:
    """Load our own or an official checkpoint into `model` (format detected); returns which one."""
    obj = _torch_load(path, map_location, trusted=False)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT_NAME:
        key = "ema_state_dict" if prefer_ema and isinstance(obj.get("ema_state_dict"), Mapping) else "state_dict"
        state = obj.get(key)
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"checkpoint {path}: '{key}' is not a dict of tensors")
        _load_checked(model, state, f"checkpoint {path}")
        return f"{FORMAT_NAME}:{key}"
    state, kind = extract_state_dict(obj, f"checkpoint {path}", prefer_ema)
    _load_checked(model, official_to_ours(state, model), f"checkpoint {path}")
    return f"official:{kind}"
