from __future__ import annotations

from pathlib import Path

import pytest

from eoseg.classes import DEMO_CLASSES, ClassSchema, LandClass, TagRule, load_schema
from eoseg.errors import InputNotFoundError, InvalidParameterError

EXAMPLE = """\
ignore = 255

[[class]]
id = 0
name = "water"
color = "#1f78b4"
osm = ["natural=water", "waterway=riverbank", "landuse=reservoir"]

[[class]]
id = 1
name = "forest"
color = "#1b7837"
osm = ["landuse=forest", "natural=wood"]

[[class]]
id = 2
name = "road"
color = "#404040"
osm = ["highway=*"]

[class.buffer]            # line features buffered by a width in metres per tag value
"highway=*" = 4.0
"highway=motorway" = 12.0
"highway=primary" = 8.0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "classes.toml"
    path.write_text(text)
    return path


def test_example_schema_loads_with_rules(tmp_path: Path) -> None:
    schema = load_schema(write(tmp_path, EXAMPLE))
    assert schema.names == ("water", "forest", "road")
    assert schema.osm_keys == ("natural", "waterway", "landuse", "highway")
    assert schema.classify({"natural": "water"}).name == "water"  # type: ignore[union-attr]
    assert schema.classify({"landuse": "forest", "name": "x"}).id == 1  # type: ignore[union-attr]
    assert schema.classify({"highway": "residential"}).id == 2  # type: ignore[union-attr]
    assert schema.classify({"highway": "no"}) is None
    assert schema.classify({"building": "yes"}) is None
    road = schema.classes[2]
    # Exact values win over key=*, whatever the order in the file.
    assert road.buffer_for({"highway": "primary"}) == 8.0
    assert road.buffer_for({"highway": "track"}) == 4.0
    assert schema.classes[0].buffer_for({"natural": "water"}) is None


def test_first_matching_class_in_schema_order_wins() -> None:
    schema = ClassSchema(
        (
            LandClass(0, "water", "#000000", ("natural=water",)),
            LandClass(1, "any", "#ffffff", ("natural=*",)),
        )
    )
    assert schema.classify({"natural": "water"}).id == 0  # type: ignore[union-attr]
    assert schema.classify({"natural": "scrub"}).id == 1  # type: ignore[union-attr]


def test_toml_and_dict_round_trip(tmp_path: Path) -> None:
    schema = load_schema(write(tmp_path, EXAMPLE))
    again = load_schema(write(tmp_path, schema.to_toml()))
    assert again == schema
    assert ClassSchema.from_dict(schema.to_dict()) == schema
    assert load_schema(write(tmp_path, DEMO_CLASSES.to_toml())) == DEMO_CLASSES


def test_old_constructors_and_dicts_still_work() -> None:
    """Existing callers: positional LandClass, plain {id, name, color} dicts."""
    c = LandClass(3, "cropland", "#fee08b")
    assert (c.osm, c.buffer) == ((), ())
    assert DEMO_CLASSES.to_dict()[0] == {"id": 0, "name": "water", "color": "#1f78b4"}
    assert ClassSchema.from_dict(DEMO_CLASSES.to_dict()) == DEMO_CLASSES
    loose = LandClass(0, "w", "#000000", ["a=b"], {"a=b": 2})  # type: ignore[arg-type]
    assert loose == LandClass(0, "w", "#000000", ("a=b",), (("a=b", 2.0),))
    assert hash(loose) == hash(LandClass(0, "w", "#000000", ("a=b",), (("a=b", 2.0),)))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[[class]\nid = 0", "not valid TOML"),
        ("ignore = 255\n", r"expected one or more \[\[class\]\] tables"),
        ("ignore = 0\n" + EXAMPLE[13:], "expected ignore = 255"),
        ('[[class]]\nid = 0\nname = "w"\ncolour = "#000000"', "did you mean 'color'"),
        ('[[class]]\nid = 0\nname = "w"', "has no 'color'"),
        ('[[class]]\nid = 0\nname = "w"\ncolor = "blue"', r'expected color as "#RRGGBB"'),
        ('[[class]]\nid = "0"\nname = "w"\ncolor = "#000000"', "expected an integer id"),
        ('[[class]]\nid = 0\nname = "w"\ncolor = "#000000"\nosm = "natural=water"', "a list of"),
        ('[[class]]\nid = 0\nname = "w"\ncolor = "#000000"\nosm = ["natural"]', "'key=value'"),
        (
            '[[class]]\nid = 0\nname = "w"\ncolor = "#000000"\n[class.buffer]\n"highway=*" = -1',
            "positive number of metres",
        ),
        ('[[class]]\nid = 1\nname = "w"\ncolor = "#000000"', "renumber the schema"),
    ],
    ids=[
        "syntax",
        "no-classes",
        "ignore",
        "typo",
        "missing",
        "color",
        "id-type",
        "osm-type",
        "rule",
        "buffer",
        "ids",
    ],
)
def test_bad_schema_files_are_explained(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match) as info:
        load_schema(write(tmp_path, text))
    assert "classes.toml" in str(info.value)


def test_missing_schema_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        load_schema(tmp_path / "nope.toml")


def test_tag_rule_parse_and_str() -> None:
    assert TagRule.parse(" highway = * ") == TagRule("highway", None)
    assert str(TagRule.parse("natural=water")) == "natural=water"
