"""The Helm chart's rendered configuration, started here (run by scripts/check-deploy), in each
layout: the migration job, then every replica of the StatefulSet with its command, environment
and mounted files (pod addresses, the pod index and the peers' cluster DNS names replaced by
loopback ports, distinct per replica), next to PostgreSQL, anvil and, in the Mosquitto layout,
Mosquitto (bootstrapped by the chart's own init script), until /readyz answers 200 on each
replica and, in the embedded cluster, each replica sees every other node of the MQTT cluster up.

Environment: BAL_BIN (the bal binary), BAL_TEST_MOSQUITTO, BAL_TEST_ANVIL,
BAL_TEST_POSTGRES_URL (as scripts/test sets them).
"""

import copy
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from chart_harness import (
    BAL,
    LISTENERS,
    VALUES,
    Replica,
    bal_container,
    bal_pod,
    env_of,
    is_cluster,
    localise,
    materialise,
    needs_bal,
    operator_secrets,
    plain_env,
    render,
)

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


def start_mosquitto(objects, secrets, port, tmp_path, processes, cleanup):
    """Mosquitto on port: the chart's ConfigMap and init script, with this machine's paths."""
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
    conf = conf.replace("listener 8883", f"listener {port} 127.0.0.1")
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


def mqtt_connack(port, ca):
    """MQTT over TLS on port, the certificate checked for localhost against ca: sends an MQTT
    3.1.1 CONNECT with an unknown user and returns the CONNACK's return code."""
    def field(b):
        return len(b).to_bytes(2, "big") + b

    # Protocol level 4, flags: user name, password, clean session; keep-alive 30 s.
    body = field(b"MQTT") + bytes([4, 0xC2]) + (30).to_bytes(2, "big")
    body += field(b"chart-test") + field(b"no-such-user") + field(b"not-a-password")
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(bytes([0x10, len(body)]) + body)
            answer = b""
            while len(answer) < 4:
                chunk = s.recv(4 - len(answer))
                assert chunk, f"connection closed after {answer!r}, no CONNACK"
                answer += chunk
    assert answer[:2] == b"\x20\x02", answer
    return answer[3]


@needs_bal
@pytest.mark.parametrize("layout", ["production", "production-mosquitto"])
def test_the_rendered_configuration_starts_and_every_replica_becomes_ready(layout, tmp_path, database):
    values = copy.deepcopy(VALUES[layout])
    objects = render(values)
    cluster = is_cluster(objects)
    for tool in ["BAL_TEST_ANVIL"] + ([] if cluster else ["BAL_TEST_MOSQUITTO"]):
        assert os.environ.get(tool), f"{tool} is not set: run scripts/check-deploy from scripts/test"
    chain_port, mqtt_port = free_port(), free_port()
    secrets = operator_secrets(tmp_path, database_url=database, rpc_url=f"http://127.0.0.1:{chain_port}")
    configmaps = {n: o["data"] for (k, n), o in objects.items() if k == "ConfigMap"}
    processes = []
    cleanup = []
    try:
        # Names of other pods and services, and what they are here.
        hosts = {}
        if not cluster:
            start_mosquitto(objects, secrets, mqtt_port, tmp_path, processes, cleanup)
            hosts["bal-mosquitto:8883"] = f"localhost:{mqtt_port}"
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
        count = objects[("StatefulSet", "bal")]["spec"]["replicas"]
        # Each replica's own ports: they share this host.
        ports = [{name: free_port() for name in LISTENERS} for _ in range(count)]
        if cluster:
            # The peers' DNS names (one list, the same on every replica) become the replicas'
            # node-to-node ports on loopback.
            for entry in plain_env(bal_container(objects))["BAL_MQTT__CLUSTER__PEERS"].split(","):
                node_id, address = entry.split("@", 1)
                hosts[address] = f"127.0.0.1:{ports[int(node_id) - 1]['mqtt-cluster']}"
            assert len(hosts) == count
        replicas = [Replica(objects, pod, secrets, tmp_path / f"bal-{i}", i, ports[i], hosts) for i in range(count)]
        for r in replicas:
            processes.append(subprocess.Popen(r.command, env=r.env, stdout=subprocess.DEVNULL,
                                              stderr=open(tmp_path / f"{r.name}.log", "w")))
        ca = secrets["_ca"]["ca.crt"]
        names = [r.name for r in replicas]

        def readyz(r):
            return requests.get(f"https://127.0.0.1:{r.ports['https']}/readyz", verify=ca, timeout=3).json()

        for index, r in enumerate(replicas):
            c = r.container
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"]:
                get = c[probe]["httpGet"]
                url = f"https://127.0.0.1:{r.ports[get['port']]}{get['path']}"
                wait_for(f"{probe} {url}", lambda: requests.get(url, verify=ca, timeout=3).status_code == 200)
            body = readyz(r)
            assert body["status"] == "ready", body
            wait_for("every replica live", lambda: sorted(readyz(r)["cluster"]["replicas"]) == names)
            wait_for("broker and chain up", lambda: all(d["state"] == "up" for d in readyz(r)["dependencies"].values()))
            if cluster:
                own = index + 1

                def every_other_node_up():
                    state = readyz(r)["mqtt_cluster"]
                    # The node id from the pod index (+ 1), the peers as the rendered list names them.
                    assert state["node_id"] == own, state
                    peers = {p["node_id"]: p for p in state["peers"] if p["node_id"] != own}
                    assert set(peers) == set(range(1, count + 1)) - {own}, state
                    for node, p in peers.items():
                        assert p["address"].endswith(f"127.0.0.1:{ports[node - 1]['mqtt-cluster']}"), p
                    return all(p["state"] == "up" for p in peers.values())

                wait_for(f"{r.name}: every other node of the MQTT cluster up", every_other_node_up)
                # MQTT over TLS with the replicas' certificate: a stranger gets a refusing CONNACK.
                assert mqtt_connack(r.ports["mqtts"], ca) != 0
            else:
                assert "mqtt_cluster" not in body, body
            metrics = requests.get(f"http://127.0.0.1:{r.ports['metrics']}/metrics", timeout=3).text
            assert "bal_ready 1" in metrics, metrics
            # The image's HEALTHCHECK: `bal health` with the pod's environment.
            health = subprocess.run([BAL, "health"], env=r.env, capture_output=True, text=True)
            assert health.returncode == 0, health.stdout + health.stderr

        # All agree on one certification lease holder among them.
        def holders():
            return {readyz(r)["cluster"].get("lease_holder") for r in replicas}

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
