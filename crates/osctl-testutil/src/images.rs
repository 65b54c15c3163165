//! Test images shared by the CLI tests and the store's own tests: the
//! layer edge cases an importer must carry through unchanged (whiteouts,
//! opaque directories, hardlinks, xattrs, devices, odd and long names,
//! every compression). The CLI tests pull them and compare the mounted tree
//! with the spec; the store's equivalence test imports them with both
//! importers and compares what was stored. One definition, so a case added
//! for one is checked by the other.

use crate::{Compression, Entry, Layer};

/// Every kind of entry and layer in one image: all entry types, xattrs
/// (kept and dropped), a whiteout and an opaque directory over a lower
/// layer, an empty layer, a 48 MiB file, and gzip, zstd and uncompressed
/// layers.
pub fn edge_case_layers() -> Vec<Layer> {
    vec![
        Layer::new(vec![
            Entry::dir("etc"),
            Entry::dir_with("srv", 0o750, 10, 20),
            Entry::file("etc/hostname", "base\n"),
            Entry::file_with("etc/shadow", 0o640, 0, 42, "root:*:1::::::\n"),
            Entry::file("etc/gone", "whited out later\n"),
            Entry::dir("opt/old"),
            Entry::file("opt/old/a", "hidden by an opaque dir\n"),
            Entry::file("usr/bin/tool", "#!/bin/sh\necho tool\n"),
            Entry::hardlink("usr/bin/tool-link", "usr/bin/tool"),
            Entry::symlink("usr/bin/abs-link", "/usr/bin/tool"),
            Entry::symlink("usr/bin/rel-link", "../bin/tool"),
            Entry::symlink("dangling", "nowhere/at/all"),
            Entry::char_dev("dev/null-ish", 1, 3),
            Entry::block_dev("dev/blk", 7, 0),
            Entry::fifo("var/lib/fifo"),
            Entry::file("usr/lib/cap", "capability holder").with_xattr(
                "security.capability",
                vec![
                    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            Entry::file("usr/lib/tagged", "user xattrs").with_xattr("user.osctl.test", "value-1"),
        ]),
        // An empty layer: a tar with only the end-of-archive blocks.
        Layer::new(vec![]),
        Layer::new(vec![
            Entry::whiteout("etc/gone"),
            Entry::opaque("opt/old"),
            Entry::file("opt/old/b", "new in the opaque dir\n"),
            Entry::file("etc/hostname", "top\n"),
            Entry::large_file("usr/share/big.bin", 48 * 1024 * 1024 + 123, 7),
            Entry::file_with("usr/bin/setuid", 0o4755, 0, 0, "suid\n"),
        ])
        .with_compression(Compression::Zstd),
        Layer::new(vec![
            Entry::file("usr/share/plain.txt", "uncompressed layer\n"),
            Entry::hardlink("usr/share/plain-link", "usr/share/plain.txt"),
        ])
        .with_compression(Compression::None),
    ]
}

/// A `security.capability` value (v2, `cap_net_bind_service` permitted).
pub fn cap_v2() -> Vec<u8> {
    let mut v = 0x0200_0000u32.to_le_bytes().to_vec();
    v.resize(20, 0);
    v
}

/// Odd layers that are not refused: each must come out as exactly the tree
/// the OCI layer semantics give (`crate::expected_tree`). Named cases.
pub fn layers_that_pull_into_the_spec() -> Vec<(&'static str, Vec<Layer>)> {
    let many_xattrs = (0..2000).fold(Entry::file("usr/x", "x"), |e, i| {
        e.with_xattr(&format!("user.n{i}"), "v")
    });
    vec![
        (
            "hardlink-to-a-lower-layer",
            vec![
                Layer::new(vec![Entry::file("usr/t", "t")]),
                Layer::new(vec![Entry::hardlink("usr/l", "usr/t")]),
            ],
        ),
        (
            "duplicate-entries",
            vec![Layer::new(vec![
                Entry::file("etc/x", "one"),
                Entry::file("etc/x", "two"),
            ])],
        ),
        (
            "dir-then-file-in-one-layer",
            vec![Layer::new(vec![
                Entry::dir("etc/x"),
                Entry::file("etc/x/in", "in"),
                Entry::file("etc/x", "f"),
            ])],
        ),
        (
            "file-then-dir-in-one-layer",
            vec![Layer::new(vec![
                Entry::file("etc/x", "f"),
                Entry::dir("etc/x"),
                Entry::file("etc/x/in", "in"),
            ])],
        ),
        (
            "file-replaced-by-a-dir",
            vec![
                Layer::new(vec![Entry::file("etc/x", "f")]),
                Layer::new(vec![Entry::dir("etc/x"), Entry::file("etc/x/in", "in")]),
            ],
        ),
        (
            "dir-replaced-by-a-file",
            vec![
                Layer::new(vec![Entry::dir("etc/x"), Entry::file("etc/x/in", "in")]),
                Layer::new(vec![Entry::file("etc/x", "f")]),
            ],
        ),
        (
            "whiteouts-of-nothing",
            vec![
                Layer::new(vec![
                    Entry::file("etc/a", "a"),
                    Entry::file("etc/passwd", "p"),
                ]),
                Layer::new(vec![
                    Entry::whiteout("etc/nothing"),
                    Entry::whiteout("nowhere/deep/x"),
                    Entry::whiteout("etc/passwd/under-a-file"),
                    Entry::opaque("opt/none"),
                    Entry::opaque("etc/a"),
                ]),
            ],
        ),
        (
            // OCI: whiteouts hide lower layers only, wherever they are in
            // the tar. Applied in tar order, these deleted the layer's own
            // files.
            "whiteouts-after-their-own-layers-entries",
            vec![
                Layer::new(vec![
                    Entry::file("etc/a", "lower"),
                    Entry::file("opt/d/lower", "l"),
                ]),
                Layer::new(vec![
                    Entry::file("etc/a", "upper"),
                    Entry::whiteout("etc/a"),
                    Entry::file("opt/d/upper", "u"),
                    Entry::opaque("opt/d"),
                ]),
            ],
        ),
        (
            "opaque-root",
            vec![
                Layer::new(vec![Entry::file("etc/a", "a")]),
                Layer::new(vec![
                    Entry::raw(b".wh..wh..opq".to_vec(), ""),
                    Entry::file("usr/b", "b"),
                ]),
            ],
        ),
        (
            "odd-names",
            vec![Layer::new(vec![
                Entry::file("usr/a\nb", "newline"),
                Entry::dir("usr/d\nir"),
                Entry::symlink("usr/s\n", "a\nb"),
                Entry::raw(b"usr/\xff\xfe".to_vec(), "not utf-8"),
                Entry::raw(b"usr//double".to_vec(), "x"),
                Entry::raw(b"./usr/./dotted".to_vec(), "y"),
            ])],
        ),
        ("two-thousand-xattrs", vec![Layer::new(vec![many_xattrs])]),
        (
            "largest-xattr-and-a-capability",
            vec![Layer::new(vec![
                Entry::file("usr/x", "x").with_xattr("user.big", vec![b'v'; 65_535]),
                Entry::file("usr/cap", "c").with_xattr("security.capability", cap_v2()),
            ])],
        ),
        (
            "a-large-compressible-file",
            vec![Layer::new(vec![Entry::file(
                "usr/zero",
                vec![0u8; 64 << 20],
            )])],
        ),
    ]
}
