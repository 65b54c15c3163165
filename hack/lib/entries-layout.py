#!/usr/bin/env python3
"""Write an OCI image layout whose one gzip layer holds N small files.

Usage: entries-layout.py DIR N [SIZE]

The files sit in directories of 1,000 (usr/share/bench/dNNN/fNNNNNN), each
SIZE bytes (default 200: above composefs's 64-byte inline limit, so every
file is a store object of its own and its EROFS inode carries the overlay
xattrs, the costly case for memory). Contents differ per file, so nothing is
deduplicated. The image is tagged "v1" and "again" (a second pull of the
same image under "again" finds its layers stored and only builds the
image); /usr exists so the root takes its metadata as for an OS image.
Used by hack/bench-entries.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

FILES_PER_DIR = 1000
MTIME = 1_700_000_000


def add_dir(tar, name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = MTIME
    tar.addfile(info)


def layer_bytes(n, size):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("usr", "usr/share", "usr/share/bench"):
            add_dir(tar, d)
        for i in range(n):
            if i % FILES_PER_DIR == 0:
                add_dir(tar, f"usr/share/bench/d{i // FILES_PER_DIR:03d}")
            name = f"usr/share/bench/d{i // FILES_PER_DIR:03d}/f{i:06d}"
            head = f"file {i}\n".encode()
            data = (head * (size // len(head) + 1))[:size]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = MTIME
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return tar_bytes, gzip.compress(tar_bytes, compresslevel=1, mtime=0)


def put_blob(blobs, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return f"sha256:{digest}", len(data)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    out, n = sys.argv[1], int(sys.argv[2])
    size = int(sys.argv[3]) if len(sys.argv) == 4 else 200
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    tar_bytes, gz = layer_bytes(n, size)
    layer_digest, layer_size = put_blob(blobs, gz)
    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {},
    }).encode()
    config_digest, config_size = put_blob(blobs, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size}],
    }).encode()
    manifest_digest, manifest_size = put_blob(blobs, manifest)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag}}
            for tag in ("v1", "again")]}, f)


if __name__ == "__main__":
    main()
