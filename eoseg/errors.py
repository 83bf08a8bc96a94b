"""The errors eoseg raises on bad input.

Every error says what was expected, what was found and how to fix it. One root
(`EosegError`); subclasses also inherit the matching builtin so callers that already
catch ``FileNotFoundError`` or ``ValueError`` keep working. The CLI turns any
`EosegError` into a one-paragraph message and exit status 2.
"""

from __future__ import annotations


class EosegError(Exception):
    """Root of every error eoseg raises on purpose."""


class InputNotFoundError(EosegError, FileNotFoundError):
    """A path given by the user does not exist or holds nothing usable."""


class UnreadableRasterError(EosegError, ValueError):
    """A raster file cannot be opened or decoded (corrupt, truncated, not a raster)."""


class UnreadableVectorError(EosegError, ValueError):
    """A vector file cannot be opened or lacks the expected field."""


class GeoreferenceError(EosegError, ValueError):
    """A dataset has no CRS or transform, or one that cannot be used."""


class NoOverlapError(EosegError, ValueError):
    """Two datasets (scene and grid, labels and cube, AOI and map) do not overlap."""


class BandMismatchError(EosegError, ValueError):
    """The bands of a cube do not match what a model (or a sensor profile) expects."""


class InvalidStoreError(EosegError, ValueError):
    """A Zarr store is not the product it claims to be, or is incomplete."""


class InvalidParameterError(EosegError, ValueError):
    """An option has a value outside what is supported."""


class OutputExistsError(EosegError, FileExistsError):
    """An output already exists and would be overwritten."""
