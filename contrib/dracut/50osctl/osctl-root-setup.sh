#!/bin/sh
# dracut pre-pivot hook: turn the root partition mounted at $NEWROOT into the
# osctl deployment named by composefs= on the kernel command line.
# shellcheck disable=SC1091 # dracut-lib.sh exists in the initramfs
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh

# The same initramfs still boots a root that is not an osctl deployment.
getarg composefs= >/dev/null || return 0

modprobe -q erofs
modprobe -q overlay
mkdir -p /tmp
/usr/lib/osctl/osctl-root-setup --root "${NEWROOT:-/sysroot}" --kmsg ||
  die "osctl: the root could not be set up (see OSCTL-ROOT-SETUP-FAILED above)"
