"""Static checks of deployments/ and infra/ (no services): what can be checked without a server or Docker.

The server-side checks (templates and automation accepted, deployments run) are in
tests/e2e/test_deployments.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from tuneline.config import FinetuneConfig

REPO = Path(__file__).resolve().parent.parent.parent
INFRA = REPO / "infra"


def template_defaults(template: dict) -> dict:
    return {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}


def render(pool_type: str, **values) -> dict:
    """The job configuration a worker builds from the template and its variables' defaults."""
    from prefect.utilities.templating import apply_values

    template = json.loads((INFRA / "work-pools" / f"{pool_type}.json").read_text())
    return apply_values(template["job_configuration"], {**template_defaults(template), **values})


def test_process_template_pins_the_gpu():
    from prefect.workers.process import ProcessJobConfiguration

    config = ProcessJobConfiguration.model_validate(render("process"))
    assert config.env["CUDA_VISIBLE_DEVICES"] == "0"


def test_docker_template_requests_nvidia_gpus_and_shared_memory():
    import docker.types as docker_types  # the test extra: missing is an error, not a skip
    import prefect_docker.worker as worker

    config = worker.DockerWorkerJobConfiguration.model_validate(render("docker", gpu_count=2))
    kwargs = config.container_create_kwargs
    assert kwargs["device_requests"] == [{"driver": "nvidia", "count": 2, "capabilities": [["gpu"]]}]
    assert kwargs["shm_size"] == "16g"
    # what docker-py sends to the daemon
    host = docker_types.HostConfig(version="1.43", device_requests=kwargs["device_requests"], shm_size=kwargs["shm_size"])
    assert host["DeviceRequests"][0]["Driver"] == "nvidia" and host["DeviceRequests"][0]["Count"] == 2
    assert host["ShmSize"] == 16 * 1024**3


def test_kubernetes_template_asks_for_gpus_on_gpu_nodes():
    import prefect_kubernetes.worker as worker  # the test extra

    config = worker.KubernetesWorkerJobConfiguration.model_validate(render("kubernetes", gpu_count=4))
    pod = config.job_manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    [shm] = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_kubernetes_flow_pod_that_drives_a_ray_cluster_holds_no_gpu():
    import prefect_kubernetes.worker as worker

    template = json.loads((INFRA / "work-pools" / "kubernetes.json").read_text())
    assert template["variables"]["properties"]["gpu_count"]["minimum"] == 0
    config = worker.KubernetesWorkerJobConfiguration.model_validate(
        render("kubernetes", gpu_count=0, node_selector={}, tolerations=[]))
    pod = config.job_manifest["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 0
    assert not pod.get("nodeSelector") and not pod.get("tolerations"), "free to run on a CPU node"


def test_prefect_yaml_deployments():
    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"finetune-on-demand", "retrain-nightly", "sweep-on-demand", "score-nightly",
                                "predict-on-demand"}
    for deployment in deployments.values():
        assert deployment["work_pool"]["name"] == "gpu" and deployment["enforce_parameter_schema"] is True
        if "config" in deployment["parameters"]:
            FinetuneConfig.model_validate(deployment["parameters"]["config"])  # the defaults are a valid config
    assert {deployments[d]["entrypoint"] for d in ("finetune-on-demand", "retrain-nightly")} == {
        "flows/finetune.py:finetune"}
    sweep = deployments["sweep-on-demand"]
    assert sweep["entrypoint"] == "flows/sweep.py:sweep" and not sweep["schedules"]
    from tuneline.stages.sweep import expand_grid

    assert len(expand_grid(sweep["parameters"]["grid"])) == 2
    on_demand = deployments["finetune-on-demand"]
    assert not on_demand["schedules"]
    assert (REPO / on_demand["parameters"]["config"]["data"]["source"]).is_file()  # runs from the repo root
    [schedule] = deployments["retrain-nightly"]["schedules"]
    assert schedule["cron"] == "0 2 * * *" and schedule["timezone"] == "Europe/Berlin"
    assert spec["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PWD }}"}}]


