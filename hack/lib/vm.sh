# shellcheck shell=bash
# A QEMU test harness for boot tests: one VM at a time, TCG (KVM does not work on the project's
# machines), serial console timestamped into a log, explicit markers printed by a test unit in
# the guest, fail-fast on a kernel panic or a root-setup failure, a hard timeout per VM.
# Also: an ext4 image built from a directory (the VM test's read-only control disk). Disks the
# guests boot from are written by `osctl install to-disk` itself, not here.
#
# Source it after lib/common.sh. Typical use:
#
#   vm_init "$workdir"                               # logs go to $workdir/<name>.log
#   vm_start lifecycle --uefi --disk disk.raw --disk-ro control.img
#   vm_wait_test lifecycle                           # waits for "OSCTL-TEST: lifecycle PASS|FAIL ..."
#   vm_wait_exit                                     # the guest powers off
#   vm_summary                                       # "N passed, N failed"; non-zero on failures
#
# Starting, waiting, stopping:
#   vm_init DIR                      log directory; resets the results
#   vm_start NAME [options] [-- QEMU_ARGS...]
#       --uefi                              OVMF (q35, OVMF_CODE_4M read-only + a private VARS
#                                           copy); required: guests boot through systemd-boot
#       --disk F | --disk-ro F              raw disk (virtio, cache=unsafe), in order: vda, vdb, ...
#       --timeout S                         hard limit for this VM, in seconds ($VM_TIMEOUT)
#       --mem MB                            ($VM_MEM)
#       --no-reboot                         a guest reboot ends QEMU instead
#       --guestfwd ADDR:PORT=HOSTPORT       a user-mode NIC (virtio) with restrict=on: the
#                                           guest reaches nothing but ADDR:PORT (in QEMU's
#                                           10.0.2.0/24), forwarded to the host's
#                                           127.0.0.1:HOSTPORT (one `busybox nc` per
#                                           connection); repeatable (one NIC, one forward
#                                           each); without it the guest has no NIC
#     A NAME.N suffix numbers the runs (boots after power cuts) of one VM: each run has its
#     own log, the results are recorded under NAME.
#     The serial console is written, one line at a time, to $VM_LOG as "[  12.345] text"
#     (seconds since QEMU started; \r and terminal escape sequences removed).
#   vm_wait_marker ERE [SECONDS]     wait for a serial line matching ERE, after the cursor (the
#                                    last line matched); sets VM_MATCH (the text), VM_MATCH_AT
#                                    (seconds), VM_WAIT_FAILURE (why it returned non-zero: a
#                                    fail-fast line, "qemu exited", "timeout"). Returns 0 when found.
#                                    Fail-fast lines: $VM_FAIL_ERE (Kernel panic,
#                                    OSCTL-ROOT-SETUP-FAILED, ...), seen after the cursor.
#   vm_wait_test NAME [SECONDS]      vm_wait_marker for "OSCTL-TEST: NAME (PASS|FAIL)" and records
#                                    the result as VMNAME/NAME (vm_result); returns 0 on PASS
#   vm_wait_exit [SECONDS]           wait for QEMU to exit (guest power-off); kills it on timeout
#   vm_stop                          kill QEMU (idempotent); also installed as an exit hook
#   vm_power_cut                     SIGKILL QEMU at once: the guest loses what it had not yet
#                                    written to its disks (its page cache); what it had written
#                                    stays (the disks are host files: cache=unsafe only drops
#                                    the guest's flush requests, the host keeps every write)
#   vm_elapsed                       seconds since QEMU started, e.g. 12.345
#   vm_cpu_note                      QEMU's CPU time vs wall time at the last wait (a busy host
#                                    slows TCG guests down; this tells)
#   vm_tail [N]                      the last N log lines, on stderr (for failures)
# Results:
#   vm_result NAME pass|fail [DETAIL]    count and print one result line
#   vm_expect NAME...                    results the run must have: vm_summary counts each one
#                                        that never got a result as failed
#   vm_summary                           print "N passed, N failed"; returns 1 if any failed or
#                                        nothing ran
# Disks (no loop devices, no mounts):
#   vm_ext4_image IMG SIZE_MIB STAGEDIR [LABEL]    mkfs.ext4 -O verity -d STAGEDIR
#   vm_tree_mib DIR                                the size of a tree in MiB (rounded up)
#
# Needs qemu-system-x86_64, timeout (coreutils), awk; ovmf for --uefi; e2fsprogs for
# vm_ext4_image.

