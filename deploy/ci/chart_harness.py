"""What the deployment checks share about the Helm chart (deploy/helm/bal): its renderings in
both layouts, the rendered objects' parts, and a replica of the StatefulSet as the files,
environment and command it would have on this host (test_chart.py, test_chart_started.py)."""

import base64
import copy
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helm_python.chart import Chart

ROOT = Path(__file__).resolve().parent.parent.parent
CHART = ROOT / "deploy" / "helm" / "bal"
BAL = os.environ.get("BAL_BIN", str(ROOT / "target" / "debug" / "bal"))
PRODUCTION = yaml.safe_load((ROOT / "deploy" / "ci" / "production-values.yaml").read_text())
MOSQUITTO_OVERLAY = yaml.safe_load((ROOT / "deploy" / "ci" / "mosquitto-values.yaml").read_text())
# anvil's first dev account: funded on a fresh anvil, so the test chain takes anchors.
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def render(values=None):
    """Every rendered object, by (kind, name)."""
    chart = Chart.load(CHART)
    out = chart.render(values, name="bal", namespace="platone", is_install=True)
    objects = {}
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def merged(base, overlay):
    """Values files in order, as Helm merges them: maps key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


# Production: the embedded MQTT cluster; production-mosquitto: -f production-values.yaml -f
# mosquitto-values.yaml.
VALUES = {
    "default": None,
    "default-mosquitto": {"broker": {"mode": "mosquitto"}},
    "production": PRODUCTION,
    "production-mosquitto": merged(PRODUCTION, MOSQUITTO_OVERLAY),
}
CLUSTER_LAYOUTS = sorted(n for n in VALUES if "mosquitto" not in n)
MOSQUITTO_LAYOUTS = sorted(n for n in VALUES if "mosquitto" in n)
# The label a StatefulSet pod carries its index in (Kubernetes 1.28+).
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
# What runs the bal binary (BAL_BIN); the marker is registered in conftest.py.
needs_bal = pytest.mark.needs_bal


def bal_pod(objects):
    return objects[("StatefulSet", "bal")]["spec"]["template"]["spec"]


def bal_container(objects):
    (container,) = bal_pod(objects)["containers"]
    return container


def is_cluster(objects):
    """Whether the rendering is the embedded MQTT cluster's layout (else Mosquitto's)."""
    return toml_of(objects)["broker"]["kind"] == "embedded"


def plain_env(container):
    """The container's variables that have a plain value, by name."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def secret_values(objects):
    """The generated secrets' values (long enough to be searched for), by name."""
    values = {}
    for (kind, name), obj in objects.items():
        if kind == "Secret":
            for k, v in obj.get("data", {}).items():
                text = base64.b64decode(v).decode()
                for i, line in enumerate(text.splitlines()):
                    if len(line) >= 12 and "CERTIFICATE" not in line:
                        values[f"{name}/{k}/{i}"] = line
    return values


def toml_of(objects):
    import tomllib

    return tomllib.loads(objects[("ConfigMap", "bal-config")]["data"]["bal.toml"])


def rendered_secrets(objects):
    return {
        name: {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        for (kind, name), obj in objects.items()
        if kind == "Secret"
    }


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def certificate(directory, ca_dir, name):
    """A certificate for localhost and 127.0.0.1, signed by the CA in ca_dir."""
    directory.mkdir(parents=True, exist_ok=True)
    ext = directory / "ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
            "-keyout", "tls.key", "-out", "tls.csr", cwd=directory)
    openssl("x509", "-req", "-in", "tls.csr", "-CA", str(ca_dir / "ca.crt"), "-CAkey", str(ca_dir / "ca.key"),
            "-CAcreateserial", "-days", "2", "-extfile", "ext", "-out", "tls.crt", cwd=directory)
    return {"tls.crt": (directory / "tls.crt").read_text(), "tls.key": (directory / "tls.key").read_text(),
            "ca.crt": (ca_dir / "ca.crt").read_text()}


