"""A device the BAL's authors did not write, receiving set points: paho-mqtt subscribes to
`setpoints/<USERNAME>/<DEVICE>` at QoS 1 with a persistent session and answers each set point on
its ack topic, as a field device would. Used by setpoints.rs.

    python paho_setpoint_device.py HOST PORT USERNAME PASSWORD CLIENT_ID DEVICE VERSION ANSWER

VERSION is 3 (3.1.1) or 5. ANSWER is `apply` (answers `received`, then `applied` with the
values) or `reject:<reason>` (answers `received`, then `rejected` with the reason).

With MQTT 5 the device answers on the message's Response Topic with its Correlation Data, as
MQTT 5 request/response asks; with 3.1.1 it answers on `<topic>/ack` with the id from the payload.
A set point whose `seq` is not above the last one seen is a replay: it is not applied again (the
answers are sent again, so a lost answer is made good). Prints `subscribed`, then for each set
point `got <id> <seq> <correlation data or -> <response topic or -> <values>`; runs until
killed.
"""

import json
import sys
import threading

import paho.mqtt.client as mqtt

host, port, username, password, client_id, device, version, answer = sys.argv[1:9]
v5 = version == "5"
topic = f"setpoints/{username}/{device}"
last_seq = 0
lock = threading.Lock()


def on_connect(client, userdata, flags, reason_code, properties):
    if reason_code.is_failure:
        print(f"connect refused {reason_code}", file=sys.stderr, flush=True)
        return
    client.subscribe(topic, qos=1)


def on_subscribe(client, userdata, mid, reason_codes, properties):
    if all(not rc.is_failure for rc in reason_codes):
        print("subscribed", flush=True)
    else:
        print(f"subscribe refused {reason_codes}", flush=True)


def on_message(client, userdata, message):
    global last_seq
    command = json.loads(message.payload)
    props = message.properties
    correlation = getattr(props, "CorrelationData", None) if v5 else None
    response_topic = getattr(props, "ResponseTopic", None) if v5 else None
    print(
        f"got {command['id']} {command['seq']} "
        f"{correlation.decode() if correlation else '-'} {response_topic or '-'} "
        f"{json.dumps(command['values'], sort_keys=True)}",
        flush=True,
    )
    reply_to = response_topic or f"{message.topic}/ack"
    answer_props = None
    if v5 and correlation is not None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        answer_props = Properties(PacketTypes.PUBLISH)
        answer_props.CorrelationData = correlation
    with lock:
        fresh = command["seq"] > last_seq
        last_seq = max(last_seq, command["seq"])
    if not fresh:
        print(f"replay {command['id']} {command['seq']}", flush=True)

    def send(body):
        client.publish(reply_to, json.dumps(body), qos=1, properties=answer_props)

    send({"id": command["id"], "status": "received"})
    if answer == "apply":
        send({"id": command["id"], "status": "applied", "values": command["values"]})
    else:
        reason = answer.split(":", 1)[1]
        send({"id": command["id"], "status": "rejected", "reason": reason})


if v5:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 3600
    client.username_pw_set(username, password)
    client.connect(host, int(port), keepalive=5, clean_start=False, properties=session)
else:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=False,
    )
    client.username_pw_set(username, password)
    client.connect(host, int(port), keepalive=5)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)
client.loop_forever()
