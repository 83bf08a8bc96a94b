"""Pieces of polygons with their pixel statistics, and the merge of polygons under a
minimum area into a neighbour.

Polygons under ``--min-area`` are merged into the neighbour they share an edge with that
has the largest area (as GDAL's sieve filter does; ties: the lower index, so the result
is reproducible), smallest first, until every polygon that has a neighbour reaches the
minimum. A polygon with no neighbour (surrounded by nodata or the map's edge) stays as it
is: dropping it would lose mapped area and no neighbour can take its place. Merging can
bring two polygons of one class together (a small polygon between them joins one): those
are dissolved into one, so no edge separates two polygons of the same class. Everything
runs on pixel outlines (integer grid coordinates), so shared edges are exact and the
coverage stays gap-free.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import shapely


@dataclass(frozen=True, slots=True)
class Pieces:
    """Polygons of a class map in grid pixel coordinates, with what their pixels hold.

    Attributes:
        geometry: One Polygon per entry (x = column, y = row of the whole grid).
        class_id: Class of each polygon.
        pixels: Number of pixels of each polygon.
        area_m2: Area of each polygon's pixels on the WGS84 ellipsoid (`eoseg.stats`).
        confidence: Sum of the map's ``confidence`` (0-255) over each polygon's pixels.
    """

    geometry: np.ndarray
    class_id: np.ndarray
    pixels: np.ndarray
    area_m2: np.ndarray
    confidence: np.ndarray

    def take(self, index: np.ndarray) -> Pieces:
        """The pieces at ``index``."""
        return Pieces(*(np.asarray(v)[index] for v in _fields(self)))


def merge_small(pieces: Pieces, min_area_m2: float) -> Pieces:
    """Merge every polygon under ``min_area_m2`` into its largest neighbour (module docs).

    Args:
        pieces: Polygons of a class map in pixel coordinates (a coverage).
        min_area_m2: Minimum area on the ellipsoid (m²).

    Returns:
        The merged polygons; each takes the class of the polygon that absorbed the others
        and the sums of their statistics.
    """
    small = np.flatnonzero(pieces.area_m2 < min_area_m2)
    if len(small) == 0:
        return pieces
    neighbours = _neighbours(pieces.geometry, small)
    parent = np.arange(len(pieces.geometry))
    area = pieces.area_m2.astype(np.float64).copy()

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    heap = [(float(area[i]), int(i)) for i in small]
    heapq.heapify(heap)
    while heap:
        a, i = heapq.heappop(heap)
        if find(i) != i or a != area[i] or a >= min_area_m2:
            continue  # absorbed, grown since pushed, or big enough
        around = {find(j) for j in neighbours.get(i, ())} - {i}
        if not around:
            continue  # an island in nodata: kept
        target = max(around, key=lambda j: (area[j], -j))
        parent[i] = target
        area[target] += area[i]
        neighbours.setdefault(target, set()).update(neighbours.get(i, ()))
        if area[target] < min_area_m2:
            heapq.heappush(heap, (float(area[target]), target))
    roots = np.array([find(i) for i in range(len(parent))])
    classes = pieces.class_id[roots]
    _dissolve_same_class(neighbours, parent, classes, find)
    roots = np.array([find(i) for i in range(len(parent))])
    unique, group = np.unique(roots, return_inverse=True)
    return combine(pieces, group, len(unique), class_id=pieces.class_id[unique])


def _dissolve_same_class(
    neighbours: dict[int, set[int]], parent: np.ndarray, classes: np.ndarray, find: object
) -> None:
    """Join neighbouring groups of one class (brought together by a merge)."""
    for i, around in neighbours.items():
        for j in around:
            a, b = find(i), find(j)  # type: ignore[operator]
            if a != b and classes[a] == classes[b]:
                parent[max(a, b)] = min(a, b)


def _neighbours(geoms: np.ndarray, small: np.ndarray) -> dict[int, set[int]]:
    """Polygons sharing an edge (not just a corner) with each small polygon, both ways."""
    left, right = shapely.STRtree(geoms).query(geoms[small], predicate="intersects")
    left = small[left]
    keep = left != right
    left, right = left[keep], right[keep]
    shared = shapely.length(shapely.intersection(geoms[left], geoms[right])) > 0
    out: dict[int, set[int]] = {}
    for i, j in zip(left[shared].tolist(), right[shared].tolist(), strict=True):
        out.setdefault(i, set()).add(j)
        out.setdefault(j, set()).add(i)
    return out


def combine(
    pieces: Pieces, group: np.ndarray, n_groups: int, *, class_id: np.ndarray | None = None
) -> Pieces:
    """One piece per group: the union of its members' outlines (they share edges, so it is
    one Polygon), the sums of their statistics, and ``class_id`` (one per group; default:
    the class of the group's first member, for groups of one class)."""
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(n_groups))
    geoms = np.empty(n_groups, dtype=object)
    for g, members in enumerate(np.split(order, starts[1:])):
        if len(members) == 1:
            geoms[g] = pieces.geometry[members[0]]
            continue
        parts = _polygons(shapely.union_all(pieces.geometry[members]))
        if len(parts) != 1:
            raise RuntimeError(f"pieces sharing edges made {len(parts)} polygons, not one")
        geoms[g] = parts[0]

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=values, minlength=n_groups)

    return Pieces(
        geoms,
        pieces.class_id[order[starts]] if class_id is None else class_id,
        total(pieces.pixels).astype(np.int64),
        total(pieces.area_m2),
        total(pieces.confidence),
    )


def _fields(pieces: Pieces) -> tuple[np.ndarray, ...]:
    return (pieces.geometry, pieces.class_id, pieces.pixels, pieces.area_m2, pieces.confidence)


def empty() -> Pieces:
    return Pieces(
        np.empty(0, dtype=object),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0),
        np.empty(0),
    )


def concat(parts: list[Pieces]) -> Pieces:
    if not parts:
        return empty()
    return Pieces(*(np.concatenate(cols) for cols in zip(*map(_fields, parts), strict=True)))


def _polygons(geom: shapely.Geometry) -> list[shapely.Geometry]:
    return [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and not p.is_empty]
