"""Code maps: the codes or names of a label source translated to class ids.

Clean label sets carry their own codes: a vector field of names (``"Forest"``), CORINE
codes (311, 312) or ESA WorldCover codes in a raster (10, 20, 80). A `CodeMap` says
which class id each source value becomes. It is given as

* a mapping ``{"311": "forest", "511": 0}`` (keys any value, compared as strings);
* a TOML table or JSON object in a file, of the same pairs::

      311 = "forest"      # a class name of the schema (ignoring case) ...
      512 = 0             # ... or a class id
      999 = "ignore"      # 255: dropped on purpose, not reported

* or inline, ``"311=forest,312=forest,511=water"``.

Source values are compared as strings after `value_key` (so the float ``10.0`` of a
Shapefile matches ``"10"``). Values the mapping does not list become 255 (ignore) and
are counted per value; the run reports them. Without a mapping, a text field maps by the
schema's class names, ignoring case (`CodeMap.from_schema`); there, a value that is
no class name is an error, since it is a typo or a class the schema lacks.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.errors import InputNotFoundError, InvalidParameterError, UnreadableVectorError

MAX_CODE = 65535
"""Largest raster code a mapping may list (rasters are mapped through a lookup table)."""

CodeMapSpec = Mapping[Any, int | str] | Path | str
"""What a caller may pass as a code map: pairs, a TOML/JSON file, or the inline form."""

_EXAMPLE = "e.g. --code-map '311=forest,312=forest,511=water' or a TOML file of 311 = \"forest\""


@dataclass(frozen=True, slots=True)
class CodeMap:
    """Source values (as `value_key` strings) to class ids; 255 = ignore on purpose.

    Attributes:
        pairs: ``(value, class id)`` pairs in the order given.
        origin: Where the pairs came from (a file, ``"inline"``, ``"mapping"``, or
            ``"class names"``), for messages and provenance.
        by_name: The pairs are the schema's class names: values match ignoring case, and
            a value that is no class name is an error rather than unmapped.
    """

    pairs: tuple[tuple[str, int], ...]
    origin: str = "mapping"
    by_name: bool = False
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fold = str.casefold if self.by_name else str
        object.__setattr__(self, "_index", {fold(k): v for k, v in self.pairs})

    @classmethod
    def from_schema(cls, schema: ClassSchema) -> CodeMap:
        """Class names to their ids, matched ignoring case."""
        return cls(tuple((c.name, c.id) for c in schema), "class names", by_name=True)

    def lookup(self, key: str) -> int | None:
        """The class id of a `value_key`, or ``None`` when the mapping does not list it."""
        return self._index.get(key.casefold() if self.by_name else key)

    def ids(self, values: Iterable[object]) -> np.ndarray:
        """Class ids of source values as ``int16``, -1 where unmapped."""
        found = (self.lookup(value_key(v)) for v in values)
        return np.array([-1 if i is None else i for i in found], dtype="int16")

    def code_table(self) -> np.ndarray:
        """The lookup table of raster codes ``0..65535``: ``int16`` class ids, -1 unmapped.

        Call `check_codes` first; keys that are no such code are left out.
        """
        table = np.full(MAX_CODE + 1, -1, dtype="int16")
        for key, cid in self.pairs:
            if _is_code(key):
                table[int(key)] = cid
        return table

    def check_codes(self, path: Path) -> None:
        """Check every key is an integer raster code ``0..65535``.

        Raises:
            InvalidParameterError: A key is a name or out of range (it could never match).
        """
        bad = [k for k, _ in self.pairs if not _is_code(k)]
        if bad:
            raise InvalidParameterError(
                f"code map {self.origin} lists {bad[:5]}, but the pixels of the raster {path} "
                f"are integer codes 0..{MAX_CODE}: map its codes, {_EXAMPLE}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (store attrs and the resume signature)."""
        return {"origin": self.origin, "by_name": self.by_name, "values": dict(self.pairs)}


