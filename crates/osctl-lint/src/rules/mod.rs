//! The lints, in the order they run and are listed. Each check lives in
//! the file of what it is about: booting (`boot.rs`), the shape of the
//! filesystem (`layout.rs`), state that belongs to machines, not images
//! (`state.rs`).

mod boot;
mod layout;
mod state;

use crate::Level::{Fatal, Warning};
use crate::Lint;

/// Every lint. Names are stable: scripts `--skip` them and match on them.
pub static LINTS: [Lint; 18] = [
    Lint {
        name: "kernel",
        level: Fatal,
        summary: "exactly one kernel: /usr/lib/modules/<kver>/vmlinuz with initramfs.img beside it, both regular files",
        fix: "install one kernel package and keep its vmlinuz and initramfs.img in /usr/lib/modules/<kver>/",
        check: boot::kernel,
    },
    Lint {
        name: "initramfs-root-setup",
        level: Fatal,
        summary: "the initramfs carries osctl's root setup (usr/lib/osctl/osctl-root-setup); without it the image cannot mount its own root",
        fix: "install the initramfs-tools hook or dracut module from contrib/ and regenerate the initramfs after osctl-root-setup is in place",
        check: boot::initramfs_root_setup,
    },
    Lint {
        name: "kargs",
        level: Fatal,
        summary: "every *.toml in /usr/lib/bootc/kargs.d and /usr/lib/osctl/kargs.d is a valid kargs file (staging refuses the image otherwise)",
        fix: "write kargs = [\"arg\", ...] and optionally match-architectures = [\"x86_64\"], one kernel argument per string",
        check: boot::kargs,
    },
    Lint {
        name: "api-directories",
        level: Fatal,
        summary: "/dev, /proc, /sys, /run, /tmp, /etc, /var and /sysroot are directories (the root setup and systemd mount onto them)",
        fix: "mkdir -p /dev /proc /sys /run /tmp /etc /var /sysroot in the Containerfile",
        check: layout::api_directories,
    },
    Lint {
        name: "var-run",
        level: Fatal,
        summary: "/var/run is a symlink to /run (a real directory would hide the runtime state of every service)",
        fix: "rm -rf /var/run && ln -s ../run /var/run",
        check: layout::var_run,
    },
    Lint {
        name: "utf8",
        level: Warning,
        summary: "every file name and symlink target is UTF-8: logs, JSON status and the /etc merge's conflict list can only show such paths approximately",
        fix: "rename the files, or remove them from the image",
        check: layout::utf8,
    },
    Lint {
        name: "etc-usretc",
        level: Warning,
        summary: "no /usr/etc beside /etc: osctl merges and boots the image's /etc and never reads /usr/etc",
        fix: "keep the configuration in /etc and remove /usr/etc",
        check: layout::etc_usretc,
    },
    Lint {
        name: "panic-karg",
        level: Warning,
        summary: "panic= is among the image's kernel arguments: without it a crashing init hangs instead of rebooting, and the automatic fallback never happens",
        fix: "printf 'kargs = [\"panic=10\"]\\n' > /usr/lib/bootc/kargs.d/10-panic.toml",
        check: boot::panic_karg,
    },
    Lint {
        name: "boot-empty",
        level: Warning,
        summary: "/boot is empty: osctl boots the kernel in /usr/lib/modules/<kver>/ and never reads /boot of the image",
        fix: "remove what is in /boot at the end of the RUN that installed the kernel",
        check: boot::boot_empty,
    },
    Lint {
        name: "writable-dirs",
        level: Warning,
        summary: "/home, /root, /srv and /mnt are not real directories of the image: the image is read-only on the machine, so nothing could be written there",
        fix: "replace each with a symlink into /var (home -> var/home, root -> var/roothome, srv -> var/srv, mnt -> var/mnt) created by tmpfiles.d",
        check: layout::writable_dirs,
    },
    Lint {
        name: "var-content",
        level: Warning,
        summary: "content the image puts in /var reaches a machine only at its first install; later updates never add it",
        fix: "create it at boot instead: a tmpfiles.d entry, or StateDirectory= in the service's unit",
        check: state::var_content,
    },
    Lint {
        name: "var-log",
        level: Warning,
        summary: "no files in /var/log: logs of the build land on machines at install and are stale ever after",
        fix: "remove them at the end of the RUN that wrote them (find /var/log -type f -delete)",
        check: state::var_log,
    },
    Lint {
        name: "run-tmp",
        level: Warning,
        summary: "no files in /run or /tmp: both are emptied at every boot, so what the build left there is dead weight",
        fix: "remove it at the end of the RUN that wrote it",
        check: state::run_tmp,
    },
    Lint {
        name: "package-caches",
        level: Warning,
        summary: "no downloaded packages (/var/cache/apt/archives/*.deb) or package lists (/var/lib/apt/lists): they only make the image larger",
        fix: "end each apt RUN with: apt-get clean && rm -rf /var/lib/apt/lists/*",
        check: state::package_caches,
    },
    Lint {
        name: "sysusers",
        level: Warning,
        summary: "users and groups the image adds are declared in sysusers.d: a machine whose /etc/passwd was edited keeps its own file at the /etc merge, and would lack them",
        fix: "add a sysusers.d file (u NAME - \"description\") in /usr/lib/sysusers.d",
        check: state::sysusers,
    },
    Lint {
        name: "machine-id",
        level: Warning,
        summary: "/etc/machine-id is empty or absent: every machine installed from the image would share the one it holds",
        fix: "truncate -s 0 /etc/machine-id (systemd makes one at first boot)",
        check: state::machine_id,
    },
    Lint {
        name: "buildah-injected",
        level: Warning,
        summary: "/etc/hostname and /etc/resolv.conf are not what buildah and podman leave (an empty placeholder; a bind mount during RUN): an empty resolv.conf leaves a new machine without DNS",
        fix: "build with --dns=none --no-hostname, or write real content in the Containerfile",
        check: state::buildah_injected,
    },
    Lint {
        name: "ca-bundle",
        level: Warning,
        summary: "a CA bundle is present: without one the machine cannot verify a TLS registry, so it cannot update",
        fix: "install ca-certificates",
        check: state::ca_bundle,
    },
];
