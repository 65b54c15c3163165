# shellcheck shell=bash
# shellcheck disable=SC2154 # repo, here, work, BUILDAH and OSCTL are set by tests/vm/lifecycle
# The derived examples (Containerfile.examples/*/, each FROM the Debian example), sourced by
# tests/vm/lifecycle. For each one, on the host:
#   1. buildah builds it FROM localhost/osctl-example:latest, offline: apt reads the packages
#      from the cached local repository of hack/guest/example-apt, mounted over the image's
#      sources for the build only; the Containerfile's last RUN is `osctl container lint`,
#      whose summary must say 0 fatal;
#   2. it is pushed to a local registry (docker-registry on 127.0.0.1);
#   3. a scratch machine (--sysroot, booted on the Debian example; an admin edited its /etc)
#      `switch`es to it and finalizes, and the example's own promise is checked in the staged
#      deployment: its /etc after the merge, its boot entry, its image (mounted read-only).
# The nginx example is also built with the VM test's harness on top (Containerfile.test,
# VERSION=nginx, into $work/oci:nginx): the registry VM switches to it (scenarios.sh).
#
# Uses from lifecycle: repo, here, work, BUILDAH, OSCTL, vm_result, vm_expect, registry_*.

EXAMPLES="nginx etc-config kargs timer var-app sysusers health-check"
# Where a build sees the local apt repository (hack/guest/example-apt's sources.list names it).
EXAMPLE_APT_MOUNT=/run/osctl-example-apt
# The examples that built and passed their lint: the ones pushed and checked.
EX_BUILT=""

# build_examples — every example, and the nginx VM image. A failed build is that example's
# failed result (the log's tail is printed); the others go on.
build_examples() {
  local apt e log
  apt=$("$repo/hack/guest/example-apt")
  EX_BUILT=""
  for e in $EXAMPLES; do
    log="$work/example-$e.build.log"
    if ! "${BUILDAH[@]}" bud --isolation chroot --pull-never \
      -v "$apt:$EXAMPLE_APT_MOUNT:ro" -v "$apt/sources.list:/etc/apt/sources.list:ro" \
      --build-arg BASE=localhost/osctl-example:latest \
      -t "localhost/osctl-example-$e:latest" "$repo/Containerfile.examples/$e" >"$log" 2>&1; then
      tail -n 20 "$log" >&2
      vm_result "examples/$e-build" fail "buildah bud failed (log: $log)"
      continue
    fi
    # The lint's summary line: the build passed *because* nothing fatal was found, not
    # because the lint did not run.
    if grep -qE '^[0-9]+ lints: 0 fatal' "$log"; then
      vm_result "examples/$e-build" pass "$(grep -E '^[0-9]+ lints: ' "$log")"
      EX_BUILT="$EX_BUILT $e"
    else
      vm_result "examples/$e-build" fail "no '0 fatal' lint summary in $log"
    fi
  done
  # Without the nginx example the registry VM's nginx steps fail by themselves (no such tag).
  case " $EX_BUILT " in *" nginx "*) ;; *) return 0 ;; esac
  "${BUILDAH[@]}" bud -q --isolation chroot --pull-never \
    --build-arg BASE=localhost/osctl-example-nginx:latest --build-arg VERSION=nginx \
    -t localhost/osctl-vmtest:nginx -f "$here/Containerfile.test" "$here" >/dev/null
  "${BUILDAH[@]}" push -q localhost/osctl-vmtest:nginx "oci:$work/oci:nginx"
}

# The scratch machine of the checks.
EX_DIR=""
EX=()
EX_REG=""
EX_LOG=""

# ex_switch NAME — switch the scratch machine to example NAME and finalize; prints the
# staged deployment's id. osctl's messages (and the test hook's warning) go to EX_LOG.
ex_switch() {
  "${EX[@]}" switch --progress none --tls-verify=false "$EX_REG/osctl-example-$1:latest" \
    >>"$EX_LOG" 2>&1 || return 1
  "${EX[@]}" finalize >"$EX_DIR/finalize-$1.out" 2>>"$EX_LOG" || return 1
  "${EX[@]}" status --format json 2>>"$EX_LOG" | jq -er .status.staged.osctl.deploymentId
}

