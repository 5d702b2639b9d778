"""A consumer or a second device the BAL's authors did not write (paho-mqtt), for the MQTT
cluster tests (mqtt_cluster.rs). It reports what the broker said, one line each, flushed:

    connack <reason code> <session present>
    suback <reason code>
    msg <unix time, s> <topic> <payload>
    disconnected <reason code>

    python paho_client.py HOST PORT USERNAME PASSWORD CLIENT_ID SECONDS [options]
      --filter F       subscribe to F after connecting (not when the session is present)
      --persistent     a session that outlives the connection (3.1.1 clean_session = False,
                       MQTT 5 session expiry of an hour)
      --v5             MQTT 5 (default 3.1.1)

It stays connected SECONDS (or until the server ends the connection; it does not reconnect),
then disconnects. Exits 0.
"""

import argparse
import sys
import threading
import time

import paho.mqtt.client as mqtt

parser = argparse.ArgumentParser()
for name in ["host", "port", "username", "password", "client_id", "seconds"]:
    parser.add_argument(name)
parser.add_argument("--filter")
parser.add_argument("--persistent", action="store_true")
parser.add_argument("--v5", action="store_true")
a = parser.parse_args()

ended = threading.Event()


def say(line):
    print(line, flush=True)


def on_connect(client, userdata, flags, reason_code, properties):
    say(f"connack {reason_code.value} {int(flags.session_present)}")
    if reason_code.is_failure:
        ended.set()
        return
    if a.filter and not flags.session_present:
        client.subscribe(a.filter, qos=1)


def on_subscribe(client, userdata, mid, reason_codes, properties):
    for rc in reason_codes:
        say(f"suback {rc.value}")


def on_message(client, userdata, message):
    say(f"msg {time.time():.3f} {message.topic} {message.payload.decode(errors='replace')}")


def on_disconnect(client, userdata, flags, reason_code, properties):
    say(f"disconnected {reason_code.value}")
    ended.set()


if a.v5:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=a.client_id,
        protocol=mqtt.MQTTv5,
    )
else:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=a.client_id,
        protocol=mqtt.MQTTv311,
        clean_session=not a.persistent,
    )
client.username_pw_set(a.username, a.password)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.on_disconnect = on_disconnect
if a.v5:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600 if a.persistent else 0
    client.connect(a.host, int(a.port), keepalive=30, clean_start=not a.persistent, properties=props)
else:
    client.connect(a.host, int(a.port), keepalive=30)
client.loop_start()
ended.wait(float(a.seconds))
client.disconnect()  # also stops paho's reconnecting after the server ended the connection
client.loop_stop()
sys.exit(0)
