"""Where and in which precision a network runs: one place for device, bf16 and layout.

Training and prediction share this choice. ``precision="auto"`` means bf16 autocast with
channels-last tensors on CUDA (tensor cores, half the activation memory) and plain fp32,
contiguous tensors on the CPU, where fp32 keeps runs bit-reproducible. ``"bf16"`` forces
autocast with channels-last on any device (the CPU supports both; useful to test the
mixed-precision path without a GPU) and ``"fp32"`` turns it off everywhere.

Prediction (``inference=True``) needs no bit-reproducible training: on a CPU that computes
bf16 natively (AVX512-BF16 or AMX, `cpu_computes_bf16`) ``"auto"`` takes bf16, and on any
CPU it keeps tensors channels-last, which oneDNN's convolutions run faster in fp32 too
(1.5-2x for a U-Net on an AVX2 EPYC). Elsewhere bf16 is emulated and ten times slower.

Graph compilers do not pay for this network on the CPU: on that EPYC (one thread, fp32,
channels-last, a U-Net 32/4 on 256 px chips, CPU time) eager mode took 0.372 s a chip,
``torch.jit.trace`` + ``torch.jit.freeze`` (batch norm folded, oneDNN fusion) 0.375 s and
``torch.compile`` (inductor) 0.370 s: the 3x3 convolutions, which oneDNN already runs,
are nearly all of the time. Prediction therefore runs the eager module.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from eoseg.errors import InvalidParameterError

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


@dataclass(frozen=True, slots=True)
class Accelerator:
    """A resolved device with its precision and memory layout.

    Attributes:
        device: The torch device.
        bf16: Run the forward pass in bf16 autocast.
        channels_last: Keep the model and inputs in channels-last (NHWC) layout.
    """

    device: torch.device
    bf16: bool
    channels_last: bool

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast when enabled; nothing otherwise."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            yield

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to the device (in place) in this layout; returns it."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Move a ``(N, C, H, W)`` batch to the device in this layout."""
        x = x.to(self.device, non_blocking=self.device.type == "cuda")
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def describe(self) -> str:
        """E.g. ``"cuda:0 bf16 channels-last"`` or ``"cpu fp32"`` (for logs and cards)."""
        parts = [str(self.device), "bf16" if self.bf16 else "fp32"]
        if self.channels_last:
            parts.append("channels-last")
        return " ".join(parts)


@functools.cache
def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (``avx512_bf16`` or ``amx_bf16`` in
    ``/proc/cpuinfo``); False where that file does not say (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def resolve_accelerator(
    device: str | None = None, precision: str = "auto", *, inference: bool = False
) -> Accelerator:
    """The accelerator for a device name (default CUDA when available) and precision.

    Args:
        device: Torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``); None picks
            CUDA when available, else the CPU.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (see the module docstring).
        inference: For prediction: ``"auto"`` is also bf16 on a CPU that computes it
            natively, and CPU tensors are channels-last.

    Raises:
        InvalidParameterError: On an unknown precision or a device torch cannot use.
    """
    if precision not in PRECISIONS:
        raise InvalidParameterError(
            f"--precision must be one of {PRECISIONS}; found {precision!r}: choose one"
        )
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise InvalidParameterError(
            f"--device {device!r} is not a torch device ({exc}): use 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(
            f"--device {device!r} asks for CUDA but torch sees no GPU (torch "
            f"{torch.__version__}): install the CUDA build (see README) or use --device cpu"
        )
    on_gpu = dev.type == "cuda"
    native = on_gpu or (inference and cpu_computes_bf16())
    bf16 = precision == "bf16" or (precision == "auto" and native)
    # Channels-last is what bf16 convolutions want on both CUDA (tensor cores) and oneDNN.
    return Accelerator(device=dev, bf16=bf16, channels_last=on_gpu or bf16 or inference)
