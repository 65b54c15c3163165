# shellcheck shell=bash
# Shared helpers for the scripts in hack/: logging, dependency checks, an exit-hook list.
# Source it; it defines functions only (no side effects).

# log MSG... — timestamped message on stderr.
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# die MSG... — log and exit 1.
die() {
  log "error: $*"
  exit 1
}

need_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (loop mounts, chroot)"
}

# need_cmds CMD... — fail with one message naming every missing command.
need_cmds() {
  local c missing=()
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  [ "${#missing[@]}" -eq 0 ] || die "missing commands: ${missing[*]} (run hack/install-deps)"
}

# Exit hooks: cleanup_add CMD ARGS... registers a command, cleanup_run runs all of them in reverse
# order (each one must be idempotent and may fail). install_cleanup_trap wires them to EXIT/INT/TERM.
_CLEANUP_HOOKS=()
cleanup_add() { _CLEANUP_HOOKS+=("$(printf '%q ' "$@")"); }
cleanup_run() {
  local rc=$? i
  for ((i = ${#_CLEANUP_HOOKS[@]} - 1; i >= 0; i--)); do
    eval "${_CLEANUP_HOOKS[i]}" || true
  done
  _CLEANUP_HOOKS=()
  return "$rc"
}
install_cleanup_trap() {
  trap cleanup_run EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# human_bytes N — 123456789 -> "117.7 MiB".
human_bytes() {
  awk -v b="$1" 'BEGIN {
    split("B KiB MiB GiB TiB", u, " "); i = 1
    while (b >= 1024 && i < 5) { b /= 1024; i++ }
    printf (i == 1 ? "%d %s" : "%.1f %s"), b, u[i]
  }'
}

# machine_facts_json — nproc, kernel, CPU model, memory, OS release as one JSON object.
machine_facts_json() {
  local cpu mem os
  cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  mem=$(awk '/^MemTotal:/ { print $2 * 1024; exit }' /proc/meminfo)
  os=$(. /etc/os-release 2>/dev/null && printf '%s' "${PRETTY_NAME:-unknown}")
  jq -n --arg nproc "$(nproc)" --arg kernel "$(uname -r)" --arg cpu "${cpu:-unknown}" \
    --arg mem "${mem:-0}" --arg os "$os" --arg debian "$(cat /etc/debian_version 2>/dev/null || true)" \
    '{nproc: ($nproc | tonumber), kernel: $kernel, cpu: $cpu, mem_bytes: ($mem | tonumber),
      os: $os, debian_version: $debian}'
}
