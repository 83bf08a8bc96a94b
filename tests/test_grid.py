from __future__ import annotations

import pytest
from odc.geo.geom import BoundingBox

from eoseg.errors import GeoreferenceError, InvalidParameterError, NoOverlapError
from eoseg.grid import describe_grid, iter_tiles, make_grid, parse_bbox, parse_crs


def test_tiles_cover_grid_exactly_once() -> None:
    fp = BoundingBox(500000, 5300000, 501230, 5300770, crs="EPSG:32632").polygon
    grid = make_grid([fp], parse_crs("EPSG:32632"), 10.0)
    tiles = list(iter_tiles(grid, 50))
    covered = sum(t.height * t.width for t in tiles)
    assert covered == grid.shape.y * grid.shape.x == 123 * 77
    assert {(t.row, t.col) for t in tiles} == {(r, c) for r in range(2) for c in range(3)}
    assert tiles[-1].height == 77 - 50 and tiles[-1].width == 123 - 100


def test_grid_snaps_to_origin_and_reprojects() -> None:
    fp = BoundingBox(500003, 5300001, 500997, 5300999, crs="EPSG:32632").polygon
    grid = make_grid([fp], parse_crs("32632"), 10.0, origin=(3.0, 1.0))
    assert grid.affine.c == 500003 and grid.affine.f == 5300999 + 2  # snapped outward
    other = make_grid([fp], parse_crs("EPSG:32633"), 10.0)
    assert other.crs.epsg == 32633 and other.affine.c % 10 == 0


def test_non_square_grid_keeps_its_corner_and_pixel_sizes() -> None:
    """(x, y) pixel sizes: the origin's corner stays exact, other edges snap by whole pixels."""
    ox, oy = 500003.7, 5300001.3
    scene = BoundingBox(ox, oy - 50 * 12.0, ox + 100 * 10.0, oy, crs="EPSG:32632").polygon
    grid = make_grid([scene], parse_crs("EPSG:32632"), (10.0, 12.0), origin=(ox, oy))
    assert tuple(grid.affine)[:6] == (10.0, 0.0, ox, 0.0, -12.0, oy)
    assert (grid.shape.y, grid.shape.x) == (50, 100)
    assert describe_grid(grid)["resolution"] == [10.0, 12.0]
    # A second footprint 5 m west and 30 m south: one more column, three more rows.
    other = BoundingBox(ox - 5, oy - 50 * 12.0 - 30, ox + 10, oy - 12, crs="EPSG:32632").polygon
    wider = make_grid([scene, other], parse_crs("EPSG:32632"), (10.0, 12.0), origin=(ox, oy))
    assert (wider.affine.c, wider.affine.f) == (ox - 10.0, oy)
    assert (wider.shape.y, wider.shape.x) == (53, 101)
    square = make_grid([scene], parse_crs("EPSG:32632"), 10.0, origin=(ox, oy))
    assert describe_grid(square)["resolution"] == 10.0 and square.shape.y == 60


def test_bbox_outside_sources_is_refused() -> None:
    fp = BoundingBox(500000, 5300000, 501000, 5301000, crs="EPSG:32632").polygon
    with pytest.raises(NoOverlapError, match="does not overlap"):
        make_grid([fp], parse_crs("EPSG:32632"), 10.0, bbox=(100.0, 10.0, 101.0, 11.0))


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "5,0,1,1"], ids=["three", "nan", "empty"])
def test_parse_bbox_errors(text: str) -> None:
    with pytest.raises(InvalidParameterError, match="box"):
        parse_bbox(text)


def test_parse_crs_error() -> None:
    with pytest.raises(GeoreferenceError, match="could not parse CRS"):
        parse_crs("EPSG:not-a-code")
