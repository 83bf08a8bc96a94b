"""Class schemas: the land classes a map uses, their ids, names, colours and OSM tag rules.

Class ids are ``uint8``; 255 means *ignore* in labels and *nodata* in class maps.

A schema can be written as TOML and read with `load_schema`. Each class may carry OSM
tag rules (``key=value``, or ``key=*`` for any value) that say which OpenStreetMap
features become noisy labels of that class, and buffer rules that turn line features
(roads, rivers) into polygons of a given half-width in metres::

    ignore = 255

    [[class]]
    id = 0
    name = "water"
    color = "#1f78b4"
    osm = ["natural=water", "waterway=riverbank", "landuse=reservoir"]

    [[class]]
    id = 1
    name = "road"
    color = "#404040"
    osm = ["highway=*"]

    [class.buffer]            # metres on each side of the line, per tag
    "highway=motorway" = 12.0
    "highway=primary" = 8.0
    "highway=*" = 4.0

Classes are listed in id order (ids ``0..n-1``); a feature takes the first class whose
``osm`` rules match it. See `eoseg.osm` for how the rules are applied.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eoseg.errors import InputNotFoundError, InvalidParameterError

IGNORE_ID = 255
"""Label id of pixels that carry no label; also the class map's nodata."""

_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_CLASS_KEYS = ("id", "name", "color", "osm", "buffer")


@dataclass(frozen=True, slots=True)
class TagRule:
    """One OSM tag rule: ``key=value``, or ``key=*`` for any value but ``no``.

    Attributes:
        key: OSM tag key, e.g. ``"natural"``.
        value: Required value, or ``None`` for any value (``key=*``).
    """

    key: str
    value: str | None

    @classmethod
    def parse(cls, text: str) -> TagRule:
        """Parse ``"key=value"`` or ``"key=*"``.

        Raises:
            InvalidParameterError: The text is not of that form.
        """
        key, sep, value = str(text).partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise InvalidParameterError(
                f"OSM tag rule {text!r} is not of the form 'key=value' or 'key=*': "
                "write e.g. 'natural=water' or 'highway=*'"
            )
        return cls(key, None if value == "*" else value)

    def matches(self, tags: Mapping[str, str]) -> bool:
        """Whether a feature with these tags matches the rule."""
        return self.matches_value(tags.get(self.key))

    def matches_value(self, value: str | None) -> bool:
        """Whether a tag value (``None`` when the key is absent) matches the rule."""
        if value is None or value == "":
            return False
        return value != "no" if self.value is None else value == self.value

    def __str__(self) -> str:
        return f"{self.key}={'*' if self.value is None else self.value}"


