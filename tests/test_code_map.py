"""Code maps read from pairs, files and the inline form, and applied to values and codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eoseg.classes import ClassSchema, LandClass
from eoseg.code_map import (
    CodeMap,
    apply_ids,
    index_values,
    load_code_map,
    map_codes,
    value_key,
)
from eoseg.errors import InputNotFoundError, InvalidParameterError, UnreadableVectorError

SCHEMA = ClassSchema((LandClass(0, "water", "#1f78b4"), LandClass(1, "Forest", "#1b7837")))
EXPECTED = {"311": 1, "312": 1, "511": 0, "999": 255}


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("dict", {311: "forest", 312.0: 1, "511": "WATER", "999": "ignore"}),
        ("inline", " 311=forest, 312 = 1,511=water,999=ignore"),
        ("toml", '311 = "forest"\n312 = 1\n"511" = "water"\n999 = "ignore"\n'),
        ("json", '{"311": "forest", "312": 1, "511": "water", "999": 255}'),
    ],
    ids=["dict", "inline", "toml", "json"],
)
def test_the_forms_of_a_code_map_agree(tmp_path: Path, kind: str, spec: Any) -> None:
    if kind in {"toml", "json"}:
        path = tmp_path / f"map.{kind}"
        path.write_text(spec)
        spec = path if kind == "toml" else str(path)
    mapping = load_code_map(spec, SCHEMA)
    assert dict(mapping.pairs) == EXPECTED
    assert mapping.lookup("311") == 1 and mapping.lookup("Forest") is None


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("311=forest,512", InvalidParameterError, "'512' is not of the form value=class"),
        ("311=forest,311=water", InvalidParameterError, "maps '311' to both 1 and 0"),
        ({"311": "forrest"}, InvalidParameterError, "did you mean 'forest'"),
        ({"311": 2}, InvalidParameterError, r"expected 0\.\.1"),
        ({"311": True}, InvalidParameterError, "expected a class id or a class name"),
        ({}, InvalidParameterError, "is empty"),
        ("no-such-map.toml", InputNotFoundError, "neither an existing file"),
    ],
    ids=["no-equals", "conflict", "typo", "id-outside", "bool", "empty", "missing-file"],
)
def test_bad_code_maps_are_refused(spec: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        load_code_map(spec, SCHEMA)


def test_a_file_that_is_no_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text("[1, 2]")
    with pytest.raises(InvalidParameterError, match="holds a list; expected an object"):
        load_code_map(path, SCHEMA)


def test_value_keys() -> None:
    assert [value_key(v) for v in (10, np.int64(10), 10.0, np.float32(10), " Forest ")] == [
        "10",
        "10",
        "10",
        "10",
        "Forest",
    ]
    assert value_key(10.5) == "10.5"


def test_schema_names_match_ignoring_case_and_refuse_other_names() -> None:
    mapping = CodeMap.from_schema(SCHEMA)
    index, ids, keys = index_values(["FOREST", "water", "forest"], mapping, where="f")
    assert index.tolist() == [0, 1, 2] and ids.tolist() == [1, 0, 1]
    assert keys == ["FOREST", "water", "forest"]
    with pytest.raises(UnreadableVectorError, match=r"\['Wetland'\], which are no class names"):
        index_values(["Forest", "Wetland"], mapping, where="f")


def test_codes_map_through_a_lookup_table() -> None:
    mapping = load_code_map("10=forest,80=water,60000=ignore", SCHEMA)
    codes = np.array([[10.0, 80.0, np.nan], [20.0, 60000.0, 10.5], [-3.0, 70000.0, 20.0]])
    out, unmapped = map_codes(codes, mapping)
    np.testing.assert_array_equal(out, [[1, 0, 255], [255, 255, 255], [255, 255, 255]])
    assert unmapped == {"20": 2, "10.5": 1, "-3": 1, "70000": 1}


def test_apply_ids_counts_unmapped_indices() -> None:
    index = np.array([[-1, 0, 1], [2, 2, 1]])
    out, missing = apply_ids(index, np.array([3, -1, 0], dtype="int16"))
    np.testing.assert_array_equal(out, [[255, 3, 255], [0, 0, 255]])
    assert missing == {1: 2}