def operator_secrets(tmp, database_url="postgres://bal:pw@db.dso.example/bal", rpc_url="http://eth.dso.example:8545"):
    """The Secrets an operator creates before installing (README, "Deploying on Kubernetes")."""
    ca = tmp / "ca"
    ca.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=ca)
    return {
        "bal-keys": {
            "master-key": "a-master-key-for-the-chart-test",
            "operator-key": ANVIL_KEY,
            "admin-password": "chart-test-admin-password",
            "broker-admin-password": "chart-test-broker-password",
        },
        "bal-tls": certificate(tmp / "bal-tls", ca, "bal"),
        "bal-mosquitto-tls": certificate(tmp / "mosquitto-tls", ca, "bal-mosquitto"),
        "bal-database": {"url": database_url},
        "bal-database-ca": {"ca.crt": (ca / "ca.crt").read_text()},
        "bal-chain": {"rpc-url": rpc_url},
        # Not a Secret: where the test CA is, for the clients here.
        "_ca": {"ca.crt": str(ca / "ca.crt")},
    }


def materialise(pod_spec, container, secrets, configmaps, root):
    """Writes the container's mounted volumes under root; returns {mountPath: local path}."""
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    mounts = {}
    for m in container.get("volumeMounts", []):
        local = root / m["mountPath"].lstrip("/")
        local.mkdir(parents=True, exist_ok=True)
        # Not among the volumes: a claim of the volumeClaimTemplates, a folder here.
        v = volumes.get(m["name"], {})
        source = None
        if "configMap" in v:
            source = configmaps[v["configMap"]["name"]]
            items = v["configMap"].get("items")
        elif "secret" in v:
            source = secrets[v["secret"]["secretName"]]
            items = v["secret"].get("items")
        if source is not None:
            for item in items or [{"key": k, "path": k} for k in source]:
                (local / item["path"]).write_text(source[item["key"]])
        mounts[m["mountPath"]] = local
    return mounts


def localise(text, mounts, hosts):
    """Mount paths (whole path prefixes, in one pass) and host names replaced by local ones."""
    if mounts:
        paths = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
        text = re.sub(rf"(?<![\w./-])({paths})(?=/|\"|'|\s|$)", lambda m: str(mounts[m.group(1)]), text)
    for host, local in hosts.items():
        text = text.replace(host, local)
    return text


def env_of(container, secrets, pod_name, pod_index=0, secrets_too=True):
    """The container's environment in the pod pod_name (index pod_index of its StatefulSet)."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e["valueFrom"]:
            if secrets_too:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            assert path in ("metadata.name", POD_INDEX), e
            env[e["name"]] = pod_name if path == "metadata.name" else str(pod_index)
    return env


# Where each named container port's listener is set: the environment wins over bal.toml.
LISTENERS = {
    "https": "BAL_HTTP__LISTEN",
    "metrics": "BAL_METRICS__LISTEN",
    "mqtts": "BAL_MQTT__LISTEN_TLS",
    "mqtt-cluster": "BAL_MQTT__CLUSTER__LISTEN",
}


class Replica:
    """One pod of the StatefulSet, as the files and processes it would have here.

    ports: a loopback port for each named container port (the pod's own addresses on the pod
    network become ports of loopback, distinct per replica since they share this host); None
    keeps the rendered addresses. hosts: names of other pods or services and the local
    address each becomes (the Mosquitto service, the peers' DNS names).
    """

    def __init__(self, objects, pod, secrets, root, index, ports, hosts):
        configmaps = {n: o["data"] for (k, n), o in objects.items() if k == "ConfigMap"}
        (container,) = pod["containers"]
        self.container = container
        self.name = f"{objects[('StatefulSet', 'bal')]['metadata']['name']}-{index}"
        mounts = materialise(pod, container, secrets, configmaps, root)
        for f in mounts.values():
            for file in f.glob("*.toml"):
                file.write_text(localise(file.read_text(), mounts, hosts))
        env = {k: localise(v, mounts, hosts) for k, v in env_of(container, secrets, self.name, index).items()}
        self.command = [BAL if container["command"][0].endswith("/bal") else container["command"][0],
                        *container["command"][1:], *container.get("args", [])]
        if ports is not None:
            # Every port the container declares, and only those, gets a local one.
            self.ports = {p["name"]: ports[p["name"]] for p in container["ports"]}
            for port_name, port in self.ports.items():
                env[LISTENERS[port_name]] = f"127.0.0.1:{port}"
        self.env = {"PATH": os.environ["PATH"], "RUST_LOG": "warn"} | env
