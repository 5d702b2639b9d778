"""The Helm chart, checked without a cluster (run by scripts/check-deploy).

Renders and lints the chart with the Helm SDK (helm-python-sdk) in both layouts (the embedded
MQTT cluster, the default, and the Mosquitto option), validates every manifest with
kubernetes-validate --strict, asserts what matters in the rendered objects, and has `bal config
check` parse the settings the chart passes. test_chart_started.py starts what it renders.

Environment: BAL_BIN (the bal binary). Without it, `-m "not needs_bal"` runs the checks that
only render, lint and validate.
"""

import base64
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helm_python.chart import Chart, lint
from helm_python.errors import HelmError

from chart_harness import (
    BAL,
    CHART,
    CLUSTER_LAYOUTS,
    MOSQUITTO_LAYOUTS,
    POD_INDEX,
    PRODUCTION,
    ROOT,
    VALUES,
    Replica,
    bal_container,
    bal_pod,
    env_of,
    is_cluster,
    needs_bal,
    operator_secrets,
    plain_env,
    port_of,
    render,
    rendered_secrets,
    secret_values,
    toml_of,
)

CRDS = {"ServiceMonitor"}


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
        ({"broker": {"mode": "rabbitmq"}}, "/broker/mode"),
        # The NetworkPolicy is what keeps the unauthenticated cluster port private.
        ({"networkPolicy": {"enabled": False}}, "/networkPolicy/enabled"),
        ({"mqtt": {"cluster": {"port": 8883}}}, "mqtt.cluster.port"),
        ({"mqtt": {"cluster": {"port": 9090}}}, "mqtt.cluster.port"),
        ({"clusterDomain": "Cluster Local"}, "clusterDomain"),
        # The chart's own settings, and what would open the cluster port or plain MQTT.
        ({"config": {"extraEnv": {"BAL_MQTT__CLUSTER__ALLOW_PUBLIC": "true"}}}, "extraEnv/BAL_MQTT__CLUSTER__ALLOW_PUBLIC"),
        ({"config": {"extraEnv": {"BAL_MQTT__CLUSTER__PEERS": "1@evil:5363"}}}, "extraEnv/BAL_MQTT__CLUSTER__PEERS"),
        ({"config": {"extraEnv": {"BAL_MQTT__ALLOW_PLAIN_REMOTE": "true"}}}, "extraEnv/BAL_MQTT__ALLOW_PLAIN_REMOTE"),
        ({"config": {"extraEnv": {"BAL_BROKER__KIND": "mosquitto"}}}, "extraEnv/BAL_BROKER__KIND"),
    ],
)
def test_wrong_values_are_refused_with_the_key_named(values, says):
    chart = Chart.load(CHART)
    with pytest.raises(HelmError) as refused:
        chart.render(values, name="bal", namespace="platone", is_install=True)
    assert says in str(refused.value), str(refused.value)


def test_the_mosquitto_layout_may_run_without_the_network_policy():
    """Only the embedded cluster needs the NetworkPolicy (its cluster port); Mosquitto's layout
    keeps the switch it had."""
    objects = render({"broker": {"mode": "mosquitto"}, "networkPolicy": {"enabled": False}})
    assert not [n for (k, n) in objects if k == "NetworkPolicy"]


