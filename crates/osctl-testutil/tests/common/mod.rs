//! Specs shared by the harness tests.

use osctl_testutil::{Entry, Layer};

/// Lower layer: one of each entry kind, owners, modes and xattrs.
pub fn base_layer() -> Layer {
    Layer::new(vec![
        Entry::dir("etc"),
        Entry::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        Entry::file_with("etc/shadow", 0o640, 0, 42, "root:*:19000::::::\n"),
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::file_with("usr/bin/tool", 0o4755, 0, 0, "#!/bin/sh\necho tool\n")
            .with_xattr("user.osctl.test", "hello")
            .with_xattr("trusted.osctl.binary", [0u8, 1, 2, 255]),
        Entry::hardlink("usr/bin/tool-link", "usr/bin/tool"),
        Entry::symlink("usr/bin/sh", "tool"),
        Entry::symlink("usr/lib64", "../lib-does-not-exist"),
        Entry::dir("dev"),
        Entry::char_dev("dev/null", 1, 3),
        Entry::block_dev("dev/loop0", 7, 0),
        Entry::fifo("dev/initctl"),
        Entry::dir("opt"),
        Entry::dir("opt/old"),
        Entry::file("opt/old/a", "a"),
        Entry::file("opt/old/b", "b"),
        Entry::file("removed.txt", "soon gone"),
        Entry::dir_with("home", 0o755, 0, 0),
        Entry::dir_with("home/user", 0o700, 1000, 1000),
        Entry::file_with("home/user/.profile", 0o600, 1000, 1000, "export X=1\n"),
        Entry::file("empty", ""),
    ])
}

/// Upper layer: whiteouts, an opaque directory and overrides.
pub fn upper_layer() -> Layer {
    Layer::new(vec![
        Entry::whiteout("removed.txt"),
        Entry::whiteout("usr/bin/sh"),
        Entry::dir("opt/old"),
        Entry::opaque("opt/old"),
        Entry::file("opt/old/c", "c"),
        Entry::file("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
        Entry::dir("var"),
        Entry::file_with("var/state", 0o600, 1000, 100, "state"),
    ])
}
