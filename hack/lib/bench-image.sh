# shellcheck shell=bash
# Builds (once, cached) a realistic multi-layer Debian OS image as an OCI layout, for benchmarks
# and end-to-end tests.
#
#   bench_image_ensure CACHE_DIR   build unless cached; sets BENCH_IMAGE_DIR, which holds
#                                  oci/ (an OCI image layout with tags v1 and v2) and facts.json
#
# Layers (all gzip, made with umoci from a debootstrap tree):
#   1 base   debootstrap --variant=minbase $BENCH_IMAGE_SUITE
#   2 os     systemd, udev, dbus, a kernel + initramfs, openssh-server, networking tools
#   3 tools  python3, perl, git, curl, ...
#   4 app    a small application tree in /opt/bench-app (differs between v1 and v2)
# v1 and v2 share layers 1-3 and differ only in layer 4 (a few changed files, one added, one
# removed), for measuring an update.
#
# Needs root, debootstrap, umoci, jq, gzip, and network access to the Debian mirror apt uses.
# Requires lib/common.sh and lib/scratchfs.sh.

# Bump when the recipe below changes: a new number means a new cache directory.
BENCH_IMAGE_RECIPE=3
BENCH_IMAGE_SUITE=${OSCTL_BENCH_SUITE:-bookworm}
BENCH_IMAGE_OS_PACKAGES=(
  systemd systemd-sysv udev dbus kmod linux-image-cloud-amd64 initramfs-tools
  openssh-server iproute2 iputils-ping ifupdown isc-dhcp-client ca-certificates
  less vim-tiny procps
)
BENCH_IMAGE_TOOLS_PACKAGES=(
  python3 python3-yaml python3-requests perl git curl rsync jq sqlite3 xz-utils zstd
)
BENCH_IMAGE_DIR=""