def test_prediction_deployments():
    """score-nightly: a cron schedule that is off until someone turns it on; predict-on-demand: no schedule. Both
    name parameters the flow takes, and outputs in a format it writes."""
    import inspect

    from flows.predict import predict
    from tuneline.stages.predict import output_format

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    nightly, on_demand = deployments["score-nightly"], deployments["predict-on-demand"]
    [schedule] = nightly["schedules"]
    assert schedule["cron"] == "0 3 * * *" and schedule["active"] is False
    assert not on_demand["schedules"]
    taken = set(inspect.signature(predict.fn).parameters)
    for deployment in (nightly, on_demand):
        assert deployment["entrypoint"] == "flows/predict.py:predict"
        assert set(deployment["parameters"]) <= taken and {"ref", "data", "out"} <= set(deployment["parameters"])
        output_format(deployment["parameters"]["out"])  # raises for an extension it cannot write
    assert nightly["parameters"]["data"].startswith("s3://") and nightly["parameters"]["out"].startswith("s3://")
    assert (REPO / on_demand["parameters"]["data"]).is_file()  # runs from the repo root


def test_compose_file_has_the_stack():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "prefect-server", "s3", "gpu-worker", "setup"} <= set(services)
    assert "postgresql+asyncpg://" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "seaweedfs" in services["s3"]["image"]
    worker = services["gpu-worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert worker["shm_size"] and worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["command"][:4] == ["prefect", "worker", "start", "--pool"]
    text = (INFRA / "compose.yaml").read_text()
    for secret in ("POSTGRES_PASSWORD", "S3_SECRET_KEY"):  # from infra/.env, never written in the file
        assert re.search(rf"{secret}: \$\{{{secret}", text)
    for name, service in services.items():  # every pulled image pinned to a release
        if service.get("image") and service["image"] != "tuneline-worker:latest":  # that one is built here
            assert re.search(r":\d", service["image"]), f"{name}: pin {service['image']} to a release"


def test_dockerfile_basics():
    lines = [line.strip() for line in (INFRA / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    base = next(line for line in instructions if line.startswith("FROM "))
    assert re.match(r"FROM nvidia/cuda:\d+\.\d+\.\d+-\S+$", base), "a pinned CUDA base image"
    assert any(line.startswith("USER ") and "root" not in line for line in instructions), "runs as a non-root user"
    for line in instructions:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"{line}: {source} is not in the repo"
    cmd = next(line for line in instructions if line.startswith("CMD "))
    assert json.loads(cmd[4:])[:3] == ["prefect", "worker", "start"]
    assert not any("latest" in line for line in instructions if line.startswith("FROM "))


def test_kuberay_cluster_runs_the_worker_image_with_the_pinned_ray():
    """infra/kuberay/raycluster.yaml (training.engine: ray): a CPU head serving Ray Client, a GPU worker group, both
    on the image the work pools run, with the Ray version of pyproject's `ray` extra."""
    import tomllib

    cluster = yaml.safe_load((INFRA / "kuberay" / "raycluster.yaml").read_text())
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    [pinned] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    assert re.fullmatch(r"ray\[[a-z,]*\btrain\b[a-z,]*\]==(\S+)", pinned)[1] == cluster["spec"]["rayVersion"]
    image = template_defaults(json.loads((INFRA / "work-pools" / "kubernetes.json").read_text()))["image"]
    head = cluster["spec"]["headGroupSpec"]
    [head_container] = head["template"]["spec"]["containers"]
    assert head_container["image"] == image and head["rayStartParams"]["num-cpus"] == "0", "the head trains nothing"
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    assert {"containerPort": 10001, "name": "client"} in head_container["ports"], "Ray Client: ray://<head-svc>:10001"
    [gpu] = cluster["spec"]["workerGroupSpecs"]
    [worker] = gpu["template"]["spec"]["containers"]
    assert worker["image"] == image and worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in worker["volumeMounts"]
    for container in (head_container, worker):  # S3 credentials from a secret, never written in the file
        assert container["envFrom"] == [{"secretRef": {"name": "tuneline-s3"}}]
        assert not any(e["name"].startswith("AWS_") for e in container.get("env", []))
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert re.search(r'pip install "\.\[[a-z,]*\bray\b[a-z,]*\]"', dockerfile), "the image has the ray extra"


def test_automation_file():
    from prefect.events.schemas.automations import AutomationCore

    spec = yaml.safe_load((INFRA / "automations" / "notify-on-failure.yaml").read_text())
    spec["actions"][0]["block_document_id"] = "00000000-0000-0000-0000-000000000000"
    automation = AutomationCore.model_validate(spec)
    assert set(automation.trigger.expect) == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}


# -- .dockerignore: what stays out of the worker image ------------------------------------------------

def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern]]:
    """(is an exception '!', regex) per line, as Docker's patternmatcher compiles them."""
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                i += 3 if pattern.startswith("**/", i) else 2
                regex += ".*" if i >= len(pattern) else "(.*/)?"  # "**" at the end: everything below
                continue
            char = pattern[i]
            regex += {"*": "[^/]*", "?": "[^/]"}.get(char, char if char in "[]-^" else re.escape(char))
            i += 1
        patterns.append((exception, re.compile(f"^{regex}$")))
    return patterns