VM_QEMU=${VM_QEMU:-qemu-system-x86_64}
VM_MEM=${VM_MEM:-1024}
VM_TIMEOUT=${VM_TIMEOUT:-180}
# Lines that end a wait at once (extended regular expression, matched against the serial text).
VM_FAIL_ERE=${VM_FAIL_ERE:-'Kernel panic|OSCTL-ROOT-SETUP-FAILED|ALERT! .* does not exist|Gave up waiting for root'}

VM_DIR=""
VM_NAME=""
VM_LOG=""
VM_PID=""
VM_CURSOR=0
VM_MATCH=""
VM_MATCH_AT=""
VM_WAIT_FAILURE=""
VM_PASSED=0
VM_FAILED=0
VM_RESULTS=()
VM_EXPECTED=()
VM_OVMF_CODE=""
VM_OVMF_VARS=""
_VM_T0_US=0
_VM_STAMP_PID=""
_VM_DEADLINE_US=0
_VM_HOOKED=0
_VM_QEMU_PID=""
_VM_CPU_TICKS=0
_VM_CPU_WALL_US=0

vm_init() {
  VM_DIR=$1
  mkdir -p "$VM_DIR"
  VM_PASSED=0
  VM_FAILED=0
  VM_RESULTS=()
  VM_EXPECTED=()
  if [ "$_VM_HOOKED" -eq 0 ]; then
    cleanup_add vm_stop
    _VM_HOOKED=1
  fi
}

_vm_now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }

# _vm_fmt_us N — microseconds as seconds with three decimals.
_vm_fmt_us() { printf '%d.%03d' $(($1 / 1000000)) $((($1 / 1000) % 1000)); }

vm_elapsed() { _vm_fmt_us $(($(_vm_now_us) - _VM_T0_US)); }

# vm_ovmf_find — sets VM_OVMF_CODE and VM_OVMF_VARS (Debian's ovmf package paths).
vm_ovmf_find() {
  local d
  for d in /usr/share/OVMF /usr/share/ovmf /usr/share/qemu; do
    if [ -f "$d/OVMF_CODE_4M.fd" ] && [ -f "$d/OVMF_VARS_4M.fd" ]; then
      VM_OVMF_CODE="$d/OVMF_CODE_4M.fd"
      VM_OVMF_VARS="$d/OVMF_VARS_4M.fd"
      return 0
    fi
  done
  die "OVMF_CODE_4M.fd/OVMF_VARS_4M.fd not found (install the ovmf package)"
}

