"""``eoseg products regenerate`` takes ``eoseg predict``'s options (eoseg.cli.predict_options)
and passes them to the predict of the tiles it recomputes; other settings than a tile's
recompute it, the same settings recompute nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from eoseg.cli import app
from eoseg.cli.predict_options import predict_options
from eoseg.inference import PredictOptions
from eoseg.versions import list_versions, open_repository, tile_records

runner = CliRunner()


def _regenerate(repo: Path, cube: Path, model: Path, client: Any, *extra: str) -> dict[str, Any]:
    args = ["products", "regenerate", str(repo), "--cube", str(cube), "--model", str(model),
            "--scheduler", client.scheduler.address, "--json", *extra]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def _overlaps(repo: Path) -> set[int]:
    """The overlap each tile of the product's latest version records."""
    repository = open_repository(repo)
    session = repository.readonly_session(snapshot_id=list_versions(repository)[0].id)
    return {int(r["settings"]["overlap"]) for r in tile_records(session).values()}


def test_other_overlap_recomputes_every_tile_same_settings_none(
    cube_path: Path, model_dir: Path, client: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "product"
    first = _regenerate(repo, cube_path, model_dir, client)  # the card's lattice
    tiles = first["tiles"]
    assert tiles > 1 and first["reasons"] == {"new": tiles}
    (default,) = _overlaps(repo)
    assert default != 4

    other = _regenerate(repo, cube_path, model_dir, client, "--overlap", "4")
    assert other["reasons"] == {"settings": tiles} and other["tiles_recomputed"] == tiles
    assert other["committed"] and _overlaps(repo) == {4}  # predicted with --overlap 4

    same = _regenerate(repo, cube_path, model_dir, client, "--overlap", "4")
    assert (same["tiles_recomputed"], same["committed"]) == (0, False)
    assert same["after"] == other["after"]


def test_bad_overlap_is_refused_before_any_work(
    cube_path: Path, model_dir: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "product"
    args = ["products", "regenerate", str(repo), "--cube", str(cube_path), "--model",
            str(model_dir), "--overlap", "9999"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--overlap" in result.output
    assert "Traceback" not in result.output and not repo.exists()


def test_option_defaults_are_predicts() -> None:
    assert predict_options() == PredictOptions()
    given = predict_options(32, 8, "fp32", True, "1,2")
    assert given == PredictOptions(32, 8, "fp32", True, (1, 2))