# ex_mount NAME — example NAME's image, read-only at $EX_DIR/mnt (fails if it is not mounted
# there: checks of absence must never run on an empty directory).
ex_mount() {
  mkdir -p "$EX_DIR/mnt"
  "${EX[@]}" image mount "$EX_REG/osctl-example-$1:latest" "$EX_DIR/mnt" >>"$EX_LOG" 2>&1 &&
    mountpoint -q "$EX_DIR/mnt"
}
ex_umount() { umount "$EX_DIR/mnt" 2>>"$EX_LOG"; }

# Problems found by the checks of one example, "; "-separated.
EX_BAD=""
want() { # want DESCRIPTION COMMAND... — DESCRIPTION is a problem unless COMMAND succeeds
  local what=$1
  shift
  "$@" >/dev/null 2>&1 || EX_BAD="$EX_BAD $what;"
}
ex_result() { # ex_result NAME DETAIL
  if [ -z "$EX_BAD" ]; then
    vm_result "examples/$1" pass "$2"
  else
    vm_result "examples/$1" fail "$EX_BAD"
  fi
  EX_BAD=""
}
links_to() { [ "$(readlink "$1")" = "$2" ]; }
has_line() { grep -qxF -- "$2" "$1"; }
ends_with() { [[ "$1" == *"$2" ]]; } # ends_with STRING SUFFIX
no_user() { ! grep -q "^$2:" "$1"; }  # no_user PASSWD NAME
# pkg_version STATUS NAME — NAME's version in a dpkg status file, for a result's detail ("?"
# when it cannot be read: the checks proper say what is wrong).
pkg_version() {
  awk -v p="$2" '$0 == "Package: " p { f = 1 } f && /^Version:/ { print $2; exit }' "$1" 2>/dev/null ||
    echo "?"
}
# sysusers_adds ETC SYSUSERS_CONF USER — systemd-sysusers, run on a root made of the
# deployment's /etc and the image's sysusers.d file, adds USER to that /etc/passwd: what
# happens at the machine's next boot even when the /etc merge kept the admin's passwd.
sysusers_adds() {
  local r="$EX_DIR/sysusers-root"
  rm -rf "$r"
  mkdir -p "$r/usr/lib/sysusers.d"
  cp -a "$1" "$r/etc" && cp "$2" "$r/usr/lib/sysusers.d/" &&
    systemd-sysusers --root="$r" >>"$EX_LOG" 2>&1 && grep -q "^$3:" "$r/etc/passwd"
}
absent() { # absent PATH... — none of them exists
  local p
  for p in "$@"; do [ ! -e "$p" ] && [ ! -L "$p" ] || return 1; done
}
status_has() { "${EX[@]}" status --format json 2>>"$EX_LOG" | jq -e "$1"; } # status_has JQ-FILTER
# diff_names PATTERN — `osctl diff --files` (booted → staged) has a line matching PATTERN (ERE).
diff_names() {
  "${EX[@]}" diff --files >"$EX_DIR/diff.out" 2>>"$EX_LOG" && grep -qE -- "$1" "$EX_DIR/diff.out"
}

