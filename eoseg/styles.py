"""QGIS styles of the products, so that QGIS shows class colours and names on open.

QGIS loads ``<name>.qml`` beside a file-based layer as its default style (``map.tif`` ->
``map.qml``; a GeoPackage's ``layer_styles`` table would come first, but GDAL then lists
that table as a second layer, and readers that take the first layer warn).
A class COG gets a paletted renderer (colour and name of each class id), a confidence
COG a grey ramp over 1..255 (0 is nodata), polygons a categorized fill on ``class_id``.
Each style file carries `STYLE_MARK` so that eoseg replaces only its own styles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from xml.sax.saxutils import quoteattr

from eoseg.classes import ClassSchema
from eoseg.errors import OutputExistsError
from eoseg.storage import Location, is_url, resolve

StyleKind = Literal["class", "confidence", "polygons"]
STYLE_MARK = "<!-- eoseg_product: style -->"
"""The comment that marks a .qml file as written by eoseg."""
_QGIS_VERSION = "3.28.0"
"""The QGIS version the styles declare (an LTR; later versions read them too)."""


def style_path(product: Path | str) -> Path | str:
    """Where QGIS looks for a file's default style: ``<name>.qml`` beside it (a URL for a
    product on object storage)."""
    if is_url(product):
        stem = str(product).rsplit("/", 1)
        name = stem[1].rsplit(".", 1)[0] if "." in stem[1] else stem[1]
        return f"{stem[0]}/{name}.qml"
    return Path(product).with_suffix(".qml")


def check_style(product: Path | str, flag: str) -> None:
    """Refuse to write a product whose ``.qml`` path holds a file eoseg did not write.

    Raises:
        OutputExistsError: Naming the file and what to do.
    """
    path = resolve(style_path(product))
    if path.is_dir() or (path.exists() and STYLE_MARK not in _head(path)):
        raise OutputExistsError(
            f"{path} is not a style eoseg wrote, but eoseg writes the QGIS style of {flag} "
            f"{product} there: move it away, or choose another {flag}"
        )


def _head(path: Location) -> str:
    with path.fs.open(path.path, "rb") as f:
        return bytes(f.read(4096)).decode("utf-8", "replace")


def raster_style(schema: ClassSchema) -> str:
    """A paletted style of a class COG: each class id's colour and name, 255 transparent."""
    entries = "\n".join(
        f'        <paletteEntry value="{c.id}" color="{c.color}" alpha="255" '
        f"label={quoteattr(c.name)}/>"
        for c in schema
    )
    renderer = (
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" '
        'nodataColor="">\n'
        "      <rasterTransparency/>\n"
        f"      <colorPalette>\n{entries}\n      </colorPalette>\n"
        "    </rasterrenderer>"
    )
    return _document(f"  <pipe>\n{renderer}\n  </pipe>", "Symbology")


def confidence_style() -> str:
    """A grey ramp of a confidence COG: black = 1 (low), white = 255 (sure)."""
    renderer = (
        '    <rasterrenderer type="singlebandgray" grayBand="1" gradient="BlackToWhite" '
        'opacity="1" alphaBand="-1" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <contrastEnhancement>\n"
        "        <minValue>1</minValue>\n        <maxValue>255</maxValue>\n"
        "        <algorithm>StretchToMinimumMaximum</algorithm>\n"
        "      </contrastEnhancement>\n"
        "    </rasterrenderer>"
    )
    return _document(f"  <pipe>\n{renderer}\n  </pipe>", "Symbology")


def polygon_style(schema: ClassSchema, field: str = "class_id") -> str:
    """A categorized style of polygons: the fill colour and name of each class id."""
    categories = "\n".join(
        f'      <category value="{c.id}" symbol="{i}" label={quoteattr(c.name)} render="true"/>'
        for i, c in enumerate(schema)
    )
    symbols = "\n".join(_fill_symbol(i, c.rgb()) for i, c in enumerate(schema))
    renderer = (
        f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" '
        'enableorderby="0" forceraster="0">\n'
        f"    <categories>\n{categories}\n    </categories>\n"
        f"    <symbols>\n{symbols}\n    </symbols>\n"
        "  </renderer-v2>"
    )
    return _document(renderer, "Symbology")


def _fill_symbol(name: int, rgb: tuple[int, int, int]) -> str:
    color = ",".join(map(str, (*rgb, 255)))
    return (
        f'      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
        '          <Option type="Map">\n'
        f'            <Option name="color" type="QString" value="{color}"/>\n'
        '            <Option name="outline_style" type="QString" value="no"/>\n'
        '            <Option name="style" type="QString" value="solid"/>\n'
        "          </Option>\n"
        "        </layer>\n"
        "      </symbol>"
    )


def _document(body: str, categories: str) -> str:
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        f"{STYLE_MARK}\n"
        f'<qgis version="{_QGIS_VERSION}" styleCategories="{categories}">\n'
        f"{body}\n"
        "  <blendMode>0</blendMode>\n"
        "</qgis>\n"
    )


def write_style(product: Path | str, qml: str) -> Path | str:
    """Write ``qml`` as the default style of ``product`` (atomically, beside it)."""
    path = style_path(product)
    resolve(path).write_text(qml)
    return path
