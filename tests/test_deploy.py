"""deploy/ is validated by the tools that will read it, offline and without a cluster.

Prefect's own deploy models and schedule/trigger builders, the flows the entrypoints
name, dask-jobqueue rendering the SLURM job scripts, the Dask operator's CRD schemas
(shipped in dask-kubernetes) and object models, the worker CLIs parsing the specs' args,
and the Dockerfiles' instructions.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import shlex
import subprocess
import sys
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import dask
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PREFECT_FILES = ("prefect.yaml", "prefect.local.yaml")
DOCKERFILES = {"cpu": DEPLOY / "docker/Dockerfile.cpu", "cuda": DEPLOY / "docker/Dockerfile.cuda"}
PLANNED = {  # flows the issue asks for; once written they must be deployed (see prefect.yaml)
    "flows/query.py:area_query": ("flows.query", "area_query"),
    "flows/regenerate.py:regenerate": ("flows.regenerate", "regenerate"),
}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _deployments(name: str) -> list[dict[str, Any]]:
    return list(_yaml(DEPLOY / name)["deployments"])


def _manifests() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((DEPLOY / "dask/kubernetes.yaml").read_text())
    return {doc["kind"]: doc for doc in docs}


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    (container,) = doc["spec"]["worker"]["spec"]["containers"]
    return container


# --- Prefect ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PREFECT_FILES)
def test_prefect_file_loads_through_prefects_deploy_model(name):
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(_yaml(DEPLOY / name))
    names = [d.name for d in model.deployments]
    assert len(names) == len(set(names)) >= 3
    for deployment in model.deployments:
        assert deployment.entrypoint and deployment.work_pool and deployment.work_pool.name


def test_process_pools_by_default_and_a_kubernetes_variant():
    by_name = {d["name"]: d for d in _deployments("prefect.yaml")}
    assert by_name["monthly-landcover"]["work_pool"]["name"] == "eoseg-process"
    k8s = by_name["monthly-landcover-k8s"]
    assert k8s["work_pool"]["name"] == "eoseg-kubernetes"
    assert k8s["work_pool"]["job_variables"]["image"].endswith("eoseg-cpu:latest")
    # The variant is the same deployment on another pool: same flow, same paths.
    base = by_name["monthly-landcover"]
    assert k8s["entrypoint"] == base["entrypoint"]
    assert k8s["schedules"] == base["schedules"]
    assert {k: v for k, v in k8s["parameters"].items() if k != "scheduler"} == {
        k: v for k, v in base["parameters"].items() if k != "scheduler"
    }


def test_kubernetes_job_variables_are_the_workers():
    worker = pytest.importorskip("prefect_kubernetes.worker", reason="eoseg[deploy] absent")
    known = set(worker.KubernetesWorkerVariables.model_fields)
    for deployment in _deployments("prefect.yaml"):
        variables = deployment["work_pool"].get("job_variables", {})
        assert set(variables) <= known, deployment["name"]
        worker.KubernetesWorkerVariables.model_validate(variables)


@pytest.mark.parametrize("name", PREFECT_FILES)
def test_schedules_are_valid_crons(name):
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.client.schemas.schedules import CronSchedule

    schedules = [s for d in _deployments(name) for s in d.get("schedules") or []]
    assert schedules, "the monthly mapping run has a schedule"
    for config in schedules:
        built = _schedule_config_to_deployment_schedule(config)  # what `prefect deploy` does
        assert isinstance(built["schedule"], CronSchedule)
        assert built["schedule"].timezone == "UTC"
    with pytest.raises(ValueError, match="Invalid cron"):
        CronSchedule(cron="0 3 32 * *")


def test_monthly_cron_fires_once_a_month():
    from prefect.server.schemas.schedules import CronSchedule

    (config,) = next(d for d in _deployments("prefect.yaml") if d["name"] == "monthly-landcover")[
        "schedules"
    ]
    schedule = CronSchedule(cron=config["cron"], timezone=config["timezone"])
    start = datetime.fromisoformat("2026-01-15T00:00:00+00:00")
    dates = asyncio.run(schedule.get_dates(n=3, start=start))
    assert [d.isoformat() for d in dates] == [
        "2026-02-02T03:00:00+00:00",
        "2026-03-02T03:00:00+00:00",
        "2026-04-02T03:00:00+00:00",
    ]


@pytest.mark.parametrize("name", PREFECT_FILES)
def test_entrypoints_are_flows_that_take_the_parameters(name, monkeypatch):
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(ROOT)  # entrypoints are relative to the directory deployed from
    for deployment in _deployments(name):
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        assert isinstance(flow, Flow), deployment["entrypoint"]
        # enforce_parameter_schema (prefect's default) refuses unknown or mistyped ones.
        params = deployment.get("parameters") or {}
        assert set(params) <= set(flow.parameters.properties), deployment["name"]
        flow.validate_parameters(params)


def test_planned_flows_are_deployed_once_written():
    entrypoints = {d["entrypoint"] for d in _deployments("prefect.yaml")}
    for entrypoint, (module, name) in PLANNED.items():
        try:
            exists = hasattr(__import__(module, fromlist=[name]), name)
        except ModuleNotFoundError:
            exists = False
        assert exists == (entrypoint in entrypoints), (
            f"{entrypoint}: {'uncomment its deployment' if exists else 'not written yet'}"
        )


def test_local_override_mirrors_the_deployments():
    main = {d["name"]: d for d in _deployments("prefect.yaml") if "-k8s" not in d["name"]}
    local = {d["name"]: d for d in _deployments("prefect.local.yaml")}
    assert set(local) == set(main)
    for name, deployment in local.items():
        assert deployment["entrypoint"] == main[name]["entrypoint"]
        assert deployment.get("schedules") == main[name].get("schedules")
        assert set(deployment["parameters"]) == set(main[name]["parameters"])
        paths = [v for k, v in deployment["parameters"].items() if k in ("cube", "out", "source")]
        assert paths and not any("://" in p for p in paths), name


def test_promotion_trigger_matches_the_event_training_emits():
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.events.schemas.events import Resource

    from flows.train import MODEL_PROMOTED, promotion_event

    specs = _yaml(DEPLOY / "triggers/model-promoted.yaml")["triggers"]
    (trigger,) = _initialize_deployment_triggers("regenerate", copy.deepcopy(specs))
    assert trigger.expect == {MODEL_PROMOTED}
    event = promotion_event("landcover", "2026-10-01")
    assert event["event"] == MODEL_PROMOTED
    assert trigger.match.matches(Resource(event["resource"]))
    assert not trigger.match.matches(Resource({"prefect.resource.id": "prefect.flow-run.x"}))
    assert "eoseg.model.name" in trigger.parameters["model"]


def test_prefect_deploy_cli_has_the_options_the_readme_uses(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "prefect", "deploy", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    for option in ("--prefect-file", "--name", "--param", "--trigger", "--all"):
        assert option in run.stdout
        assert option in (DEPLOY / "README.md").read_text()


# --- Dask on SLURM ---------------------------------------------------------------------


@pytest.fixture
def slurm_config():
    """deploy/dask/slurm.yaml as Dask would read it, over dask-jobqueue's defaults."""
    import dask_jobqueue  # noqa: F401  (loads its default configuration)

    sections = _yaml(DEPLOY / "dask/slurm.yaml")["jobqueue"]
    with dask.config.set(jobqueue={**dask.config.get("jobqueue"), **sections}):
        yield sections