check_examples() {
  local e
  for e in $EXAMPLES; do
    vm_expect "examples/$e-build" "examples/$e"
  done
  EX_DIR="$work/examples"
  EX_LOG="$work/examples.log"
  rm -rf "$EX_DIR" "$EX_LOG"
  mkdir -p "$EX_DIR/sysroot" "$EX_DIR/boot"
  registry_start "$EX_DIR/registry"
  EX_REG=$REGISTRY_ADDR
  for e in "" $EX_BUILT; do
    "${BUILDAH[@]}" push -q --tls-verify=false "localhost/osctl-example${e:+-$e}:latest" \
      "docker://$EX_REG/osctl-example${e:+-$e}:latest"
  done
  EX=("$OSCTL" --sysroot "$EX_DIR/sysroot" --boot-dir "$EX_DIR/boot")

  # The machine: the Debian example deployed and "booted" (the command line names it), then
  # edited by its admin: a line in /etc/hosts, their own /etc/motd, a local user.
  "${EX[@]}" switch --progress none --tls-verify=false "$EX_REG/osctl-example:latest" >>"$EX_LOG"
  "${EX[@]}" finalize >>"$EX_LOG"
  local base etc
  base=$("${EX[@]}" status --format json | jq -er .status.staged.osctl.deploymentId)
  echo "composefs=?$base" >"$EX_DIR/cmdline"
  export OSCTL_CMDLINE_FILE="$EX_DIR/cmdline"
  etc="$EX_DIR/sysroot/sysroot/state/deploy/$base/etc"
  echo "10.1.2.3 build-cache.example" >>"$etc/hosts"
  echo "the admin's own banner" >"$etc/motd"
  echo "localadmin:x:1500:1500:Local admin:/var/home/localadmin:/bin/bash" >>"$etc/passwd"
  echo "localadmin:x:1500:" >>"$etc/group"

  local id d s
  for e in $EXAMPLES; do
    case " $EX_BUILT " in
      *" $e "*) ;;
      *)
        vm_result "examples/$e" fail "not checked: it did not build"
        continue
        ;;
    esac
    if ! id=$(ex_switch "$e"); then
      vm_result "examples/$e" fail "switch to $EX_REG/osctl-example-$e:latest failed: $(tail -n 3 "$EX_LOG")"
      continue
    fi
    d="$EX_DIR/sysroot/sysroot/state/deploy/$id"
    want "the admin's /etc/hosts line carried" has_line "$d/etc/hosts" "10.1.2.3 build-cache.example"
    if ! ex_mount "$e"; then
      vm_result "examples/$e" fail "osctl image mount failed: $(tail -n 3 "$EX_LOG")"
      continue
    fi
    local m="$EX_DIR/mnt"
    case "$e" in
      nginx)
        want "nginx installed" test -x "$m/usr/sbin/nginx"
        want "the site in /usr" has_line "$m/usr/share/example-site/index.html" \
          "<p>served by nginx from a bootable container image</p>"
        want "nginx.service enabled" links_to \
          "$d/etc/systemd/system/multi-user.target.wants/nginx.service" /usr/lib/systemd/system/nginx.service
        want "the example site enabled" links_to "$d/etc/nginx/sites-enabled/example" ../sites-available/example
        want "Debian's default site gone" test ! -e "$d/etc/nginx/sites-enabled/default"
        want "nothing of nginx in the image's /var" absent "$m/var/www" "$m/var/log/nginx" "$m/var/lib/nginx"
        want "osctl diff: nginx arrives" diff_names '^  added +nginx [0-9]'
        want "osctl diff: /usr/sbin/nginx added" diff_names '^  \+ /usr/sbin/nginx$'
        want "tmpfiles.d creates /var/log/nginx" has_line "$m/usr/lib/tmpfiles.d/example-nginx.conf" \
          "d /var/log/nginx 0755 www-data adm -"
        s="nginx $(pkg_version "$m/var/lib/dpkg/status" nginx), enabled, site in /usr, /var by tmpfiles.d"
        ;;
      etc-config)
        want "the journald drop-in arrived" has_line "$d/etc/systemd/journald.conf.d/50-example-size.conf" \
          "SystemMaxUse=200M"
        want "the admin's motd kept" has_line "$d/etc/motd" "the admin's own banner"
        want "the motd conflict reported" status_has \
          '[.status.staged.osctl.etcConflicts[] | [.path, .kind]] == [["motd", "bothModified"]]'
        want "finalize said so" grep -q "conflict: /etc/motd" "$EX_DIR/finalize-$e.out"
        s="drop-in arrived, /etc/hosts edit carried, the admin's /etc/motd kept and reported as a conflict"
        ;;
      kargs)
        local opts
        # No entry file: no options, which the check below reports.
        opts=$(sed -n 's/^options //p' "$EX_DIR/boot/loader/entries/osctl-$id"*.conf 2>/dev/null) || opts=""
        want "the entry's kargs end with panic=10 transparent_hugepage=madvise" \
          ends_with "$opts" " panic=10 transparent_hugepage=madvise"
        want "status lists them" status_has \
          '.status.staged.osctl.kargs == ["panic=10", "transparent_hugepage=madvise"]'
        s="boot entry: options $opts"
        ;;
      timer)
        want "the timer enabled" links_to "$d/etc/systemd/system/timers.target.wants/example-report.timer" \
          /usr/lib/systemd/system/example-report.timer
        want "the unit in /usr" has_line "$m/usr/lib/systemd/system/example-report.service" \
          "ExecStart=/usr/libexec/example-report"
        want "the script executable" test -x "$m/usr/libexec/example-report"
        s="example-report.timer enabled, its service and script in /usr"
        ;;
      var-app)
        want "the service enabled" links_to "$d/etc/systemd/system/multi-user.target.wants/example-notes.service" \
          /usr/lib/systemd/system/example-notes.service
        want "StateDirectory= in its unit" has_line "$m/usr/lib/systemd/system/example-notes.service" \
          "StateDirectory=example-notes"
        want "tmpfiles.d line for its cache" has_line "$m/usr/lib/tmpfiles.d/example-notes.conf" \
          "d /var/cache/example-notes 0755 root root 30d"
        want "no data shipped in /var" absent "$m/var/lib/example-notes" "$m/var/cache/example-notes"
        s="StateDirectory=example-notes + tmpfiles.d, nothing shipped in /var"
        ;;
      sysusers)
        want "sysusers.d file" has_line "$m/usr/lib/sysusers.d/example.conf" \
          'u exampled -:exampleops "Example daemon" /var/lib/exampled /usr/sbin/nologin'
        # The image adds nothing to passwd or group (the machine's, with the admin's
        # localadmin, stay as they are, no conflict); sysusers.d adds exampled at boot,
        # next to the admin's user, in all four files.
        want "the image's passwd has no exampled" no_user "$m/etc/passwd" exampled
        want "the admin's passwd kept" grep -q '^localadmin:' "$d/etc/passwd"
        want "no /etc conflict" status_has '.status.staged.osctl.etcConflicts == []'
        want "systemd-sysusers adds exampled" sysusers_adds "$d/etc" \
          "$m/usr/lib/sysusers.d/example.conf" exampled
        want "and keeps localadmin" grep -q '^localadmin:' "$EX_DIR/sysusers-root/etc/passwd"
        want "exampleops in the gshadow it wrote" grep -q '^exampleops:' "$EX_DIR/sysusers-root/etc/gshadow"
        want "its home by tmpfiles.d" has_line "$m/usr/lib/tmpfiles.d/example-exampled.conf" \
          "d /var/lib/exampled 0750 exampled exampleops -"
        s="nothing added to the image's passwd; systemd-sysusers adds exampled at boot next to the admin's localadmin"
        ;;
      health-check)
        want "the check executable" test -x "$m/usr/lib/osctl/health.d/50-example-essentials"
        want "declared required" grep -qx "# osctl-health: required timeout=30s" \
          "$m/usr/lib/osctl/health.d/50-example-essentials"
        s="50-example-essentials in /usr/lib/osctl/health.d, required"
        ;;
    esac
    want "the image unmounted" ex_umount
    ex_result "$e" "$s"
  done
  unset OSCTL_CMDLINE_FILE
  registry_stop
  rm -rf "$EX_DIR"
}