def dockerignored(path: str, patterns) -> bool:
    """Docker's rule (patternmatcher.MatchesOrParentMatches): the last pattern that matches the path or one
    of its parent folders wins; '!' patterns bring a path back."""
    parts, ignored = path.split("/"), False
    for exception, regex in patterns:
        if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not exception
    return ignored


def test_dockerignore_keeps_secrets_environments_and_local_state_out_of_the_worker_image():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    context = (INFRA / compose["services"]["setup"]["build"]["context"]).resolve()
    assert context == REPO, "the .dockerignore below sits at the build context's root"
    patterns = dockerignore_patterns((context / ".dockerignore").read_text())
    for path in ("infra/.env", ".env", "examples/.env", "infra/.env.production", "infra/prod.env",
                 ".venv/bin/python", ".venv", ".git/config", "tuneline/__pycache__/config.cpython-311.pyc",
                 "flows/x.pyc", "tuneline.egg-info/PKG-INFO", ".pytest_cache/v/cache", ".tuneline/registry/m",
                 "examples/.tuneline/datasets/x/data.parquet", ".s3data/volume.dat", ".serve/prefect.db",
                 "out/run.json", ".cache/tuneline/s3/x"):
        assert dockerignored(path, patterns), f"{path} would be baked into the worker image"
    # what the Dockerfile copies stays in the context
    copied = [source for line in (INFRA / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")
              for source in line.split()[1:-1]]
    assert "infra" in copied and "tuneline" in copied
    for path in (*copied, "tuneline/config.py", "infra/setup_prefect.py", "infra/work-pools/process.json",
                 "examples/data/reviews.csv", "deployments/prefect.yaml", "infra/Dockerfile"):
        assert not dockerignored(path, patterns), f"{path} is needed in the image but .dockerignore drops it"


def test_dockerignore_matcher_follows_dockers_rules():
    patterns = dockerignore_patterns(".env\n**/*.pyc\nbuild/\n!build/keep.txt\n/docs/*.md\n")
    assert dockerignored(".env", patterns) and not dockerignored("infra/.env", patterns)  # anchored at the root
    assert dockerignored("a.pyc", patterns) and dockerignored("a/b/c.pyc", patterns)
    assert dockerignored("build/x/y", patterns) and not dockerignored("build/keep.txt", patterns)
    assert dockerignored("docs/a.md", patterns) and not dockerignored("docs/sub/a.md", patterns)
