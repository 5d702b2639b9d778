"""A device the BAL's authors did not write: paho-mqtt publishes readings at QoS 1 with a
persistent session (clean_session = False) and reconnects by itself whenever the server goes
away, as field devices do. Used by crash_loop.rs.

    python paho_device.py HOST PORT USERNAME PASSWORD CLIENT_ID COUNT RATE [3|5 [PREFIX]]

PORT may list several ports (`1883,1884`): the nodes of an MQTT cluster on HOST. The device
starts on the first and, whenever its connection is lost, moves on to the next, as a device
behind a list of broker addresses (or a load balancer) does.

The last argument is the MQTT version: 3 (3.1.1, the default) or 5 (a session that outlives
the connection by an hour). A negative PUBACK (MQTT 5) does not count as acknowledged.
Publishes `COUNT` payloads `<PREFIX>-<i>` (`reading-<i>` by default) on `platone/<USERNAME>`, `RATE` per second, then waits
until every one is acknowledged. At the end it prints `acked <i>` for each reading acknowledged
and `done <acked> <connects>`; exits 1 if some were never acknowledged within the time allowed.
"""

import sys
import threading
import time

import paho.mqtt.client as mqtt

host, ports, username, password, client_id = sys.argv[1:6]
ports = [int(p) for p in ports.split(",")]
count, rate = int(sys.argv[6]), float(sys.argv[7])
v5 = len(sys.argv) > 8 and sys.argv[8] == "5"
prefix = sys.argv[9] if len(sys.argv) > 9 else "reading"

# paho calls on_publish while holding its own lock, which publish() takes too: the callback only
# records the packet id, and the mapping to readings is made outside paho's calls.
lock = threading.Lock()
acked_mids = set()
connects = 0
first_connect = threading.Event()


def on_connect(client, userdata, flags, reason_code, properties):
    global connects
    if not reason_code.is_failure:
        with lock:
            connects += 1
        first_connect.set()


def on_disconnect(client, userdata, flags, reason_code, properties):
    # The next node, for paho's own reconnect, which reads the port again. (paho's `port`
    # setter refuses while the socket is still being torn down, as it is in this callback.)
    if len(ports) > 1:
        client._port = ports[(ports.index(client._port) + 1) % len(ports)]


def on_publish(client, userdata, mid, reason_code, properties):
    if reason_code.is_failure:
        print(f"refused {mid} {reason_code}", file=sys.stderr, flush=True)
        return
    with lock:
        acked_mids.add(mid)


if v5:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
else:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=False,
    )
client.username_pw_set(username, password)
client.on_connect = on_connect
client.on_publish = on_publish
client.on_disconnect = on_disconnect
client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)
client.max_queued_messages_set(0)  # no limit: readings wait for the server to come back
if v5:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 3600
    client.connect_async(host, ports[0], keepalive=5, clean_start=False, properties=session)
else:
    client.connect_async(host, ports[0], keepalive=5)
client.loop_start()
# The first reading waits for the first connection (10 s at most): paho sends a message
# published before the CONNACK after the ones published just after it, so a slow login (an
# Argon2 check on a loaded machine) put reading 0 behind reading 1 on the wire, and the
# cluster test that checks delivery order failed on what the device itself had done.
first_connect.wait(10)

topic = f"platone/{username}"
mid_of = []  # reading number -> packet id
for i in range(count):
    mid_of.append(client.publish(topic, f"{prefix}-{i}".encode(), qos=1).mid)
    time.sleep(1.0 / rate)


def acked():
    with lock:
        return [i for i, mid in enumerate(mid_of) if mid in acked_mids]


deadline = time.monotonic() + 120
while time.monotonic() < deadline and len(acked()) < count:
    time.sleep(0.1)

done = acked()
client.disconnect()
client.loop_stop()
for i in done:
    print(f"acked {i}")
print(f"done {len(done)} {connects}", flush=True)
sys.exit(0 if len(done) == count else 1)
