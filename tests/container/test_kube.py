"""deploy/kubernetes played with `podman kube play`, with the image tag the kustomization names.

podman 4.3 plays Pods and Deployments (and the ConfigMaps they mount, in the same YAML); it
ignores a Service beside them and refuses a StatefulSet, so the daemons' StatefulSet is played
as the Pod it makes first, streamtag-daemon-0 (the name `--shard auto/N` reads its K from).
What must hold: the daemon serves with the ConfigMap's TOML (its /healthz answers inside the
pod), the proxy and the dashboard run, and `podman kube down` removes them."""

from __future__ import annotations

import json

import pytest
import yaml
from support.helpers import wait_until

from tests.container.conftest import record_figure
from tests.container.podman import REPO, podman

pytestmark = pytest.mark.container

BASE = REPO / "deploy" / "kubernetes" / "base"
UNSUPPORTED_PROBES = ("daemon-service.yaml", "daemon-statefulset.yaml", "configmap.yaml")


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]


def image_tag() -> str:
    """The image the kustomization renders: `images: [{name: streamtag, newTag: ...}]`."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    [entry] = [i for i in kustomization["images"] if i["name"] == "streamtag"]
    return f"streamtag:{entry['newTag']}"


def with_image(objects: list[dict], image: str) -> list[dict]:
    for obj in objects:
        spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert c["image"] == "streamtag", c["image"]
            c["image"] = image
    return objects


def daemon_pod() -> dict:
    """The StatefulSet's first pod, as the controller would make it."""
    [statefulset] = documents("daemon-statefulset.yaml")
    template = statefulset["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{statefulset['metadata']['name']}-0",
                         "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


@pytest.fixture(scope="module")
def kube_image(cpu_image) -> str:
    tag = image_tag()
    podman("tag", cpu_image, f"localhost/{tag}")
    return tag


@pytest.fixture
def played(kube_image, tmp_path):
    objects = documents("configmap.yaml") + with_image(
        [daemon_pod()] + documents("proxy-deployment.yaml")
        + documents("dashboard-deployment.yaml"), kube_image) \
        + documents("proxy-service.yaml") + documents("dashboard-service.yaml")
    kube = tmp_path / "streamtag.yaml"
    kube.write_text(yaml.safe_dump_all(objects))
    podman("kube", "down", str(kube), check=False)
    try:
        podman("kube", "play", str(kube), timeout=300)
        yield kube
    finally:
        podman("kube", "down", str(kube), check=False, timeout=180)


def container_of(pod: str) -> str:
    names = podman("ps", "-a", "--filter", f"pod={pod}", "--format", "{{.Names}}").stdout.split()
    [name] = [n for n in names if not n.endswith("-infra")]
    return name


def http_inside(container: str, port: int, path: str) -> int | None:
    url = f"http://127.0.0.1:{port}{path}"
    code = ("import sys, urllib.request\n"
            "try:\n"
            f"    print(urllib.request.urlopen({url!r}, timeout=3).status)\n"
            "except Exception as exc:\n"
            "    print(exc, file=sys.stderr)\n")
    result = podman("exec", container, "python", "-c", code, check=False)
    return int(result.stdout) if result.stdout.strip().isdigit() else None


def test_kube_play_runs_the_daemon_proxy_and_dashboard(played):
    pods = {p["Name"]: p for p in json.loads(podman("pod", "ps", "--format", "json").stdout)}
    daemon = container_of("streamtag-daemon-0")
    proxy = container_of("streamtag-proxy-pod-0")
    dashboard = container_of("streamtag-dashboard-pod-0")
    assert {"streamtag-daemon-0", "streamtag-proxy-pod-0", "streamtag-dashboard-pod-0"} \
        <= set(pods)

    def logs(name: str) -> str:
        result = podman("logs", "--tail", "20", name, check=False)
        return result.stdout + result.stderr

    def answers(container: str, port: int) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", container).stdout.strip()
        if state != "true":
            raise AssertionError(f"{container} stopped:\n{logs(container)}")
        return http_inside(container, port, "/healthz") == 200

    wait_until(lambda: answers(daemon, 9108), 180, "the daemon's /healthz", interval=1.0)
    wait_until(lambda: answers(dashboard, 8080), 120, "the dashboard's /healthz", interval=1.0)
    # The ConfigMap's TOML is what it serves: it publishes to the proxy's Service name.
    wait_until(lambda: "publishing on tcp://streamtag-proxy:5558" in logs(daemon), 60,
               "the daemon's start line", interval=1.0)
    assert podman("inspect", "--format", "{{.State.Running}}", proxy).stdout.strip() == "true"
    record_figure("kube play: daemon (StatefulSet's pod 0), proxy and dashboard Deployments "
                  "ran; Services ignored")


def test_kube_down_removes_the_pods(played):
    podman("kube", "down", str(played), timeout=180)
    names = {p["Name"] for p in json.loads(podman("pod", "ps", "--format", "json").stdout)}
    assert not names & {"streamtag-daemon-0", "streamtag-proxy-pod-0",
                        "streamtag-dashboard-pod-0"}


def test_what_kube_play_refuses_alone(base):
    refused = {}
    for name in UNSUPPORTED_PROBES:
        result = podman("kube", "play", str(BASE / name), check=False, timeout=120)
        if result.returncode != 0:
            refused[name] = result.stderr.strip().splitlines()[-1]
        else:
            podman("kube", "down", str(BASE / name), check=False)
    record_figure("kube play refuses alone: " + "; ".join(
        f"{k}: {v}" for k, v in refused.items()))
    # A StatefulSet is what podman 4.3 cannot play; docs/deploy.md says how we play it.
    assert "daemon-statefulset.yaml" in refused, refused