# bench_image_mirror — the Debian mirror apt already uses for $BENCH_IMAGE_SUITE
# ($OSCTL_BENCH_MIRROR overrides; falls back to http://deb.debian.org/debian).
bench_image_mirror() {
  if [ -n "${OSCTL_BENCH_MIRROR:-}" ]; then
    echo "$OSCTL_BENCH_MIRROR"
    return
  fi
  local uri="" f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas: the URIs of the first stanza whose Suites list the suite itself.
    uri=$(awk -v suite="$BENCH_IMAGE_SUITE" 'BEGIN { RS = "" }
      {
        u = ""; hit = 0; n = split($0, lines, "\n")
        for (i = 1; i <= n; i++) {
          if (lines[i] ~ /^URIs:/) { split(lines[i], w, /[ \t]+/); u = w[2] }
          if (lines[i] ~ /^Suites:/) {
            m = split(lines[i], s, /[ \t]+/)
            for (j = 2; j <= m; j++) if (s[j] == suite) hit = 1
          }
        }
        if (hit && u != "") { print u; exit }
      }' "$f")
    [ -z "$uri" ] || break
  done
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk -v suite="$BENCH_IMAGE_SUITE" '$1 == "deb" {
        for (i = 2; i < NF; i++) if ($i ~ /^https?:\/\// && $(i + 1) == suite) { print $i; exit }
      }')
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

bench_image_ensure() {
  local cache=$1
  BENCH_IMAGE_DIR="$cache/image-$BENCH_IMAGE_SUITE-r$BENCH_IMAGE_RECIPE"
  if [ -f "$BENCH_IMAGE_DIR/facts.json" ] && [ -f "$BENCH_IMAGE_DIR/oci/index.json" ]; then
    return 0
  fi
  _bench_image_build "$cache" "$BENCH_IMAGE_DIR"
}

# --- internals -------------------------------------------------------------------------------

_bench_chroot_mounts=()

_bench_chroot_enter() {
  local root=$1 debs=$2
  mount -t proc proc "$root/proc"
  _bench_chroot_mounts+=("$root/proc")
  mount -t sysfs sysfs "$root/sys"
  _bench_chroot_mounts+=("$root/sys")
  mount --bind /dev "$root/dev"
  _bench_chroot_mounts+=("$root/dev")
  mount --bind /dev/pts "$root/dev/pts"
  _bench_chroot_mounts+=("$root/dev/pts")
  # apt's download cache lives outside the image (and survives rebuilds).
  mkdir -p "$debs/partial"
  mount --bind "$debs" "$root/var/cache/apt/archives"
  _bench_chroot_mounts+=("$root/var/cache/apt/archives")
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  # Do not start services inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
}

_bench_chroot_leave() {
  local root=$1 i
  for ((i = ${#_bench_chroot_mounts[@]} - 1; i >= 0; i--)); do
    if mountpoint -q "${_bench_chroot_mounts[i]}"; then
      umount "${_bench_chroot_mounts[i]}" 2>/dev/null || umount -l "${_bench_chroot_mounts[i]}"
    fi
  done
  _bench_chroot_mounts=()
  rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
}

# _bench_chroot_apt ROOT DEBS PKG... — install packages inside ROOT, then drop apt's lists and
# transient state so the layer holds what an image build would ship.
_bench_chroot_apt() {
  local root=$1 debs=$2
  shift 2
  _bench_chroot_enter "$root" "$debs"
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    >"$root.apt.log" 2>&1 || {
    tail -n 30 "$root.apt.log" >&2
    die "apt-get install failed in the image chroot"
  }
  _bench_chroot_leave "$root"
  _bench_image_tidy "$root"
}

_bench_image_tidy() {
  local root=$1
  if mountpoint -q "$root/var/cache/apt/archives"; then
    die "tidy: $root/var/cache/apt/archives is still mounted"
  fi
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/* "$root"/var/tmp/*
  rm -f "$root"/var/cache/apt/archives/*.deb
  rm -f "$root/etc/resolv.conf"
  # A per-machine identity does not belong in an image.
  if [ -f "$root/etc/machine-id" ]; then
    : >"$root/etc/machine-id"
  fi
  echo localhost >"$root/etc/hostname"
}

# _bench_app_tree DIR VERSION — a small application: a launcher, some binary blobs, some text.
_bench_app_tree() {
  local dir=$1 version=$2 i
  mkdir -p "$dir/bin" "$dir/lib" "$dir/share/doc" "$dir/etc"
  printf '#!/bin/sh\necho "bench-app %s"\n' "$version" >"$dir/bin/bench-app"
  chmod 0755 "$dir/bin/bench-app"
  echo "$version" >"$dir/VERSION"
  printf 'listen = "127.0.0.1:8080"\nworkers = 4\n' >"$dir/etc/bench-app.toml"
  for i in $(seq -w 1 24); do
    head -c 49152 /dev/urandom >"$dir/lib/module-$i.so"
  done
  for i in $(seq -w 1 80); do
    # Compressible text, different per file.
    seq "$((10#$i * 1000))" "$((10#$i * 1000 + 1500))" | sed 's/^/line /' >"$dir/share/doc/page-$i.txt"
  done
}

_bench_image_build() {
  local cache=$1 out=$2 t0 mirror scratch bundle oci debs
  t0=$(date +%s)
  mirror=$(bench_image_mirror)
  log "building the benchmark image ($BENCH_IMAGE_SUITE from $mirror) into $out — takes several minutes"
  mkdir -p "$cache"
  debs="$cache/debs-$BENCH_IMAGE_SUITE"
  mkdir -p "$debs"
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp"
  oci="$out.tmp/oci"

  # The root filesystem never sees the build tree's thousands of files: it is built and deleted
  # on its own filesystem.
  scratch="$cache/build-scratch"
  scratchfs_mount "$scratch" ext4 16G
  cleanup_add _bench_chroot_leave "$scratch/bundle/rootfs"
  bundle="$scratch/bundle"

  umoci init --layout "$oci"
  umoci new --image "$oci:empty"
  umoci unpack --image "$oci:empty" "$bundle"

  log "layer 1: debootstrap --variant=minbase $BENCH_IMAGE_SUITE"
  debootstrap --variant=minbase --cache-dir="$debs" "$BENCH_IMAGE_SUITE" "$bundle/rootfs" "$mirror" \
    >"$scratch/debootstrap.log" 2>&1 || {
    tail -n 30 "$scratch/debootstrap.log" >&2
    die "debootstrap failed"
  }
  _bench_image_tidy "$bundle/rootfs"
  # Images ship an empty /dev (the runtime or the booted kernel populates it).
  find "$bundle/rootfs/dev" -mindepth 1 -delete
  umoci repack --refresh-bundle --history.created_by "debootstrap --variant=minbase $BENCH_IMAGE_SUITE" \
    --image "$oci:base" "$bundle"

  log "layer 2: ${BENCH_IMAGE_OS_PACKAGES[*]}"
  _bench_chroot_apt "$bundle/rootfs" "$debs" "${BENCH_IMAGE_OS_PACKAGES[@]}"
  umoci repack --refresh-bundle --history.created_by "apt-get install ${BENCH_IMAGE_OS_PACKAGES[*]}" \
    --image "$oci:os" "$bundle"

  log "layer 3: ${BENCH_IMAGE_TOOLS_PACKAGES[*]}"
  _bench_chroot_apt "$bundle/rootfs" "$debs" "${BENCH_IMAGE_TOOLS_PACKAGES[@]}"
  umoci repack --refresh-bundle --history.created_by "apt-get install ${BENCH_IMAGE_TOOLS_PACKAGES[*]}" \
    --image "$oci:tools" "$bundle"

  log "layer 4: /opt/bench-app v1 and v2"
  _bench_app_tree "$scratch/app-v1" 1.0.0
  cp -a "$scratch/app-v1" "$scratch/app-v2"
  echo 1.1.0 >"$scratch/app-v2/VERSION"
  printf '#!/bin/sh\necho "bench-app %s"\n' 1.1.0 >"$scratch/app-v2/bin/bench-app"
  head -c 49152 /dev/urandom >"$scratch/app-v2/lib/module-03.so"
  head -c 65536 /dev/urandom >"$scratch/app-v2/lib/module-25.so"
  rm "$scratch/app-v2/share/doc/page-80.txt"
  # Not 'umoci insert': umoci 0.4.7 writes its layer without the tar trailer (the last member is
  # not padded, no end-of-archive blocks), which strict readers rightly reject. Repacking without
  # --refresh-bundle diffs against "tools" both times, so v1 and v2 share layers 1-3.
  cp -a "$scratch/app-v1" "$bundle/rootfs/opt/bench-app"
  umoci repack --history.created_by "install bench-app 1.0.0" --image "$oci:v1" "$bundle"
  rm -rf "$bundle/rootfs/opt/bench-app"
  cp -a "$scratch/app-v2" "$bundle/rootfs/opt/bench-app"
  umoci repack --history.created_by "install bench-app 1.1.0" --image "$oci:v2" "$bundle"
  local tag
  for tag in v1 v2; do
    umoci config --image "$oci:$tag" --config.cmd /sbin/init \
      --config.label "org.opencontainers.image.title=osctl-bench-os" \
      --config.label "org.opencontainers.image.version=$tag"
  done
  umoci rm --image "$oci:empty"
  umoci gc --layout "$oci"
  _bench_image_check_layers "$oci"

  log "measuring the image"
  umoci unpack --image "$oci:v1" "$scratch/check" >/dev/null
  local entries files tree_bytes
  entries=$(find "$scratch/check/rootfs" -mindepth 1 | wc -l)
  files=$(find "$scratch/check/rootfs" -type f | wc -l)
  tree_bytes=$(du -sb "$scratch/check/rootfs" | cut -f1)
  _bench_image_facts "$oci" "$entries" "$files" "$tree_bytes" "$(($(date +%s) - t0))" "$mirror" \
    >"$out.tmp/facts.json"

  scratchfs_umount "$scratch"
  rm -rf "$out"
  mv "$out.tmp" "$out"
  # Images built by older recipes are dead weight now.
  local old
  for old in "$cache/image-$BENCH_IMAGE_SUITE"-r*; do
    [ "$old" = "$out" ] || [ ! -d "$old" ] || rm -rf "$old"
  done
  log "image built in $(($(date +%s) - t0)) s: $out"
}

# _bench_image_check_layers OCI — every layer of every tag is gzip holding a complete tar.
_bench_image_check_layers() {
  local oci=$1 tag m d blob
  for tag in v1 v2; do
    m=$(_bench_manifest "$oci" "$tag")
    while read -r d; do
      blob="$oci/blobs/${d%%:*}/${d#*:}"
      gzip -dc "$blob" | tar -tf - >/dev/null || die "layer $d of $tag is not a complete tar"
    done < <(jq -r '.layers[].digest' "$m")
  done
}

# _bench_manifest OCI TAG — path of the manifest blob for TAG.
_bench_manifest() {
  local oci=$1 tag=$2 digest
  digest=$(jq -r --arg t "$tag" \
    '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
    "$oci/index.json")
  [ -n "$digest" ] || die "no tag $tag in $oci"
  echo "$oci/blobs/${digest%%:*}/${digest#*:}"
}

_bench_image_facts() {
  local oci=$1 entries=$2 files=$3 tree_bytes=$4 build_s=$5 mirror=$6 tag m layers=()
  for tag in v1 v2; do
    m=$(_bench_manifest "$oci" "$tag")
    local d
    local -a rows=()
    while read -r d; do
      local blob="$oci/blobs/${d%%:*}/${d#*:}"
      rows+=("$(jq -n --arg d "$d" --arg c "$(stat -c %s "$blob")" \
        --arg u "$(gzip -dc "$blob" | wc -c)" \
        '{digest: $d, compressed: ($c | tonumber), uncompressed: ($u | tonumber)}')")
    done < <(jq -r '.layers[].digest' "$m")
    layers+=("$(printf '%s\n' "${rows[@]}" | jq -s --arg tag "$tag" \
      --arg mt "$(jq -r '.layers[0].mediaType' "$m")" '{tag: $tag, media_type: $mt, layers: .}')")
  done
  printf '%s\n' "${layers[@]}" | jq -s \
    --arg suite "$BENCH_IMAGE_SUITE" --arg mirror "$mirror" --arg recipe "$BENCH_IMAGE_RECIPE" \
    --arg entries "$entries" --arg files "$files" --arg tree "$tree_bytes" --arg build "$build_s" \
    --arg built "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    '(.[0]) as $v1 | (.[1]) as $v2 | {
      suite: $suite, mirror: $mirror, recipe: ($recipe | tonumber), built: $built,
      build_seconds: ($build | tonumber),
      layer_count: ($v1.layers | length), media_type: $v1.media_type,
      compressed_bytes: ([$v1.layers[].compressed] | add),
      uncompressed_bytes: ([$v1.layers[].uncompressed] | add),
      entries: ($entries | tonumber), regular_files: ($files | tonumber),
      tree_bytes: ($tree | tonumber),
      v1_layers: $v1.layers, v2_layers: $v2.layers,
      v2_new_layers: [$v2.layers[] | select(.digest as $d | [$v1.layers[].digest] | index($d) | not)]
    }'
}
