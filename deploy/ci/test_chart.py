"""The Helm chart, checked without a cluster (run by scripts/check-deploy).

Renders and lints the chart with the Helm SDK (helm-python-sdk), validates every manifest with
kubernetes-validate --strict, asserts what matters in the rendered objects, has `bal config
check` parse the settings the chart passes, and finally starts the rendered configuration here:
the migration job, then every replica of the StatefulSet with its command, environment and
mounted files, next to Mosquitto (bootstrapped by the chart's own init script), PostgreSQL and
anvil, until /readyz answers 200 on each replica.

Environment: BAL_BIN (the bal binary), BAL_TEST_MOSQUITTO, BAL_TEST_ANVIL,
BAL_TEST_POSTGRES_URL (as scripts/test sets them).
"""

import base64
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml
from helm_python.chart import Chart, lint
from helm_python.errors import HelmError

ROOT = Path(__file__).resolve().parent.parent.parent
CHART = ROOT / "deploy" / "helm" / "bal"
BAL = os.environ.get("BAL_BIN", str(ROOT / "target" / "debug" / "bal"))
PRODUCTION = yaml.safe_load((ROOT / "deploy" / "ci" / "production-values.yaml").read_text())
# anvil's first dev account: funded on a fresh anvil, so the test chain takes anchors.
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
CRDS = {"ServiceMonitor"}


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


VALUES = {"default": None, "production": PRODUCTION}


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request):
    return request.param, render(VALUES[request.param])


# --- lint, schema, manifests ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUES))
def test_lint_is_clean_in_strict_mode(name):
    report = lint(CHART, VALUES[name], strict=True, namespace="platone")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


@pytest.mark.parametrize(
    "values, says",
    [
        ({"replicaCount": 0}, "replicaCount"),
        ({"replicaCount": "three"}, "replicaCount"),
        ({"podAntiAffinity": "sometimes"}, "podAntiAffinity"),
        ({"config": {"logFormat": "xml"}}, "logFormat"),
        ({"chain": {"contract": "0x1234"}}, "contract"),
        ({"chain": {"embedded": True}, "replicaCount": 3}, "replicaCount"),
        ({"securityContext": {"readOnlyRootFilesystem": False, "allowPrivilegeEscalation": False}}, "readOnlyRootFilesystem"),
        ({"config": {"extraEnv": {"BAL_KEYS__MASTER_KEY": "x" * 20}}}, "extraEnv"),
        ({"replicas": 3}, "replicas"),
        ({"database": {"existingSecret": "Not A Name"}}, "existingSecret"),
    ],
)
def test_wrong_values_are_refused_with_the_key_named(values, says):
    chart = Chart.load(CHART)
    with pytest.raises(HelmError) as refused:
        chart.render(values, name="bal", namespace="platone", is_install=True)
    assert says in str(refused.value), str(refused.value)


