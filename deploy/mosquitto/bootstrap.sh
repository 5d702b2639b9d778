#!/usr/bin/env bash
# Prepares a folder for a Mosquitto 2.0 that the BAL drives (broker.kind = "mosquitto"):
# its mosquitto.conf (from mosquitto.conf beside this script), a Dynamic Security file holding
# only the admin that bal logs in as, and a TLS certificate (self-signed CA, unless the folder
# already has tls/server.pem and tls/server.key). Then start the broker with
#   mosquitto -c DIR/mosquitto.conf
# and bal with the settings this script prints.
#
# Usage: bootstrap.sh DIR
# Environment (all optional):
#   MQTT_PORT       plain MQTT port on 127.0.0.1          (1883)
#   MQTTS_PORT      MQTT over TLS port on every address   (8883)
#   TLS_NAMES       extra DNS names for the certificate, space-separated
#   MAX_PAYLOAD_BYTES  largest payload accepted; keep it equal to bal's
#                   ingest.max_payload_bytes                (262144)
#   BAL_BROKER__ADMIN_USERNAME   the dynsec admin            (bal-admin)
#   BAL_BROKER__ADMIN_PASSWORD   its password; unset: generated into DIR/admin-password (0600)
set -euo pipefail

dir=${1:?usage: bootstrap.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
mqtt_port=${MQTT_PORT:-1883}
mqtts_port=${MQTTS_PORT:-8883}
max_payload=${MAX_PAYLOAD_BYTES:-262144}
admin=${BAL_BROKER__ADMIN_USERNAME:-bal-admin}
plugin=/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so

command -v mosquitto_ctrl >/dev/null || { echo "bootstrap.sh: mosquitto_ctrl not found (Debian: apt-get install mosquitto mosquitto-clients)" >&2; exit 2; }
[ -f "$plugin" ] || plugin=$(find /usr/lib* -name mosquitto_dynamic_security.so 2>/dev/null | head -n 1)
[ -n "$plugin" ] || { echo "bootstrap.sh: the Dynamic Security plugin is not installed" >&2; exit 2; }

mkdir -p "$dir/tls"
dir=$(cd "$dir" && pwd)

if [ -n "${BAL_BROKER__ADMIN_PASSWORD:-}" ]; then
  password=$BAL_BROKER__ADMIN_PASSWORD
elif [ -f "$dir/admin-password" ]; then
  password=$(cat "$dir/admin-password")
else
  password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 32)
  (umask 077 && printf '%s' "$password" > "$dir/admin-password")
fi

if [ ! -f "$dir/dynamic-security.json" ]; then
  mosquitto_ctrl dynsec init "$dir/dynamic-security.json" "$admin" "$password" >/dev/null
  chmod 600 "$dir/dynamic-security.json" # it holds password hashes
fi

if [ ! -f "$dir/tls/server.pem" ] || [ ! -f "$dir/tls/server.key" ]; then
  san="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:$(hostname)"
  for n in ${TLS_NAMES:-}; do san="$san,DNS:$n"; done
  (
    cd "$dir/tls"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=BAL Mosquitto CA" -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem 2>/dev/null
    rm -f server.csr server.ext ca.srl
    chmod 644 ca.pem server.pem
  )
fi

sed -e "s#/var/lib/bal-mosquitto#$dir#g" \
    -e "s#^listener 1883 127.0.0.1#listener $mqtt_port 127.0.0.1#" \
    -e "s#^listener 8883\$#listener $mqtts_port#" \
    -e "s#^plugin .*#plugin $plugin#" \
    -e "s#^message_size_limit .*#message_size_limit $max_payload#" \
    "$here/mosquitto.conf" > "$dir/mosquitto.conf"

# Mosquitto started as root runs as the user mosquitto, which must own its files.
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
  chown -R mosquitto: "$dir"
fi

cat <<MSG
Mosquitto for the BAL is ready in $dir. Start it:
  mosquitto -c $dir/mosquitto.conf
and run bal with:
  BAL_BROKER__KIND=mosquitto
  BAL_BROKER__URL=mqtt://127.0.0.1:$mqtt_port
  BAL_BROKER__ADMIN_USERNAME=$admin
  BAL_BROKER__ADMIN_PASSWORD=<$( [ -n "${BAL_BROKER__ADMIN_PASSWORD:-}" ] && echo "as set" || echo "in $dir/admin-password" )>
Devices and consumers: mqtts://<this host>:$mqtts_port, trusting $dir/tls/ca.pem
MSG