# _vm_stamp T0_US — copy stdin to stdout line by line, prefixed with the seconds since T0_US,
# without carriage returns and terminal escape sequences. Runs in its own process.
_vm_stamp() {
  local t0=$1 line now d
  shopt -s extglob
  while IFS= read -r line || [ -n "$line" ]; do
    now=${EPOCHREALTIME//[!0-9]/}
    d=$((now - t0))
    line=${line//$'\r'/}
    line=${line//$'\e'\[*([0-9;?=])[A-Za-z]/}
    line=${line//$'\e'[()][A-Za-z0-9]/}
    line=${line//$'\e'/}
    printf '[%4d.%03d] %s\n' $((d / 1000000)) $(((d / 1000) % 1000)) "$line"
  done
}

vm_start() {
  local name=$1
  shift
  [ -n "$VM_DIR" ] || die "vm_start: call vm_init DIR first"
  if [ -n "$VM_PID" ] && kill -0 "$VM_PID" 2>/dev/null; then
    die "vm_start $name: VM '$VM_NAME' is still running (one VM at a time)"
  fi
  local uefi=0 timeout=$VM_TIMEOUT mem=$VM_MEM noreboot=0
  local -a drives=() extra=() nic=(-nic none)
  local fwds=
  while [ $# -gt 0 ]; do
    case "$1" in
      --uefi) uefi=1; shift ;;
      --disk) drives+=("file=$2,if=virtio,format=raw,cache=unsafe"); shift 2 ;;
      --disk-ro) drives+=("file=$2,if=virtio,format=raw,cache=unsafe,readonly=on"); shift 2 ;;
      --timeout) timeout=$2; shift 2 ;;
      --mem) mem=$2; shift 2 ;;
      --no-reboot) noreboot=1; shift ;;
      --guestfwd)
        # The host side runs as a command per connection: a chardev would carry one.
        fwds="$fwds,guestfwd=tcp:${2%=*}-cmd:busybox nc 127.0.0.1 ${2##*=}"
        nic=(-netdev "user,id=net0,restrict=on$fwds" -device "virtio-net-pci,netdev=net0")
        shift 2
        ;;
      --) shift; extra=("$@"); break ;;
      *) die "vm_start: unknown option '$1'" ;;
    esac
  done
  # The only boot path the tests take is the one machines take: firmware, then systemd-boot.
  [ "$uefi" -eq 1 ] || die "vm_start $name: --uefi is required"

  local -a cmd=("$VM_QEMU" -accel "tcg,tb-size=256" -cpu max -m "$mem" -smp 1
    -nodefaults -display none "${nic[@]}"
    -chardev "stdio,id=ser0,signal=off" -serial chardev:ser0)
  [ -n "$VM_OVMF_CODE" ] || vm_ovmf_find
  cp "$VM_OVMF_VARS" "$VM_DIR/$name.OVMF_VARS.fd"
  cmd+=(-machine q35
    -drive "if=pflash,format=raw,unit=0,readonly=on,file=$VM_OVMF_CODE"
    -drive "if=pflash,format=raw,unit=1,file=$VM_DIR/$name.OVMF_VARS.fd")
  local d
  for d in "${drives[@]}"; do
    cmd+=(-drive "$d")
  done
  [ "$noreboot" -eq 0 ] || cmd+=(-no-reboot)
  cmd+=("${extra[@]}")

  VM_NAME=$name
  VM_LOG="$VM_DIR/$name.log"
  VM_CURSOR=0
  : >"$VM_LOG"
  printf '%q ' "${cmd[@]}" >"$VM_DIR/$name.cmd"
  echo >>"$VM_DIR/$name.cmd"

  local fd
  _VM_T0_US=$(_vm_now_us)
  _VM_DEADLINE_US=$((_VM_T0_US + timeout * 1000000))
  exec {fd}> >(_vm_stamp "$_VM_T0_US" >"$VM_LOG")
  _VM_STAMP_PID=$!
  # timeout(1) is the hard limit even if this script dies: TERM, then KILL 5 s later.
  timeout --kill-after=5 "$timeout" "${cmd[@]}" </dev/null 1>&"$fd" 2>"$VM_DIR/$name.qemu.err" &
  VM_PID=$!
  _VM_QEMU_PID=""
  _VM_CPU_TICKS=0
  _VM_CPU_WALL_US=0
  exec {fd}>&-
  log "vm $name: started (pid $VM_PID, timeout ${timeout} s, log $VM_LOG)"
}

_vm_running() { [ -n "$VM_PID" ] && kill -0 "$VM_PID" 2>/dev/null; }

# _vm_reap — wait for QEMU (already exited or killed) and the stamper to finish the log.
_vm_reap() {
  local i
  if [ -n "$VM_PID" ]; then
    wait "$VM_PID" 2>/dev/null || true
    VM_PID=""
  fi
  if [ -n "$_VM_STAMP_PID" ]; then
    for ((i = 0; i < 50; i++)); do
      kill -0 "$_VM_STAMP_PID" 2>/dev/null || break
      sleep 0.1
    done
    _VM_STAMP_PID=""
  fi
}

vm_stop() {
  if _vm_running; then
    kill -TERM "$VM_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
      _vm_running || break
      sleep 0.1
    done
    _vm_running && kill -KILL "$VM_PID" 2>/dev/null
  fi
  _vm_reap
}

