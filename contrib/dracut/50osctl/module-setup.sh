#!/bin/bash
# dracut module: puts osctl's root setup into the initramfs. Installed as
# /usr/lib/dracut/modules.d/50osctl/. See docs/boot.md.

check() {
  # Included whenever osctl's root setup is installed.
  require_binaries /usr/lib/osctl/osctl-root-setup || return 1
  return 0
}

depends() {
  return 0
}

installkernel() {
  instmods erofs overlay loop
}

install() {
  inst_binary /usr/lib/osctl/osctl-root-setup
  inst_dir /tmp
  # pre-pivot: the root partition is mounted at $NEWROOT, switch-root has not
  # happened yet.
  # shellcheck disable=SC2154 # $moddir is set by dracut
  inst_hook pre-pivot 50 "$moddir/osctl-root-setup.sh"
}