def test_every_manifest_passes_kubernetes_validate_strict(rendered, tmp_path):
    name, objects = rendered
    files = []
    for (kind, obj_name), obj in objects.items():
        if kind in CRDS:
            continue
        f = tmp_path / f"{kind}-{obj_name}.yaml"
        f.write_text(yaml.safe_dump(obj))
        files.append(str(f))
    assert len(files) >= 10, files
    bin_dir = Path(os.environ.get("VIRTUAL_ENV", ROOT / "target" / "py")) / "bin"
    done = subprocess.run(
        [str(bin_dir / "kubernetes-validate"), "--strict", "--quiet", *files],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_service_monitor_scrapes_the_metrics_port_of_the_headless_service():
    objects = render(PRODUCTION)
    sm = objects[("ServiceMonitor", "bal")]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "scheme": "http", "path": "/metrics", "interval": "30s"}
    selected = [
        o
        for (kind, _), o in objects.items()
        if kind == "Service"
        and all(o["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    ]
    assert [s["metadata"]["name"] for s in selected] == ["bal-headless"]
    assert "metrics" in [p["name"] for p in selected[0]["spec"]["ports"]]
    assert "ServiceMonitor" not in [k for k, _ in render(None)]


# --- what the objects say ---------------------------------------------------------------------


def bal_pod(objects):
    return objects[("StatefulSet", "bal")]["spec"]["template"]["spec"]


def served_paths():
    """The paths `bal` serves outside the OpenAPI document, and those in it."""
    doc = json.loads(subprocess.run([BAL, "config", "openapi"], check=True, capture_output=True, text=True).stdout)
    return set(doc["paths"])


def test_probes_ask_paths_and_ports_bal_serves(rendered):
    _, objects = rendered
    pod = bal_pod(objects)
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = toml_of(objects)
    assert ports["https"] == int(config["http"]["listen"].rsplit(":", 1)[1])
    paths = served_paths()
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"]:
        get = container[probe]["httpGet"]
        assert get["path"] in paths, (probe, get)
        assert get["port"] in ports and get["scheme"] == "HTTPS", (probe, get)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    if "metrics" in ports:
        assert config["metrics"]["listen"].endswith(f":{ports['metrics']}")


def test_pods_are_locked_down(rendered):
    _, objects = rendered
    for (kind, name), obj in objects.items():
        if kind not in ("StatefulSet", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert "resources" in c, (name, c["name"])


def test_replicas_spread_with_a_disruption_budget_and_migrations_in_a_hook(rendered):
    name, objects = rendered
    sts = objects[("StatefulSet", "bal")]
    assert sts["spec"]["replicas"] == (3 if name == "production" else 2)
    pod = sts["spec"]["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]
    key = "requiredDuringSchedulingIgnoredDuringExecution" if name == "production" else "preferredDuringSchedulingIgnoredDuringExecution"
    assert key in anti
    assert {"name": "data", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]
    pdb = objects[("PodDisruptionBudget", "bal")]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]
    job = objects[("Job", "bal-migrate")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["db", "migrate"]
    # Replicas never migrate: only the job does, so that pods never race to migrate.
    assert toml_of(objects)["database"]["auto_migrate"] is False
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["BAL_CLUSTER__REPLICA_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_generated_secrets_are_kept_hooks_and_named_ones_are_not_generated(rendered):
    name, objects = rendered
    secrets = {n: o for (k, n), o in objects.items() if k == "Secret"}
    if name == "production":
        assert not secrets, list(secrets)
        return
    assert set(secrets) == {"bal-keys", "bal-tls", "bal-mosquitto-tls"}
    for s in secrets.values():
        a = s["metadata"]["annotations"]
        assert a["helm.sh/resource-policy"] == "keep" and a["helm.sh/hook"] == "pre-install"
        assert "helm.sh/hook-delete-policy" not in a
    keys = {k: base64.b64decode(v).decode() for k, v in secrets["bal-keys"]["data"].items()}
    assert re.fullmatch(r"[0-9a-f]{64}", keys["operator-key"]), "a secp256k1 key as hex"
    assert len(keys["master-key"]) >= 16


def test_no_secret_reaches_a_config_map_or_a_plain_environment_variable(rendered):
    name, objects = rendered
    secrets = secret_values(objects)
    for (kind, obj_name), obj in objects.items():
        if kind == "ConfigMap":
            text = json.dumps(obj)
            for key, value in secrets.items():
                assert value not in text, f"{key} in ConfigMap {obj_name}"
    for (kind, obj_name), obj in objects.items():
        if kind not in ("StatefulSet", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            for e in c.get("env", []):
                if re.search(r"PASSWORD|MASTER_KEY|OPERATOR_KEY|DATABASE__URL|RPC_URL", e["name"]):
                    assert "secretKeyRef" in e.get("valueFrom", {}), (obj_name, e)


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


def test_bal_accepts_every_setting_the_chart_passes(rendered, tmp_path):
    name, objects = rendered
    secrets = operator_secrets(tmp_path) | rendered_secrets(objects)
    pod = bal_pod(objects)
    replica = Replica(objects, pod, secrets, tmp_path / "bal-0", "bal-0", https=8443, metrics=9090, mosquitto=8883)
    done = subprocess.run([BAL, "config", "check"], env=replica.env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "broker:    Mosquitto at mqtts://localhost:8883" in done.stdout, done.stdout
    assert "database:  PostgreSQL" in done.stdout
    assert "replica:   bal-0" in done.stdout
    for value in secret_values(objects).values():
        assert value not in done.stdout + done.stderr


# --- the rendered configuration, started here ---------------------------------------------------


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


def env_of(container, secrets, pod_name):
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", e
            env[e["name"]] = pod_name
    return env


class Replica:
    """One pod of the StatefulSet, as the files and processes it would have here."""

    def __init__(self, objects, pod, secrets, root, pod_name, https, metrics, mosquitto):
        configmaps = {n: o["data"] for (k, n), o in objects.items() if k == "ConfigMap"}
        (container,) = pod["containers"]
        self.container = container
        mounts = materialise(pod, container, secrets, configmaps, root)
        hosts = {"bal-mosquitto:8883": f"localhost:{mosquitto}"}
        for f in mounts.values():
            for file in f.glob("*.toml"):
                file.write_text(localise(file.read_text(), mounts, hosts))
        env = {k: localise(v, mounts, hosts) for k, v in env_of(container, secrets, pod_name).items()}
        self.command = [BAL if container["command"][0].endswith("/bal") else container["command"][0],
                        *container["command"][1:], *container.get("args", [])]
        # The pod's own addresses on the pod network become ports of loopback.
        env["BAL_HTTP__LISTEN"] = f"127.0.0.1:{https}"
        env["BAL_METRICS__LISTEN"] = f"127.0.0.1:{metrics}"
        self.env = {"PATH": os.environ["PATH"], "RUST_LOG": "warn"} | env
        self.https, self.metrics = https, metrics
        self.ports = {p["name"]: {"https": https, "metrics": metrics}[p["name"]] for p in container["ports"]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, seconds=90):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (requests.RequestException, OSError) as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"{what} within {seconds} s (last error: {last})")


@pytest.fixture
def database():
    admin = os.environ.get("BAL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = f"bal_test_chart_{os.getpid()}"
    psql = lambda sql: subprocess.run(["psql", admin, "-Atqc", sql], check=True, capture_output=True)
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"')
    yield admin.rsplit("/", 1)[0] + "/" + name
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_rendered_configuration_starts_and_every_replica_becomes_ready(tmp_path, database):
    for tool in ["BAL_TEST_MOSQUITTO", "BAL_TEST_ANVIL"]:
        assert os.environ.get(tool), f"{tool} is not set: run scripts/check-deploy from scripts/test"
    values = copy.deepcopy(PRODUCTION)
    objects = render(values)
    chain_port, mqtt_port = free_port(), free_port()
    secrets = operator_secrets(tmp_path, database_url=database, rpc_url=f"http://127.0.0.1:{chain_port}")
    processes = []
    cleanup = []
    try:
        # Mosquitto: the chart's ConfigMap and init script, with this machine's paths.
        mosq = objects[("StatefulSet", "bal-mosquitto")]["spec"]["template"]["spec"]
        configmaps = {n: o["data"] for (k, n), o in objects.items() if k == "ConfigMap"}
        # Outside pytest's private folder: Mosquitto started as root runs as the user mosquitto.
        mroot = Path(tempfile.mkdtemp(prefix="bal-chart-mosquitto-"))
        cleanup.append(mroot)
        mroot.chmod(0o755)
        init = mosq["initContainers"][0]
        mounts = materialise(mosq, init, secrets, configmaps, mroot)
        broker = mosq["containers"][0]
        mounts |= materialise(mosq, broker, secrets, configmaps, mroot)
        plugin = subprocess.run("find /usr/lib* -name mosquitto_dynamic_security.so | head -n 1", shell=True,
                                capture_output=True, text=True).stdout.strip()
        conf_dir = mounts["/mosquitto/config"]
        conf = localise(configmaps["bal-mosquitto"]["mosquitto.conf"], mounts, {})
        conf = conf.replace("plugin /usr/lib/mosquitto_dynamic_security.so", f"plugin {plugin}")
        conf = conf.replace("listener 8883", f"listener {mqtt_port} 127.0.0.1")
        (conf_dir / "mosquitto.conf").write_text(conf)
        script = localise(configmaps["bal-mosquitto"]["bootstrap.sh"], mounts, {})
        (conf_dir / "bootstrap.sh").write_text(script)
        init_env = {"PATH": os.environ["PATH"]} | env_of(init, secrets, "bal-mosquitto-0")
        for attempt in ("first start", "restart"):
            done = subprocess.run(["/bin/sh", str(conf_dir / "bootstrap.sh")], env=init_env, capture_output=True, text=True)
            assert done.returncode == 0, (attempt, done.stderr)
        assert "left as it is" in done.stdout, "the init step must keep the dynsec file of a restarted broker"
        if os.geteuid() == 0:
            # What the pod's fsGroup does: the broker's user owns its volumes.
            subprocess.run(["chown", "-R", "mosquitto:", str(mroot)], check=True)
        processes.append(subprocess.Popen([os.environ["BAL_TEST_MOSQUITTO"], "-c", str(conf_dir / "mosquitto.conf")],
                                          stderr=open(tmp_path / "mosquitto.log", "w")))
        # The Ethereum node outside the chart, with the chain id the values name.
        processes.append(subprocess.Popen([os.environ["BAL_TEST_ANVIL"], "--port", str(chain_port), "--chain-id",
                                           str(values["chain"]["chainId"]), "--silent"]))
        wait_for("anvil", lambda: socket.create_connection(("127.0.0.1", chain_port), 1).close() or True)

        # The pre-install hook: migrations, once, before any replica.
        job = objects[("Job", "bal-migrate")]["spec"]["template"]["spec"]
        (jc,) = job["containers"]
        jmounts = materialise(job, jc, secrets, configmaps, tmp_path / "migrate-pod")
        jenv = {"PATH": os.environ["PATH"]} | {k: localise(v, jmounts, {}) for k, v in env_of(jc, secrets, "migrate").items()}
        done = subprocess.run([BAL, *jc["args"]], env=jenv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "pw@" not in done.stdout + done.stderr

        pod = bal_pod(objects)
        replicas = [
            Replica(objects, pod, secrets, tmp_path / f"bal-{i}", f"bal-{i}", free_port(), free_port(), mqtt_port)
            for i in range(objects[("StatefulSet", "bal")]["spec"]["replicas"])
        ]
        for r in replicas:
            processes.append(subprocess.Popen(r.command, env=r.env, stdout=subprocess.DEVNULL,
                                              stderr=open(tmp_path / f"{r.env['BAL_CLUSTER__REPLICA_ID']}.log", "w")))
        ca = secrets["_ca"]["ca.crt"]
        for r in replicas:
            c = r.container
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"]:
                get = c[probe]["httpGet"]
                url = f"https://127.0.0.1:{r.ports[get['port']]}{get['path']}"
                wait_for(f"{probe} {url}", lambda: requests.get(url, verify=ca, timeout=3).status_code == 200)
            body = requests.get(f"https://127.0.0.1:{r.https}/readyz", verify=ca, timeout=3).json()
            assert body["status"] == "ready", body
            names = [f"bal-{i}" for i in range(len(replicas))]
            wait_for("every replica live", lambda: sorted(
                requests.get(f"https://127.0.0.1:{r.https}/readyz", verify=ca, timeout=3).json()["cluster"]["replicas"]) == names)
            wait_for("broker and chain up", lambda: all(
                d["state"] == "up" for d in requests.get(f"https://127.0.0.1:{r.https}/readyz", verify=ca, timeout=3).json()["dependencies"].values()))
            metrics = requests.get(f"http://127.0.0.1:{r.metrics}/metrics", timeout=3).text
            assert "bal_ready 1" in metrics, metrics
            # The image's HEALTHCHECK: `bal health` with the pod's environment.
            health = subprocess.run([BAL, "health"], env=r.env, capture_output=True, text=True)
            assert health.returncode == 0, health.stdout + health.stderr
        # All agree on one certification lease holder among them.
        def holders():
            return {
                requests.get(f"https://127.0.0.1:{r.https}/readyz", verify=ca, timeout=3).json()["cluster"].get("lease_holder")
                for r in replicas
            }

        wait_for("one lease holder", lambda: len(holders()) == 1 and None not in holders())
    finally:
        for p in processes:
            p.terminate()
        for d in cleanup:
            shutil.rmtree(d, ignore_errors=True)
        for p in processes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in sorted(tmp_path.glob("*.log")):
            text = log.read_text()
            if text.strip():
                print(f"--- {log.name}\n{text[-4000:]}")