vm_power_cut() {
  _vm_running || return 0
  local q
  # QEMU is timeout(1)'s only child; killing timeout(1) itself would leave QEMU running.
  q=$(cat "/proc/$VM_PID/task/$VM_PID/children" 2>/dev/null || true)
  q=${q%% *}
  [ -n "$q" ] || die "vm_power_cut $VM_NAME: no QEMU process under timeout(1) pid $VM_PID"
  kill -KILL "$q"
  log "vm $VM_NAME: power cut at $(vm_elapsed) s"
  _vm_reap
}

# _vm_scan ERE — one pass over the log after the cursor: prints "ok LINENO" or "fail LINENO" for
# the first line matching ERE or $VM_FAIL_ERE, or nothing.
_vm_scan() {
  awk -v start="$VM_CURSOR" -v want="$1" -v fail="$VM_FAIL_ERE" '
    NR <= start { next }
    { t = $0; sub(/^\[ *[0-9]+\.[0-9]+\] /, "", t) }
    t ~ want { print "ok", NR; exit }
    fail != "" && t ~ fail { print "fail", NR; exit }' "$VM_LOG"
}

# _vm_line N — sets VM_MATCH and VM_MATCH_AT from log line N.
_vm_line() {
  local l
  l=$(sed -n "${1}p" "$VM_LOG")
  VM_MATCH_AT=$(sed -E 's/^\[ *([0-9]+\.[0-9]+)\].*/\1/' <<<"$l")
  VM_MATCH=${l#*] }
}

vm_wait_marker() {
  local ere=$1 limit_us=$_VM_DEADLINE_US r kind n
  [ -z "${2:-}" ] || limit_us=$(($(_vm_now_us) + $2 * 1000000))
  [ "$limit_us" -le "$_VM_DEADLINE_US" ] || limit_us=$_VM_DEADLINE_US
  VM_MATCH=""
  VM_MATCH_AT=""
  VM_WAIT_FAILURE=""
  while :; do
    _vm_cpu_sample
    r=$(_vm_scan "$ere")
    if [ -n "$r" ]; then
      kind=${r% *}
      n=${r#* }
      _vm_line "$n"
      VM_CURSOR=$n
      if [ "$kind" = ok ]; then
        return 0
      fi
      VM_WAIT_FAILURE="at ${VM_MATCH_AT} s: $VM_MATCH"
      return 1
    fi
    if ! _vm_running; then
      # The stamper may still be writing QEMU's last lines.
      _vm_reap
      r=$(_vm_scan "$ere")
      if [ -n "$r" ]; then continue; fi
      VM_WAIT_FAILURE="qemu exited at $(vm_elapsed) s ($(tail -n 1 "$VM_DIR/$VM_NAME.qemu.err" 2>/dev/null))"
      return 1
    fi
    if [ "$(_vm_now_us)" -ge "$limit_us" ]; then
      VM_WAIT_FAILURE="timeout at $(vm_elapsed) s waiting for /$ere/"
      [ "$limit_us" -lt "$_VM_DEADLINE_US" ] || vm_stop
      return 1
    fi
    sleep 0.1
  done
}

vm_wait_test() {
  local name=$1 result="${VM_NAME%.*}/$1"
  if ! vm_wait_marker "OSCTL-TEST: $name (PASS|FAIL)" "${2:-}"; then
    vm_result "$result" fail "$VM_WAIT_FAILURE"
    vm_tail 25
    return 1
  fi
  local detail=${VM_MATCH#*OSCTL-TEST: "$name" }
  case "$detail" in
    PASS*)
      vm_result "$result" pass "marker at ${VM_MATCH_AT} s$(vm_cpu_note): $detail"
      ;;
    *)
      vm_result "$result" fail "marker at ${VM_MATCH_AT} s: $detail"
      vm_tail 25
      return 1
      ;;
  esac
}

vm_wait_exit() {
  local limit_us=$_VM_DEADLINE_US
  [ -z "${1:-}" ] || limit_us=$(($(_vm_now_us) + $1 * 1000000))
  while _vm_running; do
    _vm_cpu_sample
    if [ "$(_vm_now_us)" -ge "$limit_us" ]; then
      log "vm $VM_NAME: still running at $(vm_elapsed) s; killing it"
      vm_stop
      return 1
    fi
    sleep 0.1
  done
  local at
  at=$(vm_elapsed)
  _vm_reap
  log "vm $VM_NAME: exited at ${at} s$(vm_cpu_note)"
}

# _vm_cpu_sample — remember QEMU's CPU time (user + system) so far, and when it was read.
_vm_cpu_sample() {
  [ -n "$VM_PID" ] || return 0
  if [ -z "$_VM_QEMU_PID" ]; then
    # timeout(1)'s only child.
    _VM_QEMU_PID=$(cat "/proc/$VM_PID/task/$VM_PID/children" 2>/dev/null || true)
    _VM_QEMU_PID=${_VM_QEMU_PID%% *}
    [ -n "$_VM_QEMU_PID" ] || return 0
  fi
  local stat
  stat=$(cat "/proc/$_VM_QEMU_PID/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  local -a f
  read -r -a f <<<"$stat"
  # After "comm)": field 3 is index 0, so utime (14) and stime (15) are 11 and 12.
  _VM_CPU_TICKS=$((f[11] + f[12]))
  _VM_CPU_WALL_US=$(($(_vm_now_us) - _VM_T0_US))
}

# vm_cpu_note — ", QEMU had C s of CPU in its first W s (P%)" from the last sample (taken while
# waiting), or "". TCG is CPU-bound: well under 100% means a busy host slowed the guest down.
vm_cpu_note() {
  [ "$_VM_CPU_WALL_US" -gt 0 ] || return 0
  local hz
  hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
  awk -v t="$_VM_CPU_TICKS" -v hz="$hz" -v w="$_VM_CPU_WALL_US" 'BEGIN {
    c = t / hz; w = w / 1e6
    printf ", QEMU had %.1f s of CPU in its first %.1f s (%d%%)", c, w, 100 * c / w }'
}

vm_tail() {
  local n=${1:-25}
  [ -n "$VM_LOG" ] && [ -f "$VM_LOG" ] || return 0
  {
    echo "--- last $n lines of $VM_LOG"
    tail -n "$n" "$VM_LOG"
    echo "---"
  } >&2
}

vm_result() {
  local name=$1 result=$2 detail=${3:-}
  case "$result" in
    pass)
      VM_PASSED=$((VM_PASSED + 1))
      VM_RESULTS+=("PASS $name")
      log "PASS $name${detail:+ — $detail}"
      ;;
    *)
      VM_FAILED=$((VM_FAILED + 1))
      VM_RESULTS+=("FAIL $name")
      log "FAIL $name${detail:+ — $detail}"
      ;;
  esac
}