def test_every_manifest_passes_kubernetes_validate_strict(rendered, tmp_path):
    name, objects = rendered
    files = []
    for (kind, obj_name), obj in objects.items():
        if kind in CRDS:
            continue
        f = tmp_path / f"{kind}-{obj_name}.yaml"
        f.write_text(yaml.safe_dump(obj))
        files.append(str(f))
    kinds = {k for k, _ in objects}
    assert {"StatefulSet", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Job"} <= kinds, kinds
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
    mosquitto = render(VALUES["production-mosquitto"])[("ServiceMonitor", "bal")]
    assert mosquitto["spec"] == sm["spec"]


# --- what the objects say ---------------------------------------------------------------------


def served_paths():
    """The paths `bal` serves outside the OpenAPI document, and those in it."""
    doc = json.loads(subprocess.run([BAL, "config", "openapi"], check=True, capture_output=True, text=True).stdout)
    return set(doc["paths"])


@needs_bal
def test_probes_ask_paths_and_ports_bal_serves(rendered):
    _, objects = rendered
    container = bal_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    paths = served_paths()
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"]:
        get = container[probe]["httpGet"]
        assert get["path"] in paths, (probe, get)
        assert get["port"] in ports and get["scheme"] == "HTTPS", (probe, get)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_container_ports_are_the_ports_bal_listens_on(rendered):
    """Each named container port is the port of the listener bal.toml or the environment sets,
    and every Service sends to a port the container has."""
    name, objects = rendered
    container = bal_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config, env = toml_of(objects), plain_env(container)
    listeners = {"https": config["http"]["listen"]}
    if config["metrics"]["listen"] != "off":
        listeners["metrics"] = config["metrics"]["listen"]
    if is_cluster(objects):
        listeners["mqtts"] = config["mqtt"]["listen_tls"]
        listeners["mqtt-cluster"] = env["BAL_MQTT__CLUSTER__LISTEN"]
    assert {n: port_of(a) for n, a in listeners.items()} == ports, (name, listeners, ports)
    assert config["mqtt"]["listen"] == "off", "no plain MQTT in the chart"
    selector = objects[("StatefulSet", "bal")]["spec"]["selector"]["matchLabels"]
    for (kind, svc_name), svc in objects.items():
        if kind == "Service" and svc["spec"]["selector"] == selector:
            for p in svc["spec"]["ports"]:
                assert p["targetPort"] in ports, (svc_name, p)
    assert "hostPort" not in json.dumps(bal_pod(objects))


def test_pods_are_locked_down(rendered):
    _, objects = rendered
    for (kind, name), obj in objects.items():
        if kind not in ("StatefulSet", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        assert "hostNetwork" not in pod, name
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert "resources" in c, (name, c["name"])


def test_replicas_spread_with_a_disruption_budget_and_migrations_in_a_hook(rendered):
    name, objects = rendered
    production = name.startswith("production")
    sts = objects[("StatefulSet", "bal")]
    assert sts["spec"]["replicas"] == (3 if production else 2)
    pod = sts["spec"]["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]
    key = "requiredDuringSchedulingIgnoredDuringExecution" if production else "preferredDuringSchedulingIgnoredDuringExecution"
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
    if name.startswith("production"):
        assert not secrets, list(secrets)
        return
    # No Mosquitto certificate for the embedded cluster: the replicas serve MQTT with bal-tls.
    expected = {"bal-keys", "bal-tls"} | ({"bal-mosquitto-tls"} if "mosquitto" in name else set())
    assert set(secrets) == expected
    for s in secrets.values():
        a = s["metadata"]["annotations"]
        assert a["helm.sh/resource-policy"] == "keep" and a["helm.sh/hook"] == "pre-install"
        assert "helm.sh/hook-delete-policy" not in a
    keys = {k: base64.b64decode(v).decode() for k, v in secrets["bal-keys"]["data"].items()}
    assert re.fullmatch(r"[0-9a-f]{64}", keys["operator-key"]), "a secp256k1 key as hex"
    assert len(keys["master-key"]) >= 16


def test_the_generated_certificate_names_the_mqtt_service_of_the_cluster():
    names = certificate_names(render(None)[("Secret", "bal-tls")])
    assert {"bal-mqtt", "bal-mqtt.platone.svc", "bal.platone.svc", "*.bal-headless.platone.svc"} <= names, names
    names = certificate_names(render({"config": {"extraTlsNames": ["mqtt.dso.example"]}})[("Secret", "bal-tls")])
    assert "mqtt.dso.example" in names


def certificate_names(secret):
    pem = base64.b64decode(secret["data"]["tls.crt"])
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem,
                          capture_output=True, check=True).stdout.decode()
    return set(re.findall(r"DNS:([^,\s]+)", text))


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


# --- the embedded MQTT cluster (the default layout) -------------------------------------------


@pytest.mark.parametrize("name", CLUSTER_LAYOUTS)
def test_the_embedded_cluster_has_no_mosquitto(name):
    objects = render(VALUES[name])
    mosquitto = [(k, n) for (k, n), o in objects.items()
                 if "mosquitto" in n or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "mosquitto"]
    assert not mosquitto, mosquitto
    config = toml_of(objects)
    assert config["broker"] == {"kind": "embedded"}
    assert config["mqtt"] == {"listen": "off", "listen_tls": "0.0.0.0:8883"}
    pod = bal_pod(objects)
    text = json.dumps(pod)
    assert "mosquitto" not in text
    # No dynsec admin to log in as, so no Secret key the operator would have to create for it.
    assert "BAL_BROKER__ADMIN_PASSWORD" not in text
    # The chart never opens the cluster port to public addresses, nor plain MQTT to the network.
    assert "ALLOW_PUBLIC" not in text and "ALLOW_PLAIN_REMOTE" not in text
    assert "allow_public" not in objects[("ConfigMap", "bal-config")]["data"]["bal.toml"]


def cluster_env(objects, index):
    """The MQTT cluster's settings of the replica with this pod index, as the pod would have them."""
    env = env_of(bal_container(objects), {}, f"bal-{index}", index, secrets_too=False)
    return {k: v for k, v in env.items() if k.startswith("BAL_MQTT__CLUSTER__")}


@pytest.mark.parametrize("name", CLUSTER_LAYOUTS)
def test_every_replica_has_the_same_peers_and_its_node_id_from_its_pod_index(name):
    objects = render(VALUES[name])
    sts = objects[("StatefulSet", "bal")]
    replicas = sts["spec"]["replicas"]
    port = (VALUES[name] or {}).get("mqtt", {}).get("cluster", {}).get("port", 5363)
    env = {e["name"]: e for e in bal_container(objects)["env"]}
    # The node id: the pod's index (a label the StatefulSet controller sets), + 1 in bal.
    assert env["BAL_MQTT__CLUSTER__POD_INDEX"]["valueFrom"] == {"fieldRef": {"fieldPath": POD_INDEX}}
    assert "BAL_MQTT__CLUSTER__NODE_ID" not in env
    assert env["BAL_MQTT__CLUSTER__LISTEN"]["value"] == f"0.0.0.0:{port}"
    settings = [cluster_env(objects, i) for i in range(replicas)]
    assert [s["BAL_MQTT__CLUSTER__POD_INDEX"] for s in settings] == [str(i) for i in range(replicas)]
    peers = {s["BAL_MQTT__CLUSTER__PEERS"] for s in settings}
    assert len(peers) == 1, "every replica must name the same nodes"
    (peers,) = peers
    headless = sts["spec"]["serviceName"]
    assert peers.split(",") == [
        f"{i + 1}@bal-{i}.{headless}.platone.svc.cluster.local:{port}" for i in range(replicas)
    ]
    # Those names exist: the StatefulSet's governing service is headless, has the cluster
    # port, and publishes pods before they are ready (nodes find one another while starting).
    svc = objects[("Service", headless)]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert {"name": "mqtt-cluster", "port": port, "targetPort": "mqtt-cluster", "protocol": "TCP"} in svc["spec"]["ports"]


def test_the_peers_follow_the_replica_count_and_the_cluster_domain():
    objects = render({"replicaCount": 5, "clusterDomain": "k8s.dso.example", "mqtt": {"cluster": {"port": 7000}}})
    peers = cluster_env(objects, 4)["BAL_MQTT__CLUSTER__PEERS"].split(",")
    assert peers == [f"{i + 1}@bal-{i}.bal-headless.platone.svc.k8s.dso.example:7000" for i in range(5)]
    assert cluster_env(objects, 0)["BAL_MQTT__CLUSTER__LISTEN"] == "0.0.0.0:7000"
    one = render({"replicaCount": 1, "chain": {"embedded": True}})
    assert cluster_env(one, 0)["BAL_MQTT__CLUSTER__PEERS"] == "1@bal-0.bal-headless.platone.svc.cluster.local:5363"


def policy_rules_for(objects, port_name):
    """The ingress rules, of every NetworkPolicy that selects the BAL pods, admitting port_name
    (a rule without ports admits every port)."""
    selector = objects[("StatefulSet", "bal")]["spec"]["selector"]["matchLabels"]
    rules = []
    for (kind, _), policy in objects.items():
        if kind != "NetworkPolicy":
            continue
        chosen = policy["spec"]["podSelector"].get("matchLabels", {})
        if not all(selector.get(k) == v for k, v in chosen.items()):
            continue
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            if "ports" not in rule or any(p["port"] == port_name for p in rule["ports"]):
                rules.append(rule)
    return rules


@pytest.mark.parametrize("name", CLUSTER_LAYOUTS)
def test_the_network_policy_admits_the_cluster_port_only_from_the_release_pods(name):
    objects = render(VALUES[name])
    selector = objects[("StatefulSet", "bal")]["spec"]["selector"]["matchLabels"]
    (rule,) = policy_rules_for(objects, "mqtt-cluster")
    assert rule["ports"] == [{"port": "mqtt-cluster", "protocol": "TCP"}]
    # A podSelector alone: this namespace's pods, and of them this release's replicas. No
    # namespaceSelector, no ipBlock.
    assert rule["from"] == [{"podSelector": {"matchLabels": selector}}]
    assert selector["app.kubernetes.io/instance"] == "bal" and selector["app.kubernetes.io/component"] == "bal"
    # Clients: HTTPS and MQTT over TLS as the values say, metrics from the monitoring namespace.
    values = VALUES[name] or {}
    (https,) = policy_rules_for(objects, "https")
    assert https.get("from", []) == values.get("networkPolicy", {}).get("httpsFrom", [])
    (mqtts,) = policy_rules_for(objects, "mqtts")
    assert mqtts["ports"] == [{"port": "mqtts", "protocol": "TCP"}]
    assert mqtts.get("from", []) == values.get("networkPolicy", {}).get("mqttFrom", [])
    (metrics,) = policy_rules_for(objects, "metrics")
    assert [list(f) for f in metrics["from"]] == [["namespaceSelector"]]
    # No Service gives the cluster port an address: only the headless one names it.
    for (kind, svc_name), svc in objects.items():
        if kind == "Service" and svc_name != "bal-headless":
            assert all(p["targetPort"] != "mqtt-cluster" for p in svc["spec"]["ports"]), svc_name


@pytest.mark.parametrize("name", CLUSTER_LAYOUTS)
def test_the_services_expose_mqtt_over_tls_from_the_bal_pods(name):
    objects = render(VALUES[name])
    selector = objects[("StatefulSet", "bal")]["spec"]["selector"]["matchLabels"]
    ports = {p["name"]: p["containerPort"] for p in bal_container(objects)["ports"]}
    assert ports["mqtts"] == port_of(toml_of(objects)["mqtt"]["listen_tls"]) == 8883
    for svc_name in ["bal", "bal-mqtt"]:
        svc = objects[("Service", svc_name)]
        assert svc["spec"]["selector"] == selector, svc_name
        assert {"name": "mqtts", "port": 8883, "targetPort": "mqtts", "protocol": "TCP"} in svc["spec"]["ports"]
    assert [p["name"] for p in objects[("Service", "bal")]["spec"]["ports"]] == ["https", "mqtts"]
    assert objects[("Service", "bal")]["spec"]["type"] == "ClusterIP"
    assert [p["name"] for p in objects[("Service", "bal-mqtt")]["spec"]["ports"]] == ["mqtts"]
    assert objects[("Service", "bal-mqtt")]["spec"]["type"] == "LoadBalancer"
    assert ("Service", "bal-mqtt") not in render({"mqtt": {"service": {"enabled": False}}})


# --- the Mosquitto option ---------------------------------------------------------------------


@pytest.mark.parametrize("name", MOSQUITTO_LAYOUTS)
def test_the_mosquitto_option_renders_mosquitto_and_shares_its_ingest(name):
    objects = render(VALUES[name])
    for kind, obj_name in [("StatefulSet", "bal-mosquitto"), ("Service", "bal-mosquitto"),
                           ("Service", "bal-mosquitto-headless"), ("ConfigMap", "bal-mosquitto"),
                           ("NetworkPolicy", "bal-mosquitto")]:
        assert (kind, obj_name) in objects, (kind, obj_name)
    mosq = objects[("StatefulSet", "bal-mosquitto")]["spec"]["template"]["spec"]
    assert [c["name"] for c in mosq["initContainers"]] == ["bootstrap"]
    assert "mosquitto_ctrl dynsec init" in objects[("ConfigMap", "bal-mosquitto")]["data"]["bootstrap.sh"]
    config = toml_of(objects)
    assert config["broker"]["kind"] == "mosquitto"
    assert config["broker"]["url"] == "mqtts://bal-mosquitto:8883"
    assert config["mqtt"] == {"listen": "off", "listen_tls": "off"}
    replicas = objects[("StatefulSet", "bal")]["spec"]["replicas"]
    assert replicas > 1
    # Two replicas with plain subscriptions would each store every reading (bal refuses it).
    assert config["broker"]["shared_ingest"] is True
    container = bal_container(objects)
    env = {e["name"]: e for e in container["env"]}
    assert env["BAL_BROKER__ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "broker-admin-password"
    assert not [n for n in env if n.startswith("BAL_MQTT__CLUSTER__")]
    assert [p["name"] for p in container["ports"]] == ["https", "metrics"]
    assert ("Service", "bal-mqtt") not in objects
    assert [p["name"] for p in objects[("Service", "bal")]["spec"]["ports"]] == ["https"]
    headless = objects[("Service", "bal-headless")]
    assert [p["name"] for p in headless["spec"]["ports"]] == ["https", "metrics"]
    assert policy_rules_for(objects, "mqtt-cluster") == []
    assert policy_rules_for(objects, "mqtts") == []


@needs_bal
def test_bal_accepts_every_setting_the_chart_passes(rendered, tmp_path):
    name, objects = rendered
    secrets = operator_secrets(tmp_path) | rendered_secrets(objects)
    pod = bal_pod(objects)
    replicas = objects[("StatefulSet", "bal")]["spec"]["replicas"]
    # The pod's own addresses and the peers' DNS names as the chart renders them: `config
    # check` binds and resolves nothing. Only the Mosquitto host is the test's.
    replica = Replica(objects, pod, secrets, tmp_path / "bal-0", 0, ports=None,
                      hosts={"bal-mosquitto:8883": "localhost:8883"})
    done = subprocess.run([BAL, "config", "check"], env=replica.env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    if is_cluster(objects):
        assert f"broker:    embedded, MQTT cluster node 1 of {replicas}" in done.stdout, done.stdout
    else:
        assert "broker:    Mosquitto at mqtts://localhost:8883" in done.stdout, done.stdout
    assert "database:  PostgreSQL" in done.stdout
    assert "replica:   bal-0" in done.stdout
    for value in secret_values(objects).values():
        assert value not in done.stdout + done.stderr
