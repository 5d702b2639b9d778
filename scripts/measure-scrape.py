"""What a Prometheus scrape costs a BAL: medians of /metrics, /readyz and /healthz on one server,
in one run, after READINGS readings were uploaded and anchored.

  target/py/bin/python scripts/measure-scrape.py target/debug/bal postgres://postgres@127.0.0.1:5432/DB 200 5

(the database must exist and be empty; the last two arguments: requests per path, uploads of
10 000 readings). Prints one JSON line.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import requests

bal, database, n, uploads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data = tempfile.mkdtemp()
ca = f"{data}/tls/ca.pem"
env = dict(os.environ, BAL_DATABASE__URL=database, BAL_HTTP__LISTEN="127.0.0.1:18443",
           BAL_METRICS__LISTEN="127.0.0.1:19090", BAL_MQTT__LISTEN="off", BAL_MQTT__LISTEN_TLS="off",
           BAL_ADMIN_PASSWORD="measure-admin-pw", RUST_LOG="error", BAL_DATA_DIR=data)
server = subprocess.Popen([bal, "serve"], env=env, stdout=subprocess.DEVNULL)
base = "https://127.0.0.1:18443"
# Not the environment's CA bundle (REQUESTS_CA_BUNDLE would override a session's own).
https = requests.Session()
https.trust_env = False
try:
    for _ in range(300):
        try:
            if https.get(base + "/readyz", verify=ca, timeout=2).status_code == 200:
                break
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.2)
    https.verify = ca
    token = https.post(base + "/api/auth/login", json={"username": "admin", "password": "measure-admin-pw"}).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    https.post(base + "/api/users", headers=auth, json={"username": "meter1", "password": "a-good-long-password", "role": "producer"})
    for _ in range(uploads):
        r = https.post(base + "/api/measurements?topic=platone/meter1", headers=auth, json=[{"v": j} for j in range(10000)])
        assert r.status_code == 201, r.text
    metrics_url = "http://127.0.0.1:19090/metrics"
    plain = requests.Session()
    for _ in range(100):
        if "bal_certification_backlog{stage=\"unbatched\"} 0" in plain.get(metrics_url).text:
            break
        time.sleep(0.2)

    def median_ms(session, url):
        took = []
        for _ in range(n):
            started = time.perf_counter()
            assert session.get(url, timeout=5).status_code == 200
            took.append(time.perf_counter() - started)
        return round(statistics.median(took) * 1000, 2)

    healthz, readyz, metrics = median_ms(https, base + "/healthz"), median_ms(https, base + "/readyz"), median_ms(plain, metrics_url)
    text = plain.get(metrics_url).text
    print(json.dumps({
        "readings": uploads * 10000,
        "median_ms": {"healthz": healthz, "readyz": readyz, "metrics": metrics},
        "metrics_over_readyz": round(metrics / readyz, 2),
        "bytes": len(text),
        "series": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
    }))
finally:
    server.terminate()
    server.wait()
