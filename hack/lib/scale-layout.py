#!/usr/bin/env python3
"""Write an OCI image layout that is the bench image S times over, for the scaling table.

Usage: scale-layout.py BENCH_IMAGE_DIR TAG S DEST_LAYOUT

BENCH_IMAGE_DIR is what hack/lib/bench-image.sh builds: an OCI layout in oci/ and
its facts.json. The result, tagged "x<S>", holds the layers of oci/:TAG unchanged, then S-1
copies of them whose every entry sits under copy<k>/ (hard links and whiteouts
too) and whose regular files each end with one more line naming the copy: the
same kind of tree, S times the entries and bytes, and no content shared between
copies (a copy with equal contents would be deduplicated by the store and make
the pull look cheaper than its size). Each copy layer is gzip at level 6 like
the originals. Writes DEST_LAYOUT/facts.json (entries, regular files, bytes
compressed and uncompressed) for the benchmark's table. Used by hack/bench-pull
--scale.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

GZIP_LEVEL = 6


class HashingWriter(io.RawIOBase):
    """Passes bytes on to `out` and keeps their sha256 and count."""

    def __init__(self, out):
        self.out = out
        self.sha = hashlib.sha256()
        self.count = 0

    def writable(self):
        return True

    def write(self, b):
        self.sha.update(b)
        self.count += len(b)
        self.out.write(b)
        return len(b)


def blob_path(layout, digest):
    algo, hexd = digest.split(":", 1)
    return os.path.join(layout, "blobs", algo, hexd)


def read_json(layout, digest):
    with open(blob_path(layout, digest), "rb") as f:
        return json.load(f)


def put_blob(dest, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(blob_path(dest, digest), "wb") as f:
        f.write(data)
    return digest, len(data)


def copy_blob(src, dest, digest):
    target = blob_path(dest, digest)
    if not os.path.exists(target):
        shutil.copyfile(blob_path(src, digest), target)


def prefixed(name, k):
    """`name` (a tar member path: "./usr/bin", "usr/bin", "./") under copy<k>/."""
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    if name in ("", "."):
        return f"copy{k}"
    return f"copy{k}/{name}"


def copy_layer(src, dest, layer, k):
    """Layer `layer` of `src` rewritten as copy k; returns its descriptor and diff_id."""
    tmp = os.path.join(dest, "blobs", "sha256", f".tmp-copy{k}")
    with open(tmp, "wb") as raw:
        compressed = HashingWriter(raw)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as gz:
            plain = HashingWriter(gz)
            with open(blob_path(src, layer["digest"]), "rb") as f, \
                    tarfile.open(fileobj=f, mode="r|gz") as tin, \
                    tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tout:
                for info in tin:
                    data = None
                    info.name = prefixed(info.name, k)
                    if info.islnk():
                        info.linkname = prefixed(info.linkname, k)
                    if info.isreg():
                        body = tin.extractfile(info).read()
                        data = body + f"\n# scaled copy {k}\n".encode()
                        info.size = len(data)
                    tout.addfile(info, io.BytesIO(data) if data is not None else None)
    digest = "sha256:" + compressed.sha.hexdigest()
    os.rename(tmp, blob_path(dest, digest))
    descriptor = {"mediaType": layer["mediaType"], "digest": digest, "size": compressed.count}
    return descriptor, "sha256:" + plain.sha.hexdigest(), plain.count


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    image_dir, tag, scale, dest = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    src = os.path.join(image_dir, "oci")
    if scale < 1:
        sys.exit(f"scale-layout.py: the scale must be at least 1, not {scale}")
    with open(os.path.join(src, "index.json")) as f:
        index = json.load(f)
    found = [m for m in index["manifests"]
             if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    if len(found) != 1:
        sys.exit(f"scale-layout.py: {src} has {len(found)} manifests tagged {tag}, not 1")
    manifest = read_json(src, found[0]["digest"])
    config = read_json(src, manifest["config"]["digest"])
    with open(os.path.join(image_dir, "facts.json")) as f:
        facts = json.load(f)

    os.makedirs(os.path.join(dest, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(dest, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    layers = list(manifest["layers"])
    diff_ids = list(config["rootfs"]["diff_ids"])
    for layer in layers:
        copy_blob(src, dest, layer["digest"])
    uncompressed = facts["uncompressed_bytes"]
    for k in range(2, scale + 1):
        for layer in manifest["layers"]:
            descriptor, diff_id, size = copy_layer(src, dest, layer, k)
            layers.append(descriptor)
            diff_ids.append(diff_id)
            uncompressed += size
    config["rootfs"]["diff_ids"] = diff_ids
    # One history entry per layer or none: the copies have no history of their own.
    config.pop("history", None)
    config_digest, config_size = put_blob(dest, json.dumps(config).encode())
    manifest["config"] = {**manifest["config"], "digest": config_digest, "size": config_size}
    manifest["layers"] = layers
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest, manifest_size = put_blob(dest, manifest_bytes)
    index_out = {"schemaVersion": 2, "manifests": [{
        "mediaType": found[0]["mediaType"], "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": f"x{scale}"}}]}
    with open(os.path.join(dest, "index.json"), "w") as f:
        json.dump(index_out, f)
    out_facts = {
        "scale": scale,
        "layer_count": len(layers),
        # Each copy is the bench image's tree under copy<k>/ (one more directory).
        "entries": facts["entries"] * scale + (scale - 1),
        "regular_files": facts["regular_files"] * scale,
        "compressed_bytes": sum(l["size"] for l in layers),
        "uncompressed_bytes": uncompressed,
    }
    with open(os.path.join(dest, "facts.json.tmp"), "w") as f:
        json.dump(out_facts, f, indent=2)
    os.rename(os.path.join(dest, "facts.json.tmp"), os.path.join(dest, "facts.json"))


if __name__ == "__main__":
    main()
