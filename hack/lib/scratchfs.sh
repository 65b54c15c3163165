# shellcheck shell=bash
# Fresh scratch filesystems for benchmarks and tests.
#
# The root filesystem of the project's machines gets slow at creating files after many deletions
# (see the machine notes), so anything that creates and deletes thousands of files uses a fresh
# filesystem: a loop-mounted ext4 on a sparse file (default) or a tmpfs.
#
#   scratchfs_mount DIR [ext4|tmpfs] [SIZE]   mount a fresh filesystem at DIR (created if needed);
#                                             ext4 lives in the sparse file DIR.img
#   scratchfs_umount DIR                      unmount, delete DIR.img and DIR (idempotent)
#   scratchfs_umount_all                      every filesystem mounted by scratchfs_mount
#
# Needs root, util-linux (mount, mountpoint) and e2fsprogs (mkfs.ext4). Requires lib/common.sh.

SCRATCHFS_MOUNTS=()

scratchfs_mount() {
  local dir=$1 kind=${2:-ext4} size=${3:-8G}
  mkdir -p "$dir"
  if mountpoint -q "$dir"; then
    die "scratchfs: $dir is already a mount point"
  fi
  case "$kind" in
    tmpfs)
      mount -t tmpfs -o "size=$size,mode=0755" osctl-scratch "$dir"
      ;;
    ext4)
      local img="$dir.img"
      rm -f "$img"
      truncate -s "$size" "$img"
      # -O verity: the feature flag is harmless without kernel support (the host has none) and
      # lets a verity-capable kernel enable it on the store's objects. noinit_itable: no
      # background inode-table zeroing competing with the measurement.
      if ! mkfs.ext4 -q -F -O verity "$img" 2>/dev/null; then
        mkfs.ext4 -q -F "$img"
      fi
      mount -o loop,noinit_itable "$img" "$dir"
      ;;
    *) die "scratchfs: unknown kind '$kind' (ext4|tmpfs)" ;;
  esac
  SCRATCHFS_MOUNTS+=("$dir")
}

scratchfs_umount() {
  local dir=$1 i
  if mountpoint -q "$dir"; then
    # -R: also whatever the code under test left mounted inside.
    umount -R "$dir" 2>/dev/null || {
      sleep 0.5
      umount -R "$dir" 2>/dev/null || umount -l "$dir"
    }
  fi
  rm -f "$dir.img"
  rmdir "$dir" 2>/dev/null || true
  for i in "${!SCRATCHFS_MOUNTS[@]}"; do
    [ "${SCRATCHFS_MOUNTS[i]}" != "$dir" ] || unset 'SCRATCHFS_MOUNTS[i]'
  done
}

scratchfs_umount_all() {
  local d
  for d in "${SCRATCHFS_MOUNTS[@]}"; do
    scratchfs_umount "$d"
  done
  SCRATCHFS_MOUNTS=()
}

# scratchfs_describe KIND — one line saying what a benchmark ran on, for its report.
scratchfs_describe() {
  case "$1" in
    tmpfs) echo "tmpfs" ;;
    *) echo "ext4 on a loop device (sparse file, mkfs.ext4 -O verity)" ;;
  esac
}
