"""Scene discovery through a STAC API: a real pystac-client against a small STAC API
served on loopback from the demo catalog, and the ingest flow's search step."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import pytest
from fastapi import FastAPI, Request  # module level: FastAPI resolves annotations here

CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
]


def _app(items: list[dict[str, Any]]) -> Any:
    """A minimal STAC API (landing page + /search with bbox, datetime, collections, query)."""
    app = FastAPI()

    def landing(base: str) -> dict[str, Any]:
        return {
            "type": "Catalog",
            "id": "test-api",
            "stac_version": "1.0.0",
            "description": "loopback STAC API for tests",
            "conformsTo": CONFORMS,
            "links": [
                {"rel": "self", "href": base, "type": "application/json"},
                {"rel": "root", "href": base, "type": "application/json"},
                {
                    "rel": "search",
                    "href": f"{base}/search",
                    "type": "application/geo+json",
                    "method": "GET",
                },
                {
                    "rel": "search",
                    "href": f"{base}/search",
                    "type": "application/geo+json",
                    "method": "POST",
                },
            ],
        }

    def matches(item: dict[str, Any], params: dict[str, Any]) -> bool:
        if params.get("collections") and item.get("collection") not in params["collections"]:
            return False
        if params.get("bbox"):
            w, s, e, n = params["bbox"]
            iw, is_, ie, in_ = item["bbox"]
            if iw > e or ie < w or is_ > n or in_ < s:
                return False
        if params.get("datetime"):
            start, _, end = str(params["datetime"]).partition("/")
            when = item["properties"]["datetime"][:10]
            if (start not in ("", "..") and when < start[:10]) or (
                end not in ("", "..") and when > end[:10]
            ):
                return False
        limit = (params.get("query") or {}).get("eo:cloud_cover", {}).get("lt")
        return limit is None or item["properties"].get("eo:cloud_cover", 0) < limit

    @app.get("/")
    def root(request: Request) -> dict[str, Any]:
        return landing(str(request.base_url).rstrip("/"))

    @app.get("/conformance")
    def conformance() -> dict[str, Any]:
        return {"conformsTo": CONFORMS}

    @app.post("/search")
    async def search(request: Request) -> dict[str, Any]:
        params = await request.json()
        found = [i for i in items if matches(i, params)]
        return {"type": "FeatureCollection", "features": found, "links": []}

    return app


@pytest.fixture(scope="module")
def stac_api(demo_data) -> Iterator[str]:  # type: ignore[no-untyped-def]
    import uvicorn

    catalog = pystac.read_file(str(demo_data.catalog))
    items = []
    for item in catalog.get_items(recursive=True):  # type: ignore[attr-defined]
        item.make_asset_hrefs_absolute()
        d = item.to_dict(include_self_link=False)
        d["collection"] = "s2-demo"
        d["links"] = []
        items.append(d)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(_app(items), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_search_saves_a_static_catalog(stac_api: str, demo_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from eoseg.catalog import discover_scenes
    from eoseg.stac import search_stac

    west, south, east, north = demo_data.clean_bbox
    path = search_stac(
        stac_api,
        tmp_path / "found",
        collections=["s2-demo"],
        bbox=(west, south, east, north),
        datetime="2024-06-01/2024-06-30",
        max_cloud=80.0,
    )
    scenes = discover_scenes([path])
    assert 1 <= len(scenes) <= 2
    assert all(s.band_names == ("B02", "B03", "B04", "B08") for s in scenes)
    saved = json.loads(path.read_text())
    assert saved["type"] == "Catalog"


def test_search_with_no_result_is_a_clear_error(stac_api: str, tmp_path: Path) -> None:
    from eoseg.errors import InputNotFoundError
    from eoseg.stac import search_stac

    with pytest.raises(InputNotFoundError, match="found no items"):
        search_stac(
            stac_api,
            tmp_path / "none",
            collections=["s2-demo"],
            bbox=(100.0, 10.0, 101.0, 11.0),
            datetime=None,
            max_cloud=None,
        )


@pytest.mark.flow
@pytest.mark.slow
def test_ingest_flow_searches_and_reports(
    prefect_server,
    stac_api: str,
    client,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """A real flow run: STAC API search → static catalog → ingest → run report artifact."""
    from prefect.artifacts import Artifact

    from flows.ingest import ingest_flow

    report = ingest_flow(
        out=str(tmp_path / "cube.zarr"),
        stac_api=stac_api,
        collections=["s2-demo"],
        dates="2024-06-01/2024-06-30",
        tile_size=128,
        scheduler=client.scheduler.address,
    )
    assert len(report["scenes"]) == 2 and report["tiles_written"] == report["tiles"]
    assert (tmp_path / "cube.items" / "catalog.json").exists()
    artifact = Artifact.get("ingest-report")
    assert artifact is not None and "scenes used | 2" in str(artifact.data)
