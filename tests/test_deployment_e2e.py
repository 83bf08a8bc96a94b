"""The deployment end to end on loopback (issue 12's acceptance): real `prefect server`,
a process work pool and `prefect worker`, a `dask scheduler` and two `dask worker`
processes, the mapping deployment registered with `prefect deploy` from
deploy/prefect.local.yaml (its paths replaced by temporary ones) and triggered with
`prefect deployment run --params`.

The first run ingests the demo's static STAC catalog (the cube does not exist yet), loses
a Dask worker to SIGKILL mid-run and still publishes a product equal to an undisturbed
prediction. A second run is killed as a whole: the product keeps its version and the next
run writes only the missing tiles, then publishes. A copy of the deployment on a short
interval schedule fires on the server and its run completes.

The cube has 32 px tiles (45 of them) and the model is a U-Net of base width 32, so that
a run is still predicting when a signal follows its first tiles' records.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import yaml

from eoseg.outputs import staging_path
from eoseg.store import tile_provenance
from tests.loopback import BIN, ROOT, Services, free_port, healthy, quiet, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.flow]

DEPLOYMENT = "eoseg-mapping/monthly-landcover"
INTERVAL = "e2e-interval"
INTERVAL_S = 15
TILE = 32
WIDTH = 32


@dataclasses.dataclass
class Stack:
    services: Services
    api: str
    scheduler: str
    work: Path
    params: dict[str, Any]
    """The deployment's parameters (temporary paths)."""
    run_params: dict[str, Any]
    """The override each run is triggered with."""
    override: Path

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.api}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.api}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def trigger(self) -> str:
        """`prefect deployment run` with the parameter override; the flow run id."""
        out = self.services.cli(
            "deployment", "run", DEPLOYMENT, "--params", json.dumps(self.run_params)
        )
        found = re.search(r"UUID: ([0-9a-f-]{36})", out)
        assert found, f"no flow run id in 'prefect deployment run' output:\n{out}"
        return found.group(1)

    def state(self, run_id: str) -> str:
        return str(self.get(f"/flow_runs/{run_id}")["state"]["type"])

    def wait_final(self, run_id: str, timeout: float = 240) -> str:
        final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
        state = wait_for(
            f"flow run {run_id} to end",
            lambda: (s := self.state(run_id)) in final and s,
            timeout,
            logs=lambda: self.services.tail("worker"),
        )
        return str(state)

    def summary(self, run_id: str) -> str:
        """The run's Markdown summary artifact."""
        found = self.post(
            "/artifacts/filter",
            {"artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": ["mapping-run"]}}},
        )
        assert found, f"no mapping-run artifact for flow run {run_id}"
        return str(found[0]["data"])


