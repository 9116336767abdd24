"""Watching a run: the shipped Grafana dashboard's every query answers from a real Prometheus scraping a
real run through Ray's service discovery, and the MLflow logger writes (and on resume, continues) a run
in a real local MLflow store."""

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from hpo_ray.config import load_config

ROOT = Path(__file__).parents[1]
DASHBOARD = ROOT / "cluster" / "grafana" / "hpo_dashboard.json"
SCRAPE_CONFIG = ROOT / "cluster" / "prometheus" / "prometheus.yml"
RUN_NAME = "hpo-monitoring-test"
CPU_SPLIT = ["cluster.cpus_per_learner=0.5", "cluster.cpus_per_rollout_worker=0.5", "cluster.cpus_per_reward_actor=0.25"]


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_json_has_the_grafana_schema_essentials():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 27
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    run = variables["run"]
    assert run["type"] == "query" and "label_values(" in run["query"]["query"] and run["includeAll"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for p in dash["panels"]:
        pos = p["gridPos"]
        assert all(isinstance(pos[k], int) for k in "hwxy") and 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, p["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"panel {p['title']!r} overlaps another"
        cells |= area
    for p in panels(dash):
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            selectors = re.findall(r"ray_hpo_\w+(?:\{[^}]*\})?", t["expr"])
            assert selectors and all('run=~"$run"' in s for s in selectors), (p["title"], t["expr"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prometheus(folder: Path, discovery_file: str) -> tuple[subprocess.Popen, str]:
    """The shipped scrape config, pointed at this Ray's discovery file, with a 1 s scrape on loopback."""
    cfg = yaml.safe_load(SCRAPE_CONFIG.read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    job = cfg["scrape_configs"][0]
    job["file_sd_configs"][0].update(files=[discovery_file], refresh_interval="2s")
    (folder / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            shutil.which("prometheus"),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address={address}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("w"),
    )
    return proc, f"http://{address}"


def prom_get(url: str, path: str, **params) -> dict:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def monitored_run(small_run, tmp_path_factory):
    """A 2-step run on a fresh local Ray with its dashboard (which writes the discovery file), metrics
    exported every second, scraped live by Prometheus when installed, and tracked in a sqlite MLflow store."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    tmp = tmp_path_factory.mktemp("monitoring")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        _system_config={"metrics_report_interval_ms": 1000},
    )
    prometheus = url = None
    try:
        if shutil.which("prometheus"):
            session = Path(ray._private.worker.global_worker.node.get_session_dir_path())
            prometheus, url = start_prometheus(tmp, str(session / "prom_metrics_service_discovery.json"))
        _, _, overrides = small_run
        mlflow = (
            [
                "logging.mlflow.enabled=true",
                f"logging.mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
                "logging.mlflow.experiment=hpo-test",
                f"logging.mlflow.artifact_location={tmp / 'artifacts'}",
            ]
            if _has_mlflow()
            else []
        )
        run = [f"run.name={RUN_NAME}", "validation.every=2", "validation.at_start=false"]
        cfg = load_config(None, overrides + CPU_SPLIT + mlflow + run)
        from actors.controller import Controller, train

        started = time.time()
        with pytest.MonkeyPatch.context() as mp:
            if url is not None:  # two scraped values per histogram, so the rate panels have a rate
                mp.setattr(Controller, "make_batch", scraped_after_first(Controller.make_batch, url))
            history = train(cfg, tmp / "run", steps=2)
        print(f"monitored run: {time.time() - started:.1f} s")
        yield {"cfg": cfg, "run_dir": tmp / "run", "history": history, "prometheus": url, "started": started}
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        ray.shutdown()


def scraped_after_first(make_batch, url: str):
    """`make_batch` that, after step 1 (whose trajectories it observes), waits until Prometheus has scraped
    them. Rate panels need two distinct scraped values of a series; on a fast machine both steps' observations
    could otherwise reach the first scrape together (a real run's steps are minutes apart)."""
    calls = []

    def wrapped(self, *args, **kwargs):
        out = make_batch(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            seen = f'ray_hpo_trajectory_quality_count{{run="{RUN_NAME}"}} > 0'
            deadline = time.time() + 90
            while time.time() < deadline and not prom_get(url, "/api/v1/query", query=seen)["data"]["result"]:
                time.sleep(0.5)
        return out

    return wrapped


def _has_mlflow() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def queries(dash: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, with the dashboard variables as Grafana would fill them."""
    fill = {"$run": RUN_NAME, "$__rate_interval": "1m"}  # the name has no regex metacharacters
    out = []
    for p in panels(dash):
        for t in p["targets"]:
            expr = t["expr"]
            for var, value in fill.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"unfilled variable in {expr}"
            out.append((p["title"], expr))
    return out


def has_data(url: str, expr: str, start: float) -> bool:
    body = prom_get(url, "/api/v1/query_range", query=expr, start=start, end=time.time(), step=1)
    assert body["status"] == "success", body
    return any(v[1] not in ("NaN", "+Inf", "-Inf") for series in body["data"]["result"] for v in series["values"])


@pytest.mark.ray
@pytest.mark.slow
def test_every_dashboard_query_returns_data_for_the_run(monitored_run):
    url = monitored_run["prometheus"]
    if url is None:
        pytest.skip("no `prometheus` binary on PATH (Debian: apt-get install -y prometheus; .ci/run installs it)")
    pending = queries(json.loads(DASHBOARD.read_text()))
    steps = f'max(ray_hpo_steps_total{{run="{RUN_NAME}"}}) == 2'  # a counter: one per step, both steps scraped
    deadline = time.time() + 60  # the last step's export (1 s) and scrape (1 s) may still be on their way
    while time.time() < deadline:
        pending = [(title, expr) for title, expr in pending if not has_data(url, expr, monitored_run["started"])]
        if not pending and prom_get(url, "/api/v1/query", query=steps)["data"]["result"]:
            break
        time.sleep(2)
    assert not pending, "dashboard queries without data for the run:\n" + "\n".join(f"{t}: {e}" for t, e in pending)
    assert prom_get(url, "/api/v1/query", query=steps)["data"]["result"], "ray_hpo_steps_total never reached 2"
    runs = prom_get(url, "/api/v1/label/run/values", **{"match[]": "ray_hpo_steps_total"})["data"]
    assert RUN_NAME in runs  # the dashboard's `run` variable


@pytest.mark.ray
@pytest.mark.slow
def test_restart_and_retry_panels_count_from_the_pool_totals(monitored_run):
    """The reliability panels' counters (0 in a healthy run, so the run above shows only their fallback)."""
    url = monitored_run["prometheus"]
    if url is None:
        pytest.skip("no `prometheus` binary on PATH (Debian: apt-get install -y prometheus; .ci/run installs it)")
    from actors.ray_metrics import RayMetrics

    metrics, run = RayMetrics("restart-check", "chrf"), "restart-check"
    for restarts, retries in ((0, 0), (1, 2), (1, 0), (3, 1)):  # running restart totals, per-step retries
        metrics.record({"actors/rollout_restarts": restarts, "rollout/retries": retries}, trained=True)
    dash = json.loads(DASHBOARD.read_text())
    exprs = {
        p["title"]: p["targets"][0]["expr"].replace("$run", run)
        for p in panels(dash)
        if p["title"] in ("Actor restarts", "Rollout retries")
    }
    deadline, values = time.time() + 30, {}
    while time.time() < deadline and values != {"Actor restarts": [("rollout", 3.0)], "Rollout retries": [(None, 3.0)]}:
        time.sleep(1)
        values = {
            title: [(r["metric"].get("pool"), float(r["value"][1])) for r in prom_get(url, "/api/v1/query", query=expr)["data"]["result"]]
            for title, expr in exprs.items()
        }
    assert values == {"Actor restarts": [("rollout", 3.0)], "Rollout retries": [(None, 3.0)]}


def mlflow_client(cfg):
    from mlflow.tracking import MlflowClient

    return MlflowClient(cfg.logging.mlflow.tracking_uri)


@pytest.mark.ray
@pytest.mark.slow
def test_mlflow_run_holds_the_step_metrics_config_params_and_outputs(monitored_run):
    pytest.importorskip("mlflow")
    cfg, run_dir = monitored_run["cfg"], monitored_run["run_dir"]
    client = mlflow_client(cfg)
    run_id = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.run_name == RUN_NAME and run.info.status == "FINISHED"
    params = run.data.params
    assert params["algorithm.group_size"] == "2" and params["run.name"] == RUN_NAME
    assert params["model.path"] == str(cfg.model.path) and params["logging.mlflow.experiment"] == "hpo-test"
    logged = {m["step"]: m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
    quality = client.get_metric_history(run_id, "reward/quality")
    assert [(m.step, m.value) for m in quality] == [(s, logged[s]["reward/quality"]) for s in (1, 2)]
    assert [m.step for m in client.get_metric_history(run_id, "val/quality")] == [2]
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "policy")}
    assert {"validation_report.json", "policy/model.safetensors", "policy/config.json"} <= artifacts


@pytest.mark.ray
@pytest.mark.slow
def test_resumed_run_appends_to_the_same_mlflow_run(monitored_run):
    pytest.importorskip("mlflow")
    from actors.controller import train

    cfg, run_dir = monitored_run["cfg"], monitored_run["run_dir"]
    first = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    train(cfg, run_dir, steps=3, resume=True)
    client = mlflow_client(cfg)
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == first
    experiment = client.get_experiment_by_name("hpo-test")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [first]
    assert [m.step for m in client.get_metric_history(first, "reward/quality")] == [1, 2, 3]
    assert client.get_run(first).info.status == "FINISHED"