def value_key(value: object) -> str:
    """A source value as the string a mapping key is compared with.

    Integers and integer-valued floats print as integers (``10.0`` → ``"10"``); text is
    stripped of surrounding blanks.
    """
    if isinstance(value, bool | np.bool_):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def load_code_map(spec: CodeMapSpec | CodeMap, schema: ClassSchema | None) -> CodeMap:
    """Read a code map from pairs, a TOML/JSON file, or the inline ``value=class,...`` form.

    A string is a file when one exists at that path, else the inline form. Targets are
    class ids, class names of ``schema`` (ignoring case), or ``"ignore"`` (255).

    Args:
        spec: The code map (see the module docs); a `CodeMap` is returned as is.
        schema: The classes targets must lie in; without one, ids ``0..254``.

    Returns:
        The validated mapping.

    Raises:
        InputNotFoundError: ``spec`` names no file and is not of the inline form.
        InvalidParameterError: A file that is not a flat table, a malformed pair, a
            duplicate value, or a target that is no class of the schema.
    """
    if isinstance(spec, CodeMap):
        return spec
    if isinstance(spec, Mapping):
        return _build(spec.items(), "mapping", schema)
    path = Path(spec)
    if path.is_file():
        return _build(_read_file(path).items(), str(path), schema)
    if isinstance(spec, str) and "=" in spec:
        return _build(_parse_inline(spec), "inline", schema)
    raise InputNotFoundError(
        f"code map {spec} is neither an existing file nor of the form value=class,...: check "
        f"the path, or write the pairs inline, {_EXAMPLE}"
    )


def map_codes(codes: np.ndarray, mapping: CodeMap) -> tuple[np.ndarray, dict[str, int]]:
    """Class ids of one tile of raster codes, and the pixels of each unmapped code.

    Args:
        codes: Codes as floats, NaN where the raster has nodata or no data at all.
        mapping: The code map (its keys checked with `CodeMap.check_codes`).

    Returns:
        ``uint8`` class ids (255 where nodata or unmapped) and ``{code: pixels}`` of the
        codes the mapping does not list.
    """
    valid = ~np.isnan(codes)
    whole = valid & (codes >= 0) & (codes <= MAX_CODE) & (codes == np.floor(codes))
    index = np.where(whole, codes, -1).astype("int64")
    out, unmapped = apply_ids(index, mapping.code_table())
    keys = {value_key(int(i)): n for i, n in unmapped.items()}
    other, counts = np.unique(codes[valid & ~whole], return_counts=True)
    for value, n in zip(other.tolist(), counts.tolist(), strict=True):
        keys[value_key(value)] = keys.get(value_key(value), 0) + int(n)
    return out, keys


