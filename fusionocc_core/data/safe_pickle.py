"""The one loader of info pickles: an allow-list unpickler that never runs code from the file.

`pickle.load` calls whatever global a file names (`os.system`, `builtins.eval`, ...). Info files
come from the internet (the official `fusionocc-nuscenes_infos_*.pkl`) and from
`fusionocc-prepare`; both hold only containers, scalars, strings/bytes and numpy arrays, dtypes
and scalars. Those are the only globals this unpickler resolves (under their numpy 1.x and 2.x
module names, and the protocol-0..2 `__builtin__` / `_codecs.encode` spellings that mmcv's
protocol-2 dumps use). Anything else is refused with `UnsafePickleError` naming the global.
"""
from __future__ import annotations

import importlib
import io
import pickle
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

_BUILTIN_NAMES = ("set", "frozenset", "bytearray", "complex", "slice", "range", "int", "float", "str", "bytes",
                  "bool", "list", "dict", "tuple")
# numpy globals, each tried under the numpy 2 module name first, then the numpy 1 one
_NUMPY_NAMES = {
    "numpy": ("ndarray", "dtype"),
    "numpy.core.multiarray": ("_reconstruct", "scalar"),
    "numpy._core.multiarray": ("_reconstruct", "scalar"),
    "numpy.core.numeric": ("_frombuffer",),
    "numpy._core.numeric": ("_frombuffer",),
}
_LATIN1 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; the message is one line naming it."""


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it for bytes: str -> latin-1 bytes, nothing else."""
    if not isinstance(text, str) or str(encoding).lower() not in _LATIN1 or errors != "strict":
        raise UnsafePickleError(f"refused _codecs.encode({type(text).__name__}, {encoding!r}): only latin-1 "
                                "byte strings are allowed")
    return text.encode("latin1")


def _import_attr(modules: tuple[str, ...], name: str) -> Any:
    for module in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy 2 deprecates the numpy.core spelling
                return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return None


@lru_cache(maxsize=1)
def allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> the object an info pickle may reference."""
    import builtins

    import numpy as np

    table: dict[tuple[str, str], Any] = {}
    for name in _BUILTIN_NAMES:
        table[("builtins", name)] = table[("__builtin__", name)] = getattr(builtins, name)
    table[("collections", "OrderedDict")] = __import__("collections").OrderedDict
    table[("_codecs", "encode")] = table[("codecs", "encode")] = _latin1_encode
    for module, names in _NUMPY_NAMES.items():
        twin = module.replace("numpy._core", "numpy.core") if "._core" in module else module.replace("numpy.core", "numpy._core")
        for name in names:
            obj = _import_attr((module, twin), name)
            if obj is not None:
                table[(module, name)] = obj
    dtypes = getattr(np, "dtypes", None)
    for name in dir(dtypes) if dtypes is not None else ():
        if name.endswith("DType"):
            table[("numpy.dtypes", name)] = getattr(dtypes, name)
    return table


class SafeUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only `allowed_globals()` and has no persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        obj = allowed_globals().get((module, name))
        if obj is None:
            raise UnsafePickleError(f"refused global {module}.{name}: an info file may hold only plain data "
                                    "and numpy arrays")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused persistent id: an info file may hold only plain data and numpy arrays")


def load(file: BinaryIO) -> Any:
    """Unpickle one object from a binary file through the allow-list."""
    return SafeUnpickler(file).load()


def loads(data: bytes) -> Any:
    """Unpickle one object from bytes through the allow-list."""
    return load(io.BytesIO(data))


def load_path(path: str | Path) -> Any:
    """Unpickle the object stored in `path` through the allow-list."""
    with open(path, "rb") as f:
        return load(f)

