# shellcheck shell=bash
# A throw-away OCI registry (Debian's docker-registry, CNCF distribution v2.8) on 127.0.0.1.
#
#   registry_start DIR      start a registry storing its data under DIR on a free loopback port;
#                           sets REGISTRY_ADDR (127.0.0.1:PORT), REGISTRY_PID, REGISTRY_LOG
#   registry_stop           stop it (idempotent); DIR is left for the caller to delete
#   registry_push SRC REF   skopeo copy SRC (e.g. oci:DIR:TAG) to docker://$REGISTRY_ADDR/REF
#   registry_log_mark       print the access log's current size (a mark for registry_blob_gets)
#   registry_blob_gets MARK print "COUNT BYTES": blob GETs served since MARK and their body bytes
#   registry_requests MARK  print "ALL MANIFESTS": requests served since MARK, and how many of
#                           them asked for a manifest (GET or HEAD)
#
# Plain HTTP: clients need --tls-verify=false (skopeo) or their own insecure-registry switch.
# Requires lib/common.sh, docker-registry, curl, skopeo (for registry_push).

REGISTRY_ADDR=""
REGISTRY_PID=""
REGISTRY_LOG=""

# _registry_listening_ports — TCP ports in LISTEN state (IPv4 and IPv6), one per line.
_registry_listening_ports() {
  local hex
  awk 'FNR > 1 && $4 == "0A" { n = split($2, a, ":"); print a[n] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    while read -r hex; do printf '%d\n' "0x$hex"; done | sort -un
}

_registry_free_port() {
  local port busy
  busy=$(_registry_listening_ports)
  while :; do
    port=$((20000 + RANDOM % 30000))
    grep -qx "$port" <<<"$busy" || break
  done
  echo "$port"
}

registry_start() {
  local dir=$1 attempt port i
  mkdir -p "$dir/data"
  REGISTRY_LOG="$dir/registry.log"
  for attempt in 1 2 3 4 5 6 7 8; do
    port=$(_registry_free_port)
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
EOF
    docker-registry serve "$dir/config.yml" >>"$REGISTRY_LOG" 2>&1 &
    REGISTRY_PID=$!
    for ((i = 0; i < 100; i++)); do
      if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
        REGISTRY_ADDR="127.0.0.1:$port"
        return 0
      fi
      kill -0 "$REGISTRY_PID" 2>/dev/null || break
      sleep 0.1
    done
    log "registry did not come up on port $port (attempt $attempt), retrying"
    registry_stop
  done
  die "could not start docker-registry; see $REGISTRY_LOG"
}

registry_stop() {
  if [ -n "$REGISTRY_PID" ] && kill -0 "$REGISTRY_PID" 2>/dev/null; then
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
  fi
  REGISTRY_PID=""
  REGISTRY_ADDR=""
}

registry_push() {
  local src=$1 ref=$2
  [ -n "$REGISTRY_ADDR" ] || die "registry_push: no registry running"
  skopeo copy --quiet --dest-tls-verify=false "$src" "docker://$REGISTRY_ADDR/$ref"
}

registry_log_mark() {
  stat -c %s "$REGISTRY_LOG"
}

registry_requests() {
  local mark=$1
  sleep 0.05
  tail -c "+$((mark + 1))" "$REGISTRY_LOG" | awk '
    { q = index($0, "\"GET /v2/"); if (q == 0) q = index($0, "\"HEAD /v2/") }
    q > 0 {
      n++
      rest = substr($0, q + 1); split(rest, req, "\""); split(req[1], parts, " ")
      if (parts[2] ~ /\/manifests\//) m++
    }
    END { printf "%d %d\n", n, m }'
}

registry_blob_gets() {
  local mark=$1
  # Let the access log catch up with the last response the client received.
  sleep 0.05
  # Combined log format: HOST - - [DATE] "GET /v2/NAME/blobs/DIGEST HTTP/1.1" STATUS BYTES "REF" "UA"
  tail -c "+$((mark + 1))" "$REGISTRY_LOG" | awk '
    { q = index($0, "\"GET /v2/") }
    q > 0 {
      rest = substr($0, q + 1); split(rest, req, "\"")
      split(req[1], parts, " ")
      if (parts[2] !~ /\/blobs\/sha256:/) next
      split(req[2], st, " ")
      if (st[1] == "200" || st[1] == "206") { n++; b += st[2] }
    }
    END { printf "%d %d\n", n, b }'
}
