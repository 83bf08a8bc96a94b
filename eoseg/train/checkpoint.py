"""Training checkpoints: resumable state saved without pickle.

A checkpoint folder holds ``tensors.safetensors`` (every tensor of the state: weights,
optimiser moments, RNG states) and ``state.json`` (everything else, with references to
the tensors). Python floats survive JSON exactly (``repr`` round-trips), so a resumed run
continues bit for bit. Folders are replaced atomically, like model folders.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from eoseg.outputs import checkpoint_path
from eoseg.store import staged_folder

logger = logging.getLogger(__name__)

TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__}")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
    return obj


def checkpoint_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The checkpoint folder of a model folder: its sibling ``<out_dir>.ckpt``."""
    return checkpoint_path(Path(out_dir))


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write a training state atomically (the folder is replaced if it exists).

    Args:
        path: Checkpoint folder.
        state: Nested dicts, lists and tuples of tensors, numbers, strings and None
            (e.g. model, optimiser and scheduler ``state_dict()``s and RNG states).

    Raises:
        TypeError: If the state holds another kind of value.
    """
    out = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors)
    with staged_folder(out) as tmp:
        save_file(tensors, str(tmp / TENSORS_FILE))
        (tmp / STATE_FILE).write_text(json.dumps(encoded))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read a training state written by `save_checkpoint`; None if absent or unreadable."""
    folder = Path(path)
    if not (folder / STATE_FILE).is_file() or not (folder / TENSORS_FILE).is_file():
        return None
    try:
        tensors = load_file(str(folder / TENSORS_FILE))
        state = _decode(json.loads((folder / STATE_FILE).read_text()), tensors)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable checkpoint %s: %s", folder, exc)
        return None
    return state if isinstance(state, dict) else None


def remove_checkpoint(path: str | os.PathLike[str]) -> None:
    """Delete a checkpoint folder if it exists."""
    shutil.rmtree(Path(path), ignore_errors=True)