def _env(work: Path, api: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(work / "prefect-home"),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MPLCONFIGDIR=str(work / "mpl"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


def _model(model_dir: Path, registry: Path) -> str:
    """The session's untrained model made `WIDTH` wide, registered as the production
    version of 'landcover' (the deployment's model name)."""
    import torch

    from eoseg.models import ModelCard, UNet, save_model
    from eoseg.registry import register, set_production

    card = ModelCard.from_dict(json.loads((model_dir / "model.json").read_text()))
    torch.manual_seed(0)
    net = UNet(len(card.bands), len(card.classes), WIDTH, card.architecture["depth"])
    arch = {**card.architecture, "base_width": WIDTH}
    out = registry.parent / "landcover-model"
    save_model(net, dataclasses.replace(card, name="landcover", architecture=arch), out)
    registered = register(out, registry)
    set_production(registry, registered.name, registered.version)
    return registered.name


def _override(work: Path, params: dict[str, Any], run_params: dict[str, Any]) -> Path:
    """deploy/prefect.local.yaml with the test's paths, pool and scheduler, plus a copy of
    the mapping deployment on a short interval schedule (deployed later, by name)."""
    doc = yaml.safe_load((ROOT / "deploy/prefect.local.yaml").read_text())
    (monthly,) = [d for d in doc["deployments"] if d["name"] == "monthly-landcover"]
    assert set(params) <= set(monthly["parameters"]), "the local override lost a parameter"
    monthly["parameters"] = {**monthly["parameters"], **params}
    interval = {
        **monthly,
        "name": INTERVAL,
        "schedules": [{"interval": INTERVAL_S}],
        "parameters": {
            **monthly["parameters"],
            **run_params,
            "out": str(work / "interval" / "classmap.zarr"),
            "product": str(work / "interval" / "product"),
        },
    }
    doc.pop("definitions")
    doc["deployments"] = [monthly, interval]
    path = work / "prefect.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stack(demo_data, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """Server, work pool, worker, Dask scheduler and two workers, the mapping deployment."""
    work = tmp_path_factory.mktemp("e2e")
    api = f"http://127.0.0.1:{free_port()}/api"
    services = Services(work, _env(work, api))
    scheduler = f"tcp://127.0.0.1:{free_port()}"
    try:
        port = api.split(":")[2].split("/")[0]
        services.start(
            "server",
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--no-ui",
            ],
        )
        dask = [str(BIN / "dask")]
        services.start(
            "scheduler",
            [
                *dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                scheduler.rsplit(":", 1)[1],
                "--no-dashboard",
            ],
        )
        for name in ("dask-1", "dask-2"):
            _dask_worker(services, name, scheduler, work)
        params = {
            "cube": str(work / "cube.zarr"),
            "model": _model(model_dir, work / "models"),
            "registry": str(work / "models"),
            "out": str(work / "maps" / "classmap.zarr"),
            "product": str(work / "product"),
            "scheduler": scheduler,
        }
        run_params = {"sources": [str(demo_data.catalog)], "tile_size": TILE}
        override = _override(work, params, run_params)
        wait_for(
            "the Prefect server's health check",
            lambda: healthy(api),
            180,
            lambda: services.tail("server"),
        )
        (pool,) = {
            d["work_pool"]["name"] for d in yaml.safe_load(override.read_text())["deployments"]
        }
        services.cli("work-pool", "create", pool, "--type", "process")
        services.start(
            "worker",
            [
                str(BIN / "prefect"),
                "worker",
                "start",
                "--pool",
                pool,
                "--type",
                "process",
                "--limit",
                "1",
            ],
        )
        services.cli("deploy", "--prefect-file", str(override), "-n", "monthly-landcover")
        yield Stack(services, api, scheduler, work, params, run_params, override)
    finally:
        services.stop()


def _dask_worker(services: Services, name: str, scheduler: str, work: Path) -> Any:
    return services.start(
        name,
        [
            str(BIN / "dask"),
            "worker",
            scheduler,
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--name",
            name,
            "--local-directory",
            str(work / "dask"),
        ],
    )


def _tile_count(cube: Path) -> int:
    from eoseg.cube import open_cube
    from eoseg.grid import iter_tiles

    ds = open_cube(cube)
    return len(list(iter_tiles(ds.odc.geobox, int(ds.attrs["tile_size"]))))


def _records(store: Path) -> int:
    folder = store / "_eoseg_tiles"
    return len(list(folder.glob("r*_c*.json"))) if folder.is_dir() else 0


def _flow_run_process(stack: Stack, run_id: str) -> psutil.Process | None:
    """The process the worker started for the flow run (it carries the run's id)."""
    worker = psutil.Process(stack.services.procs["worker"].pid)
    for proc in worker.children(recursive=True):
        with quiet():
            if proc.environ().get("PREFECT__FLOW_RUN_ID") == run_id:
                return proc
    return None


def _classes(product: Path, version: str = "latest") -> np.ndarray:
    from eoseg.versions import open_version

    return np.asarray(open_version(product, version)["class"].values)


def _versions(product: Path) -> list[str]:
    from eoseg.versions import list_versions, open_repository

    return [v.id for v in list_versions(open_repository(product))]


@pytest.fixture(scope="module")
def first_run(stack: Stack) -> dict[str, Any]:
    """The first mapping run (ingest included), one Dask worker SIGKILLed mid-predict."""
    out = Path(stack.params["out"])
    run_id = stack.trigger()
    staging = staging_path(out)
    logs = lambda: stack.services.tail("worker", "dask-1", "dask-2")  # noqa: E731

    def predicting() -> bool:
        ended = stack.state(run_id) in ("COMPLETED", "FAILED", "CRASHED")
        return _records(staging) >= 2 or ended

    wait_for("the first run's first tiles", predicting, 240, logs)
    written, total = _records(staging), _tile_count(Path(stack.params["cube"]))
    assert 0 < written < total, f"the run was not predicting when the worker was killed: {written}"
    victim = stack.services.procs["dask-1"]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    _dask_worker(stack.services, "dask-3", stack.scheduler, stack.work)  # the cluster heals
    state = stack.wait_final(run_id)
    assert state == "COMPLETED", f"run {run_id}: {state}\n{stack.services.tail()}"
    return {"run_id": run_id, "tiles": total, "killed": victim.returncode}


def test_run_survives_a_killed_dask_worker(stack: Stack, first_run: dict[str, Any]) -> None:
    """Ingest → predict → publish on the deployment; a worker lost mid-run changes nothing:
    the published classes equal an undisturbed prediction's, and the run's summary names
    the version."""
    from eoseg.cube import open_cube
    from eoseg.predict import predict
    from eoseg.registry import fetch_model

    assert first_run["killed"] == -signal.SIGKILL
    cube = Path(stack.params["cube"])
    assert int(open_cube(cube).attrs["tile_size"]) == TILE  # ingested by the run
    product = Path(stack.params["product"])
    version = _versions(product)[-1]  # the first (a later test adds one)
    model = fetch_model(stack.params["registry"], stack.params["model"])
    reference = predict(cube, model, stack.work / "reference.zarr")  # threads, undisturbed
    assert reference.tiles == first_run["tiles"] > 1
    from eoseg.predict import open_classmap

    expected = open_classmap(reference.path)["class"].values
    np.testing.assert_array_equal(_classes(product, version), expected)
    records = tile_provenance(Path(stack.params["out"]))
    assert {r["run_id"] for r in records} == {first_run["run_id"]}
    summary = stack.summary(first_run["run_id"])
    assert f"published as version `{version}`" in summary and "ingested" in summary


def test_killed_run_publishes_nothing_and_the_next_resumes(
    stack: Stack, first_run: dict[str, Any]
) -> None:
    """A run killed as a whole leaves the published version as it was; the next run writes
    only the tiles it left and publishes a new version with the same classes."""
    product, out = Path(stack.params["product"]), Path(stack.params["out"])
    before, classes = _versions(product), _classes(product)
    staging = staging_path(out)
    run_id = stack.trigger()
    logs = lambda: stack.services.tail("worker")  # noqa: E731
    proc = wait_for(
        "the run's process and its first tiles",
        lambda: _records(staging) >= 3 and _flow_run_process(stack, run_id),
        240,
        logs,
    )
    for member in [proc, *proc.children(recursive=True)]:
        with quiet():
            member.kill()
    state = stack.wait_final(run_id, timeout=120)
    assert state in ("CRASHED", "FAILED"), state
    # Tiles already running on the Dask workers finish and are kept: wait until quiet.
    counts: list[int] = []
    wait_for(
        "the killed run's last tiles",
        lambda: counts.append(_records(staging)) or counts[-40:].count(counts[-1]) == 40,
        60,
    )
    kept = {r["tile"]: r["run_id"] for r in tile_provenance(staging)}
    total = first_run["tiles"]
    assert 3 <= len(kept) < total and set(kept.values()) == {run_id}
    assert _versions(product) == before  # nothing published
    np.testing.assert_array_equal(_classes(product), classes)

    resumed = stack.trigger()
    assert stack.wait_final(resumed) == "COMPLETED", stack.services.tail()
    records = {r["tile"]: r["run_id"] for r in tile_provenance(out)}
    assert len(records) == total
    assert {t: records[t] for t in kept} == kept  # kept, not rewritten
    assert sum(run == resumed for run in records.values()) == total - len(kept)
    after = _versions(product)
    assert after[1:] == before and len(after) == 2  # a new version on top (newest first)
    np.testing.assert_array_equal(_classes(product), classes)
    np.testing.assert_array_equal(_classes(product, before[0]), classes)  # still readable
    assert f"published as version `{after[0]}`" in stack.summary(resumed)


SQLALCHEMY = tuple(int(p) for p in importlib.metadata.version("sqlalchemy").split(".")[:2])


@pytest.mark.skipif(
    SQLALCHEMY >= (2, 1),
    reason="Prefect 3.8's scheduler service bulk-inserts the scheduled runs with a hybrid "
    "property ('state') that SQLAlchemy 2.1 refuses ('Can't evaluate bulk DML statement'): "
    "no schedule ever fires; install what pyproject.toml pins (sqlalchemy<2.1)",
)
def test_interval_schedule_fires_and_its_run_completes(
    stack: Stack, first_run: dict[str, Any]
) -> None:
    """A copy of the deployment on a short interval schedule: the server schedules it, the
    worker runs it, and its product equals the first run's."""
    stack.services.cli("deploy", "--prefect-file", str(stack.override), "-n", INTERVAL)
    deployment = stack.get(f"/deployments/name/eoseg-mapping/{INTERVAL}")
    query = {"deployments": {"id": {"any_": [deployment["id"]]}}}

    def started() -> str | None:
        runs = stack.post("/flow_runs/filter", query)
        going = [r for r in runs if r["state"]["type"] in ("RUNNING", "COMPLETED")]
        return going[0]["id"] if going else None

    run_id = wait_for(
        "the interval schedule's first run to start",
        started,
        120,
        lambda: stack.services.tail("server", "worker"),
    )
    # One run is enough: pause the schedule (its later scheduled runs are removed).
    httpx.patch(f"{stack.api}/deployments/{deployment['id']}", json={"paused": True}, timeout=30)
    assert stack.wait_final(run_id) == "COMPLETED", stack.services.tail()
    run = stack.get(f"/flow_runs/{run_id}")
    assert run["auto_scheduled"] is True
    np.testing.assert_array_equal(
        _classes(stack.work / "interval" / "product"), _classes(Path(stack.params["product"]))
    )
