# shellcheck shell=bash
# shellcheck disable=SC2154 # work, OSCTL and the timeouts are set by tests/vm/lifecycle
# The VMs of tests/vm/lifecycle after the lifecycle VM itself, each on its own copy of the
# disk the lifecycle ended with (vm_disk). Sourced by tests/vm/lifecycle, which defines
# work, OSCTL, the timeouts, control_disk, vm_disk, zap, object_of, host_mount, timing and
# seconds_between. Each function declares its results (vm_expect) first and returns
# non-zero when one failed.

tamper_object_vm() {
  vm_expect tamper-object/tamper-object tamper-object/eio-from-fs-verity
  local disk canary="$work/canary" m
  disk=$(vm_disk tamper-object) || return 1
  # The canary's object name is its content's fs-verity digest: read the content from v1.
  m=$(mktemp -d)
  host_mount "oci:$work/oci:v1" "$m"
  cp "$m/usr/lib/osctl-test/canary" "$canary"
  umount "$m"
  rmdir "$m"
  if ! zap "$disk" "$(object_of "$canary")"; then
    vm_result tamper-object/setup fail "could not tamper with the canary's object"
    return 1
  fi
  control_disk tamper-object
  vm_start tamper-object --uefi --disk "$disk" --disk-ro "$work/control.img" \
    --timeout "$TAMPER_TIMEOUT"
  local ok=0
  # The guest requires EIO; the kernel must say fs-verity caught the altered block.
  if vm_wait_test tamper-object; then
    if grep -q 'fs-verity (vda2, inode [0-9]*): FILE CORRUPTED' "$VM_LOG"; then
      ok=1
      vm_result tamper-object/eio-from-fs-verity pass "$(grep -m 1 -o 'fs-verity (vda2.*FILE CORRUPTED! pos=[0-9]*' "$VM_LOG")"
    else
      vm_result tamper-object/eio-from-fs-verity fail "EIO, but no 'fs-verity … FILE CORRUPTED' in the kernel log"
    fi
  fi
  vm_stop
  rm -f "$disk"
  [ "$ok" -eq 1 ]
}

tamper_image_vm() {
  vm_expect tamper-image/root-setup-refuses
  local disk id
  disk=$(vm_disk tamper-image) || return 1
  id=$(sed -n 's/.*composefs=\([0-9a-f]\{64\}\).*/\1/p' "$work/install.out" | head -n 1)
  # The image id is the EROFS image's fs-verity digest, so the image is this object
  # (images/<id> links to it).
  if [ -z "$id" ] || ! zap "$disk" "composefs/objects/${id:0:2}/${id:2}"; then
    vm_result tamper-image/setup fail "could not tamper with the image (id '${id}')"
    return 1
  fi
  local saved=$VM_FAIL_ERE
  VM_FAIL_ERE='Kernel panic'
  vm_start tamper-image --uefi --disk "$disk" --timeout "$TAMPER_TIMEOUT"
  local ok=0
  # Any refusal that says the image was altered (which check catches it depends on the
  # block: the digest comparison, or EIO while mounting).
  if vm_wait_marker 'OSCTL-ROOT-SETUP-FAILED: .*altered' 200; then
    ok=1
    vm_result tamper-image/root-setup-refuses pass "at ${VM_MATCH_AT} s: ${VM_MATCH#*OSCTL-ROOT-SETUP-FAILED: }"
  else
    vm_result tamper-image/root-setup-refuses fail "$VM_WAIT_FAILURE"
    vm_tail 25
  fi
  VM_FAIL_ERE=$saved
  vm_stop
  rm -f "$disk"
  [ "$ok" -eq 1 ]
}

# random_ms MAX_SECONDS — a random delay in [0, MAX_SECONDS) in milliseconds.
random_ms() { awk -v m="$1" -v r="$RANDOM" 'BEGIN { printf "%d", m * 1000 * r / 32768 }'; }
ms_as_s() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# wait_info ERE SECONDS — wait for an OSCTL-TEST-INFO (or systemd) line of the powercut
# VM; a miss is a failed result naming it.
wait_info() {
  vm_wait_marker "$1" "$2" && return 0
  vm_result "${VM_NAME%.*}/${VM_NAME##*.}: /$1/" fail "$VM_WAIT_FAILURE"
  vm_tail 25
  return 1
}