def index_values(
    values: Sequence[object], mapping: CodeMap, *, where: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Each value's index among the distinct values, their class ids and their keys.

    Args:
        values: The source values (e.g. a vector field's, one per feature).
        mapping: The code map.
        where: The source and field, for the error message.

    Returns:
        ``int32`` indices into the distinct values, their ``int16`` class ids (-1 where
        unmapped), and their `value_key` strings.

    Raises:
        UnreadableVectorError: With a mapping of class names, values that are none.
    """
    index, uniques = pd.factorize(np.asarray(values, dtype=object))
    keys = [value_key(v) for v in uniques]
    ids = mapping.ids(keys)
    unknown = sorted({k for k, i in zip(keys, ids, strict=True) if i < 0})
    if mapping.by_name and unknown:
        raise UnreadableVectorError(
            f"{where} holds {unknown[:10]}, which are no class names of the schema "
            f"{[k for k, _ in mapping.pairs]} (ignoring case): pass --code-map "
            f"'{unknown[0]}=<class name or id>,...' (or =ignore), or rename the values"
        )
    return index.astype("int32"), ids, keys


def apply_ids(index: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Look up ``ids[index]`` per pixel (-1 in ``index``: no value; -1 in ``ids``: unmapped).

    Returns:
        ``uint8`` class ids (255 where no value or unmapped) and ``{index: pixels}`` of
        the unmapped indices present.
    """
    out = np.full(index.shape, IGNORE_ID, dtype="uint8")
    inside = index >= 0
    if not ids.size or not inside.any():
        return out, {}
    table = np.where(ids < 0, IGNORE_ID, ids).astype("uint8")
    out[inside] = table[index[inside]]
    counts = np.bincount(index[inside], minlength=ids.size)
    missing = np.flatnonzero((counts > 0) & (ids < 0))
    return out, {int(i): int(counts[i]) for i in missing}


def _is_code(key: str) -> bool:
    """Whether a key is a raster code as `value_key` writes it (``"10"``, not ``"010"``)."""
    return key.isascii() and key.isdigit() and str(int(key)) == key and int(key) <= MAX_CODE


def _read_file(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError is a ValueError
        raise InvalidParameterError(
            f"code map {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} "
            f'({exc}): write value = class pairs, e.g. 311 = "forest"'
        ) from exc
    if not isinstance(doc, Mapping):
        raise InvalidParameterError(
            f'code map {path} holds a {type(doc).__name__}; expected an object {{"311": '
            '"forest", "511": 0}} of value: class pairs'
        )
    return doc


def _parse_inline(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in text.split(","):
        key, sep, target = item.partition("=")
        if not sep or not key.strip() or not target.strip():
            raise InvalidParameterError(
                f"code map {text!r}: {item.strip()!r} is not of the form value=class: {_EXAMPLE}"
            )
        pairs.append((key, target.strip()))
    return pairs


def _build(items: Iterable[tuple[Any, Any]], origin: str, schema: ClassSchema | None) -> CodeMap:
    pairs: dict[str, int] = {}
    for raw, target in items:
        key = value_key(raw)
        if not key:
            raise InvalidParameterError(f"code map {origin} has an empty value: remove it")
        cid = _target_id(key, target, origin, schema)
        if pairs.get(key, cid) != cid:
            raise InvalidParameterError(
                f"code map {origin} maps {key!r} to both {pairs[key]} and {cid}: keep one"
            )
        pairs[key] = cid
    if not pairs:
        raise InvalidParameterError(f"code map {origin} is empty: add value = class pairs")
    return CodeMap(tuple(pairs.items()), origin)


def _target_id(key: str, target: Any, origin: str, schema: ClassSchema | None) -> int:
    """The class id a mapping target (id, digits, class name or "ignore") stands for."""
    where = f"code map {origin}: {key!r} ->"
    n = len(schema) if schema is not None else IGNORE_ID
    if isinstance(target, str) and _is_code(target.strip()):
        target = int(target)
    if isinstance(target, int) and not isinstance(target, bool):
        if 0 <= target < n or target == IGNORE_ID:
            return target
        of = f"the {n} classes of the schema {list(schema.names)}" if schema else "class ids"
        raise InvalidParameterError(
            f"{where} {target} is no class id: expected 0..{n - 1} ({of}) or {IGNORE_ID} "
            "(ignore): fix the target"
        )
    if not isinstance(target, str):
        raise InvalidParameterError(
            f"{where} {target!r}: expected a class id or a class name: write e.g. "
            f'{key} = "forest" or {key} = 1'
        )
    name = target.strip().casefold()
    by_name = {c.name.casefold(): c.id for c in schema} if schema is not None else {}
    if name in by_name:
        return by_name[name]
    if name == "ignore":
        return IGNORE_ID
    if schema is None:
        raise InvalidParameterError(
            f"{where} {target!r} is a class name, but no class schema names the classes: "
            "pass --classes schema.toml, or map to class ids"
        )
    close = difflib.get_close_matches(name, by_name, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "map it to one of them or to 'ignore'"
    raise InvalidParameterError(
        f"{where} {target!r} is no class of the schema {list(schema.names)}: {hint}"
    )