@dataclass(frozen=True, slots=True)
class LandClass:
    """One land class.

    Attributes:
        id: Class id stored in labels and class maps (0-254).
        name: Short name, unique in its schema.
        color: Display colour as ``#RRGGBB``.
        osm: OSM tag rules (``"key=value"`` or ``"key=*"``) of features of this class.
        buffer: ``(rule, metres)`` pairs: line features matching ``rule`` become polygons
            reaching ``metres`` on each side of the line. Exact-value rules take
            precedence over ``key=*`` rules; otherwise the first listed wins.
    """

    id: int
    name: str
    color: str
    osm: tuple[str, ...] = ()
    buffer: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        # Accept lists and mappings from callers, store hashable tuples.
        object.__setattr__(self, "osm", tuple(str(r) for r in self.osm))
        pairs = self.buffer.items() if isinstance(self.buffer, Mapping) else self.buffer
        object.__setattr__(self, "buffer", tuple((str(k), float(v)) for k, v in pairs))
        for rule in self.osm:
            TagRule.parse(rule)
        for rule, metres in self.buffer:
            TagRule.parse(rule)
            if not (math.isfinite(metres) and metres > 0):
                raise InvalidParameterError(
                    f"class {self.name!r}: buffer for {rule!r} must be a positive number of "
                    f"metres; found {metres}: give the half-width of the feature, e.g. 4.0"
                )

    def rgb(self) -> tuple[int, int, int]:
        """The colour as an ``(r, g, b)`` tuple of 0-255 ints."""
        h = self.color.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)

    @property
    def osm_rules(self) -> tuple[TagRule, ...]:
        """The parsed ``osm`` rules."""
        return tuple(TagRule.parse(r) for r in self.osm)

    @property
    def buffer_rules(self) -> tuple[tuple[TagRule, float], ...]:
        """The parsed ``buffer`` rules in precedence order (exact values before ``*``)."""
        rules = [(TagRule.parse(r), m) for r, m in self.buffer]
        return tuple(sorted(rules, key=lambda rm: rm[0].value is None))

    def matches(self, tags: Mapping[str, str]) -> bool:
        """Whether an OSM feature with these tags belongs to this class."""
        return any(rule.matches(tags) for rule in self.osm_rules)

    def buffer_for(self, tags: Mapping[str, str]) -> float | None:
        """Buffer in metres for a line feature with these tags, or ``None`` if none applies."""
        for rule, metres in self.buffer_rules:
            if rule.matches(tags):
                return metres
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict; ``osm`` and ``buffer`` appear only when set."""
        d: dict[str, Any] = {"id": self.id, "name": self.name, "color": self.color}
        if self.osm:
            d["osm"] = list(self.osm)
        if self.buffer:
            d["buffer"] = dict(self.buffer)
        return d


@dataclass(frozen=True, slots=True)
class ClassSchema:
    """An ordered set of land classes with contiguous ids ``0..n-1``."""

    classes: tuple[LandClass, ...]

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise InvalidParameterError(
                f"class ids must be 0..{len(ids) - 1} in order (they index the model's "
                f"outputs); found {ids}: renumber the schema, and translate the codes your "
                "labels carry with a code map, e.g. rasterize/evaluate --code-map "
                "'8=artificial surface,2=forest' (codes to the schema's class names)"
            )
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise InvalidParameterError(f"class names must be unique; found {names}")

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[LandClass]:
        return iter(self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in id order."""
        return tuple(c.name for c in self.classes)

    @property
    def osm_keys(self) -> tuple[str, ...]:
        """The OSM tag keys the schema's ``osm`` rules look at, in first-use order."""
        keys = (rule.key for c in self.classes for rule in c.osm_rules)
        return tuple(dict.fromkeys(keys))

    def classify(self, tags: Mapping[str, str]) -> LandClass | None:
        """The first class (in schema order) whose ``osm`` rules match the tags, if any."""
        for c in self.classes:
            if c.matches(tags):
                return c
        return None

    def to_dict(self) -> list[dict[str, Any]]:
        """A JSON-friendly list of ``{"id", "name", "color"}`` (plus ``osm``/``buffer`` if set)."""
        return [c.to_dict() for c in self.classes]

    @classmethod
    def from_dict(cls, items: Sequence[Mapping[str, Any]]) -> ClassSchema:
        """Build a schema from the output of `to_dict`."""
        return cls(
            tuple(
                LandClass(
                    int(i["id"]),
                    str(i["name"]),
                    str(i["color"]),
                    tuple(i.get("osm", ())),
                    tuple(dict(i.get("buffer", {})).items()),
                )
                for i in items
            )
        )

    def to_toml(self) -> str:
        """The schema as TOML text that `load_schema` reads back."""
        lines = [f"ignore = {IGNORE_ID}"]
        for c in self.classes:
            lines += ["", "[[class]]", f"id = {c.id}", f"name = {_toml_str(c.name)}"]
            lines.append(f"color = {_toml_str(c.color)}")
            if c.osm:
                lines.append(f"osm = [{', '.join(_toml_str(r) for r in c.osm)}]")
            if c.buffer:
                lines += ["", "[class.buffer]"]
                lines += [f"{_toml_str(r)} = {m!r}" for r, m in c.buffer]
        return "\n".join(lines) + "\n"