# powercut_vm — power cuts (QEMU killed) while osctl writes the ESP: right after `switch`
# returned, right after the finalize at shutdown, and at random moments of two switches and
# of a finalize. After each, the next boot checks what must hold (tests/vm/guest-step, powercut:N).
powercut_vm() {
  vm_expect powercut/powercut-0-v1 powercut/powercut-0-switched powercut/powercut-1-v1 \
    powercut/powercut-2-v3 powercut/powercut-3-v3 powercut/powercut-3-switched powercut/powercut-4 \
    powercut/powercut-5
  local disk seed t0 t_switch t_fin d
  disk=$(vm_disk powercut) || return 1
  control_disk powercut
  seed=${POWERCUT_SEED:-$((${EPOCHREALTIME//[!0-9]/} % 32768))}
  RANDOM=$seed
  log "powercut: POWERCUT_SEED=$seed"
  local -a qemu=(--uefi --disk "$disk" --disk-ro "$work/control.img" --timeout "$POWERCUT_TIMEOUT")

  # 1. Right after `osctl switch` said "Staged" (the guest then waits without syncing).
  vm_start powercut.0 "${qemu[@]}"
  vm_wait_test powercut-0-v1 || return 1
  wait_info 'OSCTL-TEST-INFO: powercut: switch begins' 300 || return 1
  t0=$VM_MATCH_AT
  vm_wait_test powercut-0-switched || return 1
  vm_power_cut
  t_switch=$(seconds_between "$t0" "$VM_MATCH_AT")
  timing "  switch to v3 (cut right after)" "$t_switch"

  # 2. v3 still staged, entries whole; the reboot's finalize, then the cut (the step made
  # the unit hold the shutdown after its marker).
  vm_start powercut.1 "${qemu[@]}"
  vm_wait_test powercut-1-v1 || return 1
  wait_info 'Stopping osctl-finalize-staged' 120 || return 1
  t0=$VM_MATCH_AT
  wait_info 'OSCTL-TEST-INFO: finalize-staged done' 300 || return 1
  vm_power_cut
  t_fin=$(seconds_between "$t0" "$VM_MATCH_AT")
  timing "  finalize at shutdown (cut right after)" "$t_fin"

  # 3. v3 boots; a cut at a random moment of a switch to v2.
  vm_start powercut.2 "${qemu[@]}"
  vm_wait_test powercut-2-v3 || return 1
  wait_info 'OSCTL-TEST-INFO: powercut: switch begins' 300 || return 1
  d=$(random_ms "$t_switch")
  sleep "$(ms_as_s "$d")"
  vm_power_cut
  log "powercut: cut $(ms_as_s "$d") s into the switch (it took $t_switch s uncut)"

  # 4. Still v3, entries whole or absent; the switch again, then a cut at a random moment
  # of the finalize.
  vm_start powercut.3 "${qemu[@]}"
  vm_wait_test powercut-3-v3 || return 1
  vm_wait_test powercut-3-switched || return 1
  wait_info 'Stopping osctl-finalize-staged' 120 || return 1
  d=$(random_ms "$t_fin")
  sleep "$(ms_as_s "$d")"
  vm_power_cut
  log "powercut: cut $(ms_as_s "$d") s into the finalize (it took $t_fin s uncut)"

  # 5. v2 or v3, consistently; a cut at a random moment of a switch to v1.
  vm_start powercut.4 "${qemu[@]}"
  vm_wait_test powercut-4 || return 1
  wait_info 'OSCTL-TEST-INFO: powercut: switch begins' 300 || return 1
  d=$(random_ms "$t_switch")
  sleep "$(ms_as_s "$d")"
  vm_power_cut
  log "powercut: cut $(ms_as_s "$d") s into the switch (it took $t_switch s uncut)"

  # 6. The same deployment as before that switch, entries whole or absent.
  vm_start powercut.5 "${qemu[@]}"
  local ok=1
  vm_wait_test powercut-5 || ok=0
  [ "$ok" -eq 0 ] || vm_wait_exit 120 || ok=0
  vm_stop
  [ "$ok" -eq 1 ] && rm -f "$disk"
  [ "$ok" -eq 1 ]
}

# fallback_vm — automatic fallback: v2bad fails a required health check on both of its
# tries, v3broken panics on both; each time systemd-boot comes back to v1 by itself and
# osctl reports why.
fallback_vm() {
  vm_expect fallback/fallback-0-v1 fallback/fallback-1-v1 fallback/fallback-2-v1 \
    fallback/tries-counted
  local disk
  disk=$(vm_disk fallback) || return 1
  control_disk fallback
  local saved=$VM_FAIL_ERE
  # v3broken's kernel panics are expected here.
  VM_FAIL_ERE='OSCTL-ROOT-SETUP-FAILED'
  vm_start fallback --uefi --disk "$disk" --disk-ro "$work/control.img" \
    --timeout "$FALLBACK_TIMEOUT"
  local ok=1
  vm_wait_test fallback-0-v1 || ok=0
  [ "$ok" -eq 0 ] || vm_wait_test fallback-1-v1 || ok=0
  [ "$ok" -eq 0 ] || vm_wait_test fallback-2-v1 || ok=0
  if [ "$ok" -eq 1 ]; then
    # Each boot's root setup names its image: count the boots of each trial image (their
    # ids are in the step's "switched to …" details: the entries with a +2 counter).
    local bad broken n_bad n_broken
    bad=$(grep -o 'fallback-0-v1 PASS .*' "$VM_LOG" | grep -o 'osctl-[0-9a-f]*+2\.conf' |
      sed 's/^osctl-//; s/+2\.conf$//')
    broken=$(grep -o 'fallback-1-v1 PASS .*' "$VM_LOG" | grep -o 'osctl-[0-9a-f]*+2\.conf' |
      sed 's/^osctl-//; s/+2\.conf$//')
    # grep -c prints 0 (and fails) when nothing matches: a count, not an error.
    n_bad=$(grep -c "osctl-root-setup: setting up image ${bad:-none} " "$VM_LOG" || true)
    n_broken=$(grep -c "osctl-root-setup: setting up image ${broken:-none} " "$VM_LOG" || true)
    if [ -n "$bad" ] && [ -n "$broken" ] && [ "$n_bad" -eq 2 ] && [ "$n_broken" -eq 2 ]; then
      vm_result fallback/tries-counted pass "v2bad booted $n_bad times, v3broken $n_broken times, then v1"
    else
      vm_result fallback/tries-counted fail "v2bad (${bad:0:12}) booted $n_bad times, v3broken (${broken:0:12}) $n_broken times; want 2 each"
      ok=0
    fi
    vm_wait_exit 60 || ok=0
  fi
  VM_FAIL_ERE=$saved
  vm_stop
  rm -f "$disk"
  [ "$ok" -eq 1 ]
}

# registry_gets MARK WHAT — "COUNT" of successful GETs of osctl-vmtest's WHAT (manifests,
# blobs) in the registry's access log since MARK (registry_log_mark).
registry_gets() {
  tail -c "+$(($1 + 1))" "$REGISTRY_LOG" |
    awk -v what="\"GET /v2/osctl-vmtest/$2/" 'index($0, what) && / 200 / { n++ } END { print n + 0 }'
}

# The registry VM's signatures: osctl-test-sign (crates/osctl-testutil) signs, in the running
# registry, with a P-256 key made for the run; the guest's policy trusts its public half.
SIGNER=""
SIGN_KEY=""
SIGN_PUB=""

# signer_setup DIR — builds osctl-test-sign and makes the key pair in DIR (which must not
# hold one: the signer never overwrites a key).
signer_setup() {
  local target
  (cd "$repo" && cargo build -p osctl-testutil --bin osctl-test-sign --locked >&2)
  target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
  SIGNER="$target/debug/osctl-test-sign"
  SIGN_KEY="$1/osctl-vmtest.key"
  # The name the guest installs it under (tests/vm/guest-step).
  SIGN_PUB="$1/osctl-vmtest.pub"
  "$SIGNER" generate-key --kind p256 --private "$SIGN_KEY" --public "$SIGN_PUB"
}

# registry_sign REPO:TAG IDENTITY — sign the manifest REPO:TAG names in the running registry,
# vouching for IDENTITY: the reference the guest pulls it by (the policy's default
# signedIdentity, matchRepoDigestOrExact, wants the guest's tag there).
registry_sign() {
  "$SIGNER" sign --key "$SIGN_KEY" --registry "$REGISTRY_ADDR" --image "$1" \
    --identity "$2" >/dev/null
}

# The fleet the registry VM's guest joins last (tests/fleet_vm.rs): the integration test
# binary, run with --ignored, starts etcd, a controller and simulated machines, waits for the
# guest's agent, rolls v2 out to all of them and checks the outcome. It runs in a session
# of its own, so the whole tree it started (etcd, agents) can be stopped if the VM fails.
FLEET_PID=""

# fleet_driver_start DIR — build (if needed) and start tests/fleet_vm.rs in the background,
# its output in DIR/driver.log; wait until its etcd is up (DIR/etcd-port).
fleet_driver_start() {
  local dir=$1 bin digest i
  rm -rf "$dir"
  mkdir -p "$dir"
  bin=$(cd "$repo" && cargo test -p osctl --test integration --locked --no-run --message-format=json 2>>"$dir/build.log" |
    jq -r 'select(.executable != null and .target.name == "integration") | .executable')
  if ! [ -x "$bin" ]; then
    # A failed build is this VM's failure (the caller records it), not the whole run's.
    log "no integration test binary (see $dir/build.log)"
    return 1
  fi
  digest=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "v2") | .digest' \
    "$work/oci/index.json")
  OSCTL_VM_FLEET_DIR=$dir OSCTL_VM_FLEET_BASE="oci:$work/oci:v1" \
    OSCTL_VM_FLEET_IMAGE="docker://$REGISTRY_ADDR/osctl-vmtest:fleet" OSCTL_VM_FLEET_DIGEST=$digest \
    setsid "$bin" --ignored --exact --nocapture fleet_vm::fleet_rollout_with_a_real_guest \
    >"$dir/driver.log" 2>&1 &
  FLEET_PID=$!
  for ((i = 0; i < 600; i++)); do
    [ -s "$dir/etcd-port" ] && return 0
    kill -0 "$FLEET_PID" 2>/dev/null || break
    sleep 0.2
  done
  tail -n 30 "$dir/driver.log" >&2
  return 1
}

# fleet_driver_stop — the driver and everything it started (its session), if still running.
fleet_driver_stop() {
  if [ -n "$FLEET_PID" ] && kill -0 "$FLEET_PID" 2>/dev/null; then
    kill -TERM -- "-$FLEET_PID" 2>/dev/null || true
    wait "$FLEET_PID" 2>/dev/null || true
  fi
  FLEET_PID=""
}

# fleet_driver_result DIR — wait (at most 10 min) for the driver; its verdict as a result.
fleet_driver_result() {
  local dir=$1 rc=0 i
  for ((i = 0; i < 3000; i++)); do
    kill -0 "$FLEET_PID" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$FLEET_PID" 2>/dev/null; then
    fleet_driver_stop
    vm_result registry/fleet-rollout fail "tests/fleet_vm.rs did not end (log: $dir/driver.log)"
    return 1
  fi
  wait "$FLEET_PID" || rc=$?
  FLEET_PID=""
  if [ "$rc" -eq 0 ] && [ -s "$dir/summary" ]; then
    vm_result registry/fleet-rollout pass "$(cat "$dir/summary")"
  else
    vm_result registry/fleet-rollout fail "tests/fleet_vm.rs exited with $rc: $(grep -m 1 -A 3 'panicked at' "$dir/driver.log" | tr '\n' ' ')"
    tail -n 40 "$dir/driver.log" >&2
    return 1
  fi
}

# registry_vm — updates from the host's docker-registry, which the guest reaches only
# through QEMU's user networking (restrict=on) and one guestfwd to its 127.0.0.1 port,
# under a policy that requires the test key's signature for that registry: `switch` to an
# unsigned copy of v2 is refused, `switch` to the :track tag (v2, signed) works, then
# `upgrade` once the host moved it to v3 (signed before the move), then the nginx example.
registry_vm() {
  vm_expect registry/signature-refused registry/registry-0-v1 registry/registry-1-v2 \
    registry/signature-verified registry/registry-1-upgraded registry/registry-2-v3 \
    registry/switch-from-registry registry/upgrade-from-registry registry/registry-2-diff \
    registry/registry-3-nginx registry/fleet-3-joined registry/fleet-finalized-at-shutdown \
    registry/fleet-4-v2 registry/fleet-rollout
  local disk mark n guest=10.0.2.100:5000 fleet=$work/fleet
  disk=$(vm_disk registry) || return 1
  rm -rf "$work/registry"
  registry_start "$work/registry"
  signer_setup "$work/registry"
  registry_push "oci:$work/oci:v2" osctl-vmtest:track
  registry_sign osctl-vmtest:track "$guest/osctl-vmtest:track"
  # The same v2, never signed: the switch the policy refuses.
  registry_push "oci:$work/oci:v2" osctl-vmtest-unsigned:v2
  # v3 is signed now, under the tag the guest will find it by, and moved to :track later:
  # the tag never names an unsigned manifest.
  registry_push "oci:$work/oci:v3" osctl-vmtest:v3
  registry_sign osctl-vmtest:v3 "$guest/osctl-vmtest:track"
  # The nginx example (examples.sh), switched to after v3.
  registry_push "oci:$work/oci:nginx" osctl-vmtest:nginx
  registry_sign osctl-vmtest:nginx "$guest/osctl-vmtest:nginx"
  # The fleet's image: v2 again, under the reference the host's simulated machines pull it
  # by too (the guest reaches $REGISTRY_ADDR through a proxy of its own), signed for it.
  registry_push "oci:$work/oci:v2" osctl-vmtest:fleet
  registry_sign osctl-vmtest:fleet "$REGISTRY_ADDR/osctl-vmtest:fleet"
  echo "$REGISTRY_ADDR" >"$work/registry/fleet-registry"
  cleanup_add fleet_driver_stop
  if ! fleet_driver_start "$fleet"; then
    vm_result registry/fleet-rollout fail "tests/fleet_vm.rs did not build or did not start etcd (logs: $fleet/build.log, $fleet/driver.log)"
    fleet_driver_stop
    registry_stop
    return 1
  fi
  mark=$(registry_log_mark)
  control_disk registry "$SIGN_PUB" "$work/registry/fleet-registry"
  vm_start registry --uefi --disk "$disk" --disk-ro "$work/control.img" \
    --timeout "$REGISTRY_TIMEOUT" --guestfwd "$guest=${REGISTRY_ADDR##*:}" \
    --guestfwd "10.0.2.101:2379=$(cat "$fleet/etcd-port")"
  local ok=1
  vm_wait_test signature-refused || ok=0
  [ "$ok" -eq 0 ] || vm_wait_test registry-0-v1 || ok=0
  if [ "$ok" -eq 1 ]; then
    # v2's layers are in the guest's store already (the lifecycle deployed it): the
    # switch needs the manifest only.
    n=$(registry_gets "$mark" manifests)
    if [ "$n" -gt 0 ]; then
      vm_result registry/switch-from-registry pass "the guest's switch fetched the manifest from $REGISTRY_ADDR ($n GETs)"
    else
      vm_result registry/switch-from-registry fail "the registry served no manifest to the guest's switch"
      ok=0
    fi
  fi
  [ "$ok" -eq 0 ] || vm_wait_test registry-1-v2 || ok=0
  [ "$ok" -eq 0 ] || vm_wait_test signature-verified || ok=0
  # The guest polls the registry until the tag moves.
  if [ "$ok" -eq 1 ]; then
    registry_push "oci:$work/oci:v3" osctl-vmtest:track
    mark=$(registry_log_mark)
  fi
  [ "$ok" -eq 0 ] || vm_wait_test registry-1-upgraded || ok=0
  if [ "$ok" -eq 1 ]; then
    # v3's own layer is new to the guest.
    n=$(registry_gets "$mark" blobs)
    if [ "$n" -gt 0 ]; then
      vm_result registry/upgrade-from-registry pass "the guest's upgrade fetched $n blobs from $REGISTRY_ADDR"
    else
      vm_result registry/upgrade-from-registry fail "the registry served no blobs to the guest's upgrade"
      ok=0
    fi
  fi
  [ "$ok" -eq 0 ] || vm_wait_test registry-2-v3 || ok=0
  [ "$ok" -eq 0 ] || vm_wait_test registry-2-diff || ok=0
  [ "$ok" -eq 0 ] || vm_wait_test registry-3-nginx || ok=0
  # The fleet: the guest's agent joins; the rollout reboots it (and the simulated machines)
  # one at a time.
  [ "$ok" -eq 0 ] || vm_wait_test fleet-3-joined || ok=0
  [ "$ok" -eq 0 ] || vm_wait_test fleet-4-v2 900 || ok=0
  [ "$ok" -eq 0 ] || fleet_finalize_check || ok=0
  [ "$ok" -eq 0 ] || vm_wait_exit 120 || ok=0
  vm_stop
  if [ "$ok" -eq 1 ]; then
    # The guest is done with etcd: the driver may stop it and end.
    touch "$fleet/release"
    fleet_driver_result "$fleet" || ok=0
  else
    fleet_driver_stop
  fi
  registry_stop
  rm -f "$disk"
  [ "$ok" -eq 1 ]
}

# fleet_finalize_check — the reboot the fleet agent started went through the shutdown unit:
# between the guest joining and its boot into the rollout's image, osctl-finalize-staged
# finalized the staged deployment (its output, then the drop-in's marker).
fleet_finalize_check() {
  local a b fin
  a=$(grep -n -m 1 'OSCTL-TEST: fleet-3-joined PASS' "$VM_LOG" | cut -d: -f1)
  b=$(grep -n -m 1 'OSCTL-TEST: fleet-4-v2 PASS' "$VM_LOG" | cut -d: -f1)
  fin=$(awk -v a="$a" -v b="$b" '
    NR <= a || NR >= b { next }
    d == "" && /Deployment [0-9a-f]+ boots next/ { d = $0 }
    d != "" && /OSCTL-TEST-INFO: finalize-staged done/ { print d; exit }' "$VM_LOG")
  if [ -n "$fin" ]; then
    vm_result registry/fleet-finalized-at-shutdown pass "osctl-finalize-staged.service: ${fin#*] }"
  else
    vm_result registry/fleet-finalized-at-shutdown fail "no 'Deployment … boots next' from the unit between joining and the boot into v2"
    return 1
  fi
}

# dracut_vm — the example built with dracut boots the same way (the dracut module's
# pre-pivot hook runs the root setup on $NEWROOT=/sysroot). It runs the way an admin tries an
# image before shipping it: hack/try-image writes the disk and boots it with its serial
# console on stdout (here: a log) and --shell's debug shell there; the control disk comes
# as an extra QEMU argument. The guest's step powers it off, which must end the script.
dracut_vm() {
  vm_expect dracut/dracut-boot dracut/root-setup-from-dracut dracut/try-image
  local log="$work/dracut.log" in="$work/dracut.console" pid fd rc=0
  control_disk dracut
  rm -f "$in" "$log"
  mkfifo "$in"
  timeout --kill-after=5 "$TRY_IMAGE_TIMEOUT" "$repo/hack/try-image" "oci:$work/oci-dracut:dracut" \
    --disk "$work/dracut.raw" --shell --mem 1024 --accel tcg \
    -- -drive "file=$work/control.img,if=virtio,format=raw,readonly=on" <"$in" >"$log" 2>&1 &
  pid=$!
  # QEMU's console input stays open until it is gone: its end is not a way to stop it.
  exec {fd}>"$in"
  wait "$pid" || rc=$?
  exec {fd}>&-
  rm -f "$in"
  local pass
  # No PASS line is an answer (the result below), not an error.
  pass=$(grep -a -m 1 'OSCTL-TEST: dracut-boot PASS' "$log" | tr -d '\r') || pass=""
  if [ -n "$pass" ]; then
    vm_result dracut/dracut-boot pass "${pass#*PASS }"
  else
    vm_result dracut/dracut-boot fail "$(grep -a -m 1 'OSCTL-TEST: dracut-boot' "$log" || echo "no result (log: $log)")"
  fi
  if grep -a -q 'osctl-root-setup: setting up image [0-9a-f]* at /sysroot' "$log"; then
    vm_result dracut/root-setup-from-dracut pass "the root setup ran on /sysroot"
  else
    vm_result dracut/root-setup-from-dracut fail "no 'setting up image … at /sysroot' line"
  fi
  if [ "$rc" -ne 0 ]; then
    vm_result dracut/try-image fail "hack/try-image exited with $rc (log: $log)"
  elif [ -e "$work/dracut.raw.store" ] || [ -e "$work/dracut.raw.vars" ]; then
    vm_result dracut/try-image fail "hack/try-image left its scratch store or firmware variables"
  else
    vm_result dracut/try-image pass "hack/try-image installed, booted and ended with the guest's poweroff"
  fi
  rm -f "$work/dracut.raw"
  [ -n "$pass" ] && [ "$rc" -eq 0 ]
}