def _worker_line(script: str) -> list[str]:
    (line,) = [ln for ln in script.splitlines() if " -m " in ln]
    return shlex.split(line)


def test_slurm_gpu_job_script_runs_dask_cuda_worker(slurm_config):
    from dask_jobqueue import SLURMCluster

    with SLURMCluster(config_name="slurm-gpu", scheduler_options={"dashboard_address": ":0"}) as c:
        script = c.job_script()
        address = c.scheduler_address
    assert "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH --cpus-per-task=4" in script
    assert re.search(r"#SBATCH --mem=\d+G", script)
    argv = _worker_line(script)
    assert argv[1:6] == ["-m", "dask", "cuda", "worker", address]
    assert argv[argv.index("--nthreads") + 1] == "4"
    assert argv[argv.index("--resources") + 1] == "GPU=1"
    assert not any(a.startswith("--rmm") for a in argv)


def test_slurm_cpu_job_script_parses_as_a_dask_worker(slurm_config):
    from dask_jobqueue.slurm import SLURMJob
    from distributed.cli.dask_worker import main as dask_worker

    script = SLURMJob(scheduler="tcp://10.0.0.1:8786", name="w", config_name="slurm").job_script()
    assert "#SBATCH --cpus-per-task=32" in script
    argv = _worker_line(script)
    assert argv[1:3] == ["-m", "distributed.cli.dask_worker"]
    ctx = dask_worker.make_context("dask worker", argv[3:])  # refuses unknown options
    assert ctx.params["scheduler"] == "tcp://10.0.0.1:8786"
    assert ctx.params["n_workers"] == "8" and ctx.params["nthreads"] == 4