vm_expect() {
  VM_EXPECTED+=("$@")
}

vm_summary() {
  local r want
  for want in "${VM_EXPECTED[@]}"; do
    for r in "${VM_RESULTS[@]}"; do
      [ "${r#* }" != "$want" ] || continue 2
    done
    vm_result "$want" fail "no result: the run never got this far"
  done
  for r in "${VM_RESULTS[@]}"; do
    echo "  $r"
  done
  echo "$VM_PASSED passed, $VM_FAILED failed"
  [ "$VM_FAILED" -eq 0 ] && [ "$VM_PASSED" -gt 0 ]
}

# --- disks -------------------------------------------------------------------------------------

vm_tree_mib() {
  local b
  b=$(du -sb "$1" | cut -f1)
  echo $(((b + 1048575) / 1048576))
}

vm_ext4_image() {
  local img=$1 mib=$2 stage=$3 label=${4:-root}
  rm -f "$img"
  truncate -s "${mib}M" "$img"
  # -O verity: a verity-capable guest kernel can enable fs-verity on the files (the host cannot).
  # -b 4096: mke2fs picks 1 KiB blocks for small filesystems, and fs-verity's 4 KiB Merkle tree
  # blocks must not be larger than the filesystem's ("Unsupported log_blocksize: 12").
  mkfs.ext4 -q -F -b 4096 -O verity -L "$label" -E root_owner=0:0 -d "$stage" "$img" ||
    die "mkfs.ext4 -d $stage failed"
}
