"""Names of issue 13: ``--code-map`` (old name ``--class-map`` hidden), and products that
open a class map without importing torch."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from eoseg.cli import app
from eoseg.cli.common import code_map_option
from eoseg.errors import InvalidParameterError

runner = CliRunner()

PRODUCT_MODULES = ("classmap", "cog", "quicklook", "styles", "mosaic", "publish", "cli.mosaic")
"""Modules that open, export, evaluate, query or mosaic a class map."""


@pytest.mark.parametrize("command", ["rasterize", "evaluate"])
def test_help_shows_code_map_only(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    assert "--code-map" in text
    assert "--class-map" not in text


def test_old_name_is_the_same_option() -> None:
    assert code_map_option("10=forest", None) == "10=forest"
    assert code_map_option(None, "10=forest") == "10=forest"
    assert code_map_option("10=forest", "10=forest") == "10=forest"
    assert code_map_option(None, None) is None
    with pytest.raises(InvalidParameterError, match="give --code-map once"):
        code_map_option("10=forest", "10=water")


def test_both_names_with_different_values_are_refused() -> None:
    args = ["evaluate", "map.zarr", "--truth", "t.tif", "--code-map", "1=2", "--class-map", "1=3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "give --code-map once" in result.stderr


def test_products_never_import_torch() -> None:
    imports = "; ".join(f"import eoseg.{m}" for m in PRODUCT_MODULES)
    code = f"{imports}; import sys; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