def test_python_m_dask_runs_the_dask_cli():
    """The GPU jobs start ``python -m dask cuda worker``: `python -m dask` is the dask CLI."""
    run = subprocess.run(
        [sys.executable, "-m", "dask", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "--nthreads" in run.stdout


# --- Dask on Kubernetes ----------------------------------------------------------------


def _crd_schema(kind: str) -> dict[str, Any]:
    import dask_kubernetes

    crds = Path(dask_kubernetes.__file__).parent / "operator/deployment/helm"
    path = crds / f"dask-kubernetes-operator/crds/{kind.lower()}.yaml"
    (version,) = [v for v in _yaml(path)["spec"]["versions"] if v["name"] == "v1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def _strict(schema: Any) -> Any:
    """Refuse unknown fields (the API server would prune them silently)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        open_ended = "additionalProperties" in schema or schema.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        if "properties" in schema and not open_ended:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(v) for v in schema]
    return schema


def _validate(doc: dict[str, Any]) -> None:
    schema = _crd_schema(doc["kind"])
    # apiVersion/kind/metadata are checked by the API server, not the CRD schema.
    jsonschema.validate({"spec": doc["spec"]}, {**schema, "additionalProperties": True})


def test_kubernetes_manifests_validate_against_the_operators_crds():
    from dask_kubernetes.operator._objects import DaskCluster, DaskWorkerGroup
    from dask_kubernetes.operator.validation import validate_cluster_name

    docs = _manifests()
    assert set(docs) == {"DaskCluster", "DaskWorkerGroup"}
    for doc in docs.values():
        assert doc["apiVersion"] == "kubernetes.dask.org/v1"
        _validate(doc)
    cluster = DaskCluster(docs["DaskCluster"])
    group = DaskWorkerGroup(docs["DaskWorkerGroup"])
    validate_cluster_name(cluster.name)
    assert group.spec.cluster == cluster.name
    assert cluster.spec.worker.replicas >= 1 and group.spec.worker.replicas >= 1
    typo = copy.deepcopy(docs["DaskWorkerGroup"])
    typo["spec"]["worker"]["replica"] = typo["spec"]["worker"].pop("replicas")
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        _validate(typo)


def test_gpu_group_runs_dask_cuda_worker_and_cpu_group_dask_worker():
    from distributed.cli.dask_scheduler import main as dask_scheduler
    from distributed.cli.dask_worker import main as dask_worker

    docs = _manifests()
    gpu = _container(docs["DaskWorkerGroup"])
    assert gpu["args"][:3] == ["dask", "cuda", "worker"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["image"].endswith("eoseg-cuda:latest")
    assert not any(str(a).startswith("--rmm") for a in gpu["args"])
    cpu = _container(docs["DaskCluster"])
    assert cpu["args"][:2] == ["dask", "worker"] and cpu["image"].endswith("eoseg-cpu:latest")
    # The worker CLI parses the args (the operator supplies the scheduler address).
    ctx = dask_worker.make_context("dask worker", [str(a) for a in cpu["args"][2:]])
    assert ctx.params["name"] == "$(DASK_WORKER_NAME)" and ctx.params["nthreads"] == 4
    (scheduler,) = docs["DaskCluster"]["spec"]["scheduler"]["spec"]["containers"]
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    dask_scheduler.make_context("dask scheduler", scheduler["args"][2:])


def test_gpu_args_parse_as_dask_cuda_worker():
    cli = pytest.importorskip("dask_cuda.cli", reason="dask-cuda (eoseg[gpu]) not installed")
    args = [str(a) for a in _container(_manifests()["DaskWorkerGroup"])["args"]]
    cli.worker.make_context("dask cuda worker", args[3:])


# --- images ----------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_let_the_specs_commands_run(image):
    steps = _instructions(DOCKERFILES[image])
    kinds = [kind for kind, _ in steps]
    # An ENTRYPOINT would prefix every spec's args: `eoseg dask worker`.
    assert "ENTRYPOINT" not in kinds
    assert kinds.count("CMD") == 1
    installs = " ".join(args for kind, args in steps if kind == "RUN")
    extras = re.search(r'pip install [^&]*"\.\[([a-z,]+)\]"', installs)
    assert extras, installs
    assert "deploy" in extras.group(1).split(",")
    if image == "cuda":
        assert "gpu" in extras.group(1).split(",")


def test_images_install_what_the_specs_run():
    """The specs run `dask ...` (distributed) and `dask cuda worker` (the gpu extra)."""
    docs = _manifests()
    images = {"eoseg-cpu": "cpu", "eoseg-cuda": "cuda"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for doc in docs.values():
        containers = [_container(doc)]
        if doc["kind"] == "DaskCluster":
            containers += doc["spec"]["scheduler"]["spec"]["containers"]
        for container in containers:
            image = images[container["image"].rsplit("/", 1)[1].split(":")[0]]
            assert container["args"][0] == "dask"
            assert "command" not in container  # the image's (empty) entrypoint + args
            if container["args"][1] == "cuda":
                assert image == "cuda"
                assert any(r.startswith("dask-cuda") for r in extras["gpu"])
    assert any(r.startswith("distributed") for r in project["dependencies"])
    deploy = {re.split(r"[<>=]", r)[0] for r in extras["deploy"]}
    assert deploy == {"dask-kubernetes", "dask-jobqueue", "prefect-kubernetes"}


# --- the operator's page ---------------------------------------------------------------


def test_readme_names_deployments_and_files_that_exist(monkeypatch):
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(ROOT)
    readme = (DEPLOY / "README.md").read_text()
    declared = {
        f"{load_flow_from_entrypoint(d['entrypoint']).name}/{d['name']}"
        for d in _deployments("prefect.yaml")
    }
    runs = set(re.findall(r"prefect deployment run ([\w-]+/[\w-]+)", readme))
    assert runs and runs <= declared
    for name in re.findall(r"--name ([\w-]+)", readme):
        assert name in {n.split("/")[1] for n in declared} | {"regenerate"}
    for path in set(re.findall(r"\bdeploy/[\w./-]+\.(?:yaml|cpu|cuda)\b", readme)):
        assert (ROOT / path).is_file(), path
