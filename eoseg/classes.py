"""Class schemas: the land classes a map uses, their ids, names and colours.

Class ids are ``uint8``; 255 means *ignore* in labels and *nodata* in class maps.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from eoseg.errors import InvalidParameterError

IGNORE_ID = 255
"""Label id of pixels that carry no label; also the class map's nodata."""


@dataclass(frozen=True, slots=True)
class LandClass:
    """One land class.

    Attributes:
        id: Class id stored in labels and class maps (0-254).
        name: Short name, unique in its schema.
        color: Display colour as ``#RRGGBB``.
    """

    id: int
    name: str
    color: str

    def rgb(self) -> tuple[int, int, int]:
        """The colour as an ``(r, g, b)`` tuple of 0-255 ints."""
        h = self.color.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


@dataclass(frozen=True, slots=True)
class ClassSchema:
    """An ordered set of land classes with contiguous ids ``0..n-1``."""

    classes: tuple[LandClass, ...]

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise InvalidParameterError(
                f"class ids must be 0..{len(ids) - 1} in order; found {ids}: renumber the schema"
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

    def to_dict(self) -> list[dict[str, Any]]:
        """A JSON-friendly list of ``{"id", "name", "color"}``."""
        return [{"id": c.id, "name": c.name, "color": c.color} for c in self.classes]

    @classmethod
    def from_dict(cls, items: list[Mapping[str, Any]]) -> ClassSchema:
        """Build a schema from the output of `to_dict`."""
        return cls(tuple(LandClass(int(i["id"]), str(i["name"]), str(i["color"])) for i in items))


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
