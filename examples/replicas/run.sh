#!/bin/sh
# Starts a 3-node NATS cluster and three pollerd replicas on this machine; Ctrl-C stops them.
# Run from anywhere: `make replicas`, or examples/replicas/run.sh with pollerd on PATH.
set -eu
cd "$(dirname "$0")"
BIN="${BIN:-../../.venv/bin}"
NATS_SERVER="${NATS_SERVER:-$BIN/nats-server}"
POLLERD="${POLLERD:-$BIN/pollerd}"
PYTHON="${PYTHON:-$BIN/python}"
mkdir -p .data
pids=""
stop() {
    trap - INT TERM EXIT
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
}
trap stop INT TERM EXIT

for node in n1 n2 n3; do
    "$NATS_SERVER" -c "nats/$node.conf" >".data/$node.log" 2>&1 &
    pids="$pids $!"
done
for port in 8222 8223 8224; do            # JetStream ready on every node
    until "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/healthz')" \
        >/dev/null 2>&1; do sleep 0.2; done
done
echo "NATS cluster up: nats://127.0.0.1:4222,4223,4224 (logs in .data/)"

for replica in a b c; do
    "$POLLERD" run -c "replica-$replica.yaml" >".data/replica-$replica.log" 2>&1 &
    pids="$pids $!"
done
echo "replicas a, b, c started; admin on 127.0.0.1:9181, 9182, 9183 (logs in .data/)"
echo "try: $POLLERD jobs -c $(pwd)/replica-b.yaml   or   curl -s 127.0.0.1:9181/readyz"
wait
