"""deploy/: the Kubernetes manifests and the image build, checked offline.

Every manifest validates against the Kubernetes API schemas (kubernetes-validate) of the
versions we state support for; the kustomizations list files that exist; labels, selectors
and ports agree across objects and with the daemon's TOML and the commands' flags; every
container's command line parses with streamtag's own parser; the ConfigMap's TOML loads.
"""

from __future__ import annotations

import copy
import inspect
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from support.helpers import load_file_module

from streamtag.cli import build_parser
from streamtag.daemon.config import config_from_dict
from streamtag.daemon.daemon import Daemon
from streamtag.wire.proxy import open_endpoints

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="install kubernetes-validate (the test extra)")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
GPU = DEPLOY / "kubernetes" / "overlays" / "gpu"
# The oldest Kubernetes we state support for (docs/operations.md) and the newest schemas the
# installed kubernetes-validate has.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
WORKLOADS = ("Deployment", "StatefulSet")


def kustomization(folder: Path) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def base_objects() -> list[dict]:
    objects = []
    for name in kustomization(BASE)["resources"]:
        objects += [doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc]
    return objects


def the(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def tcp_port(endpoint: str) -> tuple[str, int]:
    parsed = urlparse(endpoint)
    assert parsed.scheme == "tcp", endpoint
    return parsed.hostname, parsed.port


def merge(base, patch):
    """A strategic merge patch as kustomize applies ours: maps merge, lists of named items
    (containers) merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) \
            and all(isinstance(x, dict) and "name" in x for x in base + patch):
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            match = [i for i, x in enumerate(out) if x["name"] == item["name"]]
            assert match, f"the patch names {item['name']!r}, which the base does not have"
            out[match[0]] = merge(out[match[0]], item)
        return out
    return copy.deepcopy(patch)


def gpu_objects() -> list[dict]:
    overlay = kustomization(GPU)
    assert overlay["resources"] == ["../../base"]
    objects = base_objects()
    for entry in overlay["patches"]:
        patch = yaml.safe_load((GPU / entry["path"]).read_text())
        target = the(objects, patch["kind"], patch["metadata"]["name"])
        objects[objects.index(target)] = merge(target, patch)
    return objects


# ---------------------------------------------------------------- schemas

def test_every_listed_file_exists_and_every_manifest_is_listed():
    listed = kustomization(BASE)["resources"]
    assert all((BASE / name).is_file() for name in listed)
    assert sorted(listed) == sorted(p.name for p in BASE.glob("*.yaml")
                                    if p.name != "kustomization.yaml")
    assert all((GPU / p["path"]).is_file() for p in kustomization(GPU)["patches"])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", ["base", "gpu"])
def test_every_manifest_validates_against_the_kubernetes_schemas(version, overlay):
    objects = base_objects() if overlay == "base" else gpu_objects()
    assert {o["kind"] for o in objects} == {"ConfigMap", "Service", "StatefulSet", "Deployment"}
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises naming the field


def test_a_manifest_with_a_misspelt_field_is_refused():
    # The check above can fail: a typo the API server would reject is caught here.
    daemon = copy.deepcopy(the(base_objects(), "StatefulSet", "streamtag-daemon"))
    daemon["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = \
        daemon["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(daemon, KUBERNETES_VERSIONS[0], strict=True)


def test_kubectl_builds_both_kustomizations_into_what_we_validated():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("install kubectl to build the kustomizations with kustomize itself")
    for folder, ours in ((BASE, base_objects()), (GPU, gpu_objects())):
        built = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True,
                               text=True, check=True, timeout=60).stdout
        rendered = [doc for doc in yaml.safe_load_all(built) if doc]
        assert sorted((o["kind"], o["metadata"]["name"]) for o in rendered) == \
            sorted((o["kind"], o["metadata"]["name"]) for o in ours)
        for obj in rendered:
            kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[0], strict=True)
        daemon = the(rendered, "StatefulSet", "streamtag-daemon")
        limits = daemon["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert ("nvidia.com/gpu" in limits) == (folder == GPU)


# ---------------------------------------------------------------- consistency

def test_selectors_match_the_pod_labels_and_each_service_selects_one_workload():
    objects = base_objects()
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    for w in workloads:
        selector = w["spec"]["selector"]["matchLabels"]
        assert selector.items() <= w["spec"]["template"]["metadata"]["labels"].items(), \
            w["metadata"]["name"]
    for service in (o for o in objects if o["kind"] == "Service"):
        selected = [w["metadata"]["name"] for w in workloads
                    if service["spec"]["selector"].items()
                    <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, (service["metadata"]["name"], selected)
    assert the(objects, "Service", "streamtag-proxy")["spec"]["selector"]["app.kubernetes.io/"
                                                                         "component"] == "proxy"
    daemons = the(objects, "StatefulSet", "streamtag-daemon")
    headless = the(objects, "Service", daemons["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_service_target_ports_and_probe_ports_are_ports_of_the_selected_pods():
    objects = base_objects()
    workloads = [o for o in objects if o["kind"] in WORKLOADS]

    def named_ports(w: dict) -> dict[str, int]:
        return {p["name"]: p["containerPort"]
                for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}

    for service in (o for o in objects if o["kind"] == "Service"):
        [w] = [w for w in workloads if service["spec"]["selector"].items()
               <= w["spec"]["template"]["metadata"]["labels"].items()]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named_ports(w), (service["metadata"]["name"], port)
    for w in workloads:
        for c in w["spec"]["template"]["spec"]["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in c:
                    action = c[probe].get("httpGet") or c[probe]["tcpSocket"]
                    assert action["port"] in named_ports(w), (c["name"], probe)


def test_the_daemons_proxy_and_subscribers_agree_on_every_port():
    objects = base_objects()
    config = daemon_config(objects)
    proxy = the(objects, "Deployment", "streamtag-proxy")["spec"]["template"]["spec"]
    proxy_command = proxy["containers"][0]["command"]
    proxy_ports = {p["name"]: p["containerPort"] for p in proxy["containers"][0]["ports"]}
    service = the(objects, "Service", "streamtag-proxy")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}

    # daemons -> the proxy's frontend
    host, port = tcp_port(config.publish.endpoint)
    assert config.publish.connect
    assert host == service["metadata"]["name"]
    [front] = [p for p in service_ports.values() if p["port"] == port]
    assert proxy_ports[front["targetPort"]] == tcp_port(flag(proxy_command, "--frontend"))[1]
    # subscribers (recorder, dashboard) -> the proxy's backend
    backend_port = tcp_port(flag(proxy_command, "--backend"))[1]
    subscribers = 0
    for w in (o for o in objects if o["kind"] in WORKLOADS):
        for c in containers(w):
            if "--connect" in c["command"]:
                subscribers += 1
                host, port = tcp_port(flag(c["command"], "--connect"))
                [back] = [p for p in service_ports.values() if p["port"] == port]
                assert host == service["metadata"]["name"]
                assert proxy_ports[back["targetPort"]] == backend_port
    assert subscribers == 2  # the recorder and the dashboard
    # the daemons' probes and metrics port
    daemon = the(objects, "StatefulSet", "streamtag-daemon")["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in daemon["containers"][0]["ports"]}
    assert ports["metrics"] == config.metrics.port and config.metrics.address == "0.0.0.0"
    assert daemon["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert daemon["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_shard_count_is_the_number_of_replicas_and_the_drain_fits_the_grace_period():
    daemons = the(base_objects(), "StatefulSet", "streamtag-daemon")
    command = daemons["spec"]["template"]["spec"]["containers"][0]["command"]
    index, count = flag(command, "--shard").split("/")
    assert index == "auto" and int(count) == daemons["spec"]["replicas"]
    # stop() gives the sources timeout_s to end, then scores what is queued and closes the
    # sockets (about 5 s more: control, heartbeat, linger); the rest is for queued windows.
    stop_timeout_s = inspect.signature(Daemon.stop).parameters["timeout_s"].default
    grace_s = daemons["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s >= stop_timeout_s + 5 + 30


def daemon_config(objects: list[dict]):
    configmap = the(objects, "ConfigMap", "streamtag-daemon")
    return config_from_dict(tomllib.loads(configmap["data"]["daemon.toml"]))


def test_the_configmaps_toml_loads_and_serves_the_model_inside_the_package():
    config = daemon_config(base_objects())
    assert len(config.sources) >= 1 and config.shard.count == 1  # the shard is the flag's
    # No [model] path: the default model, which the wheel carries (CMakeLists.txt installs
    # models/default when the tree has it, so the build stage must copy it).
    assert config.model.path is None
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^COPY models/default models/default$", dockerfile, re.M)
    cmake = (DEPLOY.parent / "CMakeLists.txt").read_text()
    assert re.search(r"install\(FILES models/default/model\.pt[^)]*"
                     r"DESTINATION streamtag/models/default", cmake)
    assert (DEPLOY.parent / "models" / "default" / "model.pt").is_file()


def dockerfile_stages() -> dict[str, str]:
    """The Dockerfile's stages by name (the last, unnamed one is "runtime")."""
    text = (DEPLOY / "Dockerfile").read_text()
    parts = re.split(r"^FROM ", text, flags=re.M)[1:]
    stages = {}
    for part in parts:
        header = part.splitlines()[0].split()
        stages[header[2] if len(header) == 3 and header[1] == "AS" else "runtime"] = part
    return stages


def test_the_image_runs_as_the_user_the_pods_require_and_takes_a_torch_spec():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    runtime = dockerfile_stages()["runtime"]
    # CPU by default: no torch; TORCH_SPEC (and TORCH_INDEX_URL) make the [torch] variant.
    assert re.search(r'^ARG TORCH_SPEC=""$', runtime, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=", runtime, re.M)
    assert re.search(r"^#.*--build-arg TORCH_SPEC=torch==[\d.]+", dockerfile, re.M)
    assert 'extras="postgres,torch${EXTRAS:+,$EXTRAS}"' in runtime
    assert 'extras="postgres${EXTRAS:+,$EXTRAS}"' in runtime
    user = re.search(r"^USER (\d+):(\d+)$", runtime, re.M)
    for w in (o for o in base_objects() if o["kind"] in WORKLOADS):
        security = w["spec"]["template"]["spec"]["securityContext"]
        assert (str(security["runAsUser"]), str(security["runAsGroup"])) == user.groups()
    # Nothing machine-specific: no registry host or credential is baked into the build.
    assert "://" not in dockerfile


def test_the_image_writes_only_under_tmp_and_has_a_healthcheck():
    runtime = dockerfile_stages()["runtime"]
    home = re.search(r"STREAMTAG_HOME=(\S+)", runtime).group(1)
    assert home.startswith("/tmp/")
    # The pods mount an emptyDir at /tmp and set the same STREAMTAG_HOME.
    [daemons] = [o for o in base_objects() if o["kind"] == "StatefulSet"]
    env = {e["name"]: e.get("value") for e in containers(daemons)[0]["env"]}
    assert env["STREAMTAG_HOME"] == home
    assert re.search(r'^HEALTHCHECK .*\n?.*CMD \["streamtag-healthcheck"\]', runtime, re.M)
    assert re.search(r"^COPY deploy/podman/healthcheck.py /usr/local/bin/streamtag-healthcheck$",
                     runtime, re.M)
    # Every pip install leaves no cache in a layer.
    code = "\n".join(line for line in DEPLOY.joinpath("Dockerfile").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    installs = re.findall(r"pip (?:install|wheel)\b[^\n]*", code)
    assert installs and all("--no-cache-dir" in line for line in installs), installs


def test_the_healthcheck_parses_each_deployed_command():
    # The probe reads PID 1's command line with streamtag's parser: every manifest's command
    # must be one it understands (it raises SystemExit on an unknown flag).
    healthcheck = load_file_module(DEPLOY / "podman" / "healthcheck.py", "healthcheck")
    assert healthcheck.healthy(["tag", "x.mp3"])  # a one-shot command: nothing to probe
    assert healthcheck.healthy(["dashboard", "--port", "0"])
    assert not healthcheck.tcp_ok("tcp://127.0.0.1:1")


def test_the_build_context_holds_what_the_dockerfile_copies():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore  # an allow-list: the context is only what the build needs
    copied = set()
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied.update(line.split()[1:-1])
    assert copied <= allowed, copied - allowed
    assert all((DEPLOY.parent / path).exists() for path in copied)


# ---------------------------------------------------------------- command lines

def container_commands() -> list:
    cases = []
    for w in (o for o in base_objects() if o["kind"] in WORKLOADS):
        for c in containers(w):
            cases.append(pytest.param(c["command"], id=f"{w['metadata']['name']}/{c['name']}"))
    return cases


@pytest.mark.parametrize("command", container_commands())
def test_every_container_command_parses_with_the_streamtag_parser(command, capsys):
    assert command[0] == "streamtag"
    parser = build_parser()
    with pytest.raises(SystemExit) as probe:  # --help exits 0 for a command that exists
        parser.parse_args([command[1], "--help"])
    capsys.readouterr()
    if probe.value.code != 0:
        pytest.skip(f"`streamtag {command[1]}` is not in this build of streamtag (the "
                    "recorder's branch adds it)")
    args = parser.parse_args(command[1:])  # exits (fails the test) on an unknown flag
    assert args.command == command[1]


def test_the_proxy_as_deployed_starts_and_the_dashboard_answers_its_service_name():
    # The proxy refuses a non-loopback bind without CURVE keys; the manifest binds the pod's
    # addresses, so it must either give the keys or say --insecure, else the pod exits 2.
    objects = base_objects()
    command = containers(the(objects, "Deployment", "streamtag-proxy"))[0]["command"]
    args = build_parser().parse_args(command[1:])
    still_open = open_endpoints(args.frontend, args.backend, daemon_key=bool(args.daemon_key),
                                client_keys=bool(args.client_keys))
    assert args.insecure or not still_open, still_open
    # The dashboard checks Host against its allow-list: the Service's name must be on it.
    dashboard = containers(the(objects, "Deployment", "streamtag-dashboard"))[0]["command"]
    service = the(objects, "Service", "streamtag-dashboard")["metadata"]["name"]
    assert service in build_parser().parse_args(dashboard[1:]).allow_host


def test_no_credential_is_written_in_any_manifest():
    for obj in base_objects():
        for w in ([obj] if obj["kind"] in WORKLOADS else []):
            for c in containers(w):
                for arg in c["command"]:
                    assert not re.search(r"://[^/@\s]+:[^/@\s]+@", arg), arg  # user:pass@
                for env in c.get("env", []):
                    if "PASSWORD" in env["name"]:
                        assert "secretKeyRef" in env["valueFrom"], env


def test_every_read_only_container_has_a_writable_tmp():
    for w in (o for o in base_objects() if o["kind"] in WORKLOADS):
        volumes = {v["name"]: v for v in w["spec"]["template"]["spec"].get("volumes", [])}
        for c in w["spec"]["template"]["spec"]["containers"]:
            if c.get("securityContext", {}).get("readOnlyRootFilesystem"):
                [tmp] = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert "emptyDir" in volumes[tmp["name"]], (w["metadata"]["name"], c["name"])