def _toml_str(text: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(text, ensure_ascii=False)


_PALETTE = (
    "#1f78b4",
    "#1b7837",
    "#a6dba0",
    "#fee08b",
    "#d73027",
    "#404040",
    "#762a83",
    "#e08214",
    "#8c510a",
    "#01665e",
)


def generic_schema(num_classes: int) -> ClassSchema:
    """Classes ``class_0 .. class_{n-1}`` with distinct colours, for labels without a schema."""
    return ClassSchema(
        tuple(LandClass(i, f"class_{i}", _PALETTE[i % len(_PALETTE)]) for i in range(num_classes))
    )


def load_schema(path: Path | str) -> ClassSchema:
    """Read a class schema from a TOML file (see the module docstring for the format), or
    from JSON as written by `ClassSchema.to_dict` (a list of ``{"id", "name", "color"}``).

    Args:
        path: The TOML or JSON file.

    Returns:
        The schema, classes in file order.

    Raises:
        InputNotFoundError: No such file.
        InvalidParameterError: The file is not valid TOML or not a valid schema; the
            message names the offending entry and how to fix it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"class schema {path} does not exist: check the path")
    if path.suffix.lower() == ".json":
        return _load_json_schema(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidParameterError(
            f"class schema {path} is not valid TOML ({exc}): fix the syntax at that position"
        ) from exc
    try:
        return _parse_schema(doc)
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"class schema {path}: {exc}") from exc


def _load_json_schema(path: Path) -> ClassSchema:
    try:
        return ClassSchema.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidParameterError(
            f"could not read the class schema {path} ({exc}): expected a JSON list of "
            '{"id": 0, "name": "water", "color": "#1f78b4"} entries with ids 0..n-1'
        ) from exc


def _parse_schema(doc: Mapping[str, Any]) -> ClassSchema:
    _check_keys("the top level", doc, ("ignore", "class"))
    ignore = doc.get("ignore", IGNORE_ID)
    if ignore != IGNORE_ID or isinstance(ignore, bool):
        raise InvalidParameterError(
            f"expected ignore = {IGNORE_ID} (the only supported ignore id); found {ignore!r}: "
            f"set it to {IGNORE_ID} or drop the line"
        )
    entries = doc.get("class")
    if not isinstance(entries, list) or not entries:
        raise InvalidParameterError(
            f"expected one or more [[class]] tables; found {_kind(entries)}: add a [[class]] "
            'table per class with id, name and color (e.g. id = 0, name = "water", '
            'color = "#1f78b4")'
        )
    return ClassSchema(tuple(_parse_class(n, e) for n, e in enumerate(entries)))


def _parse_class(n: int, entry: Any) -> LandClass:
    where = f"[[class]] #{n + 1}"
    if not isinstance(entry, Mapping):
        raise InvalidParameterError(f"expected {where} to be a table; found {_kind(entry)}")
    where = f"{where} ({entry.get('name', 'unnamed')!r})"
    _check_keys(where, entry, _CLASS_KEYS)
    for key in ("id", "name", "color"):
        if key not in entry:
            raise InvalidParameterError(f"{where} has no {key!r}: add {key} = ... to the table")
    cid, name, color = entry["id"], entry["name"], entry["color"]
    if not isinstance(cid, int) or isinstance(cid, bool) or not 0 <= cid < IGNORE_ID:
        raise InvalidParameterError(
            f"{where}: expected an integer id 0..{IGNORE_ID - 1}; found {cid!r}"
        )
    if not isinstance(name, str) or not name:
        raise InvalidParameterError(f"{where}: expected a non-empty string name; found {name!r}")
    if not isinstance(color, str) or not _COLOR.match(color):
        raise InvalidParameterError(
            f'{where}: expected color as "#RRGGBB"; found {color!r}: write e.g. "#1f78b4"'
        )
    osm = entry.get("osm", [])
    if not isinstance(osm, list) or not all(isinstance(r, str) for r in osm):
        raise InvalidParameterError(
            f'{where}: expected osm = a list of "key=value" strings; found {osm!r}: '
            'write e.g. osm = ["natural=water", "waterway=riverbank"]'
        )
    buffer = entry.get("buffer", {})
    if not isinstance(buffer, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in buffer.values()
    ):
        raise InvalidParameterError(
            f"{where}: expected a [class.buffer] table of tag rule = metres; found "
            f'{buffer!r}: write e.g. "highway=primary" = 8.0'
        )
    try:
        return LandClass(cid, name, color, tuple(osm), tuple(buffer.items()))
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"{where}: {exc}") from exc


def _check_keys(where: str, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "remove it"
            raise InvalidParameterError(
                f"{where} has an unknown key {key!r}; expected one of {list(allowed)}: {hint}"
            )


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


DEMO_CLASSES = ClassSchema(
    (
        LandClass(0, "water", "#1f78b4"),
        LandClass(1, "forest", "#1b7837"),
        LandClass(2, "grassland", "#a6dba0"),
        LandClass(3, "cropland", "#fee08b"),
        LandClass(4, "built-up", "#d73027"),
        LandClass(5, "road", "#404040"),
    )
)
"""The classes of the synthetic demo landscape."""
