"""The random-forest baseline on the real land-cover samples (marked ``realdata``, ``slow``).

The bar a U-Net trained through the CLI must clear (issue 9, "Quality on real data"):
a per-pixel forest on the same cube, training polygons and held-out truth, prepared as
`benchmarks/realdata.py` prepares them (held-out: ``lulc.tif`` outside the training
polygons for ``eolearn_slovenia``, a seeded third of the polygons for ``amazon_s2_l2a``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from benchmarks.baseline import compare
from benchmarks.realdata_samples import prepare_amazon, prepare_slovenia
from eoseg.cube import ingest
from eoseg.labels import rasterize_labels

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

# sample: (prepare, least overall accuracy, least mIoU); measured 0.846/0.367 and 1.0/1.0.
CASES = {
    "eolearn_slovenia": (prepare_slovenia, 0.80, 0.33),
    "amazon_s2_l2a": (prepare_amazon, 0.97, 0.95),
}


@pytest.mark.parametrize("sample", sorted(CASES))
def test_forest_maps_heldout_truth(real_data: Path, tmp_path: Path, sample: str) -> None:
    prepare, least_oa, least_miou = CASES[sample]
    prepared = prepare(real_data, tmp_path, 0)
    assert prepared.code_map is not None
    cube, labels = tmp_path / "cube.zarr", tmp_path / "labels.zarr"
    ingest(list(prepared.sources), cube, tile_size=64)
    rasterize_labels(
        prepared.train_labels, cube, labels, classes=prepared.classes, code_map=prepared.code_map
    )
    result = compare(
        cube, labels, prepared.truth, classes=prepared.classes, code_map=prepared.code_map
    )
    report = result.forest.report
    if prepared.truth.suffix == ".tif":
        # Every held-out pixel of lulc.tif is scored, none of the training polygons'.
        with rasterio.open(prepared.truth) as src:
            assert report.n_pixels == int((src.read(1) != 255).sum())
    assert report.overall_accuracy > least_oa
    assert report.miou > least_miou
    # The forest beats predicting the most frequent held-out class everywhere.
    assert report.overall_accuracy > np.max(report.support) / report.n_pixels
