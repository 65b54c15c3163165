//! Lints about state: what belongs to each machine (its `/var`, its users,
//! its identity) rather than to the image, and what a build leaves behind.
//!
//! The model behind them: the image's `/usr` is the same on every machine
//! and replaced whole by an update; `/etc` is merged three ways; `/var` is
//! copied from the image once, at install, and never again. So whatever an
//! update must bring into `/var` or the user database has to be created at
//! boot (tmpfiles.d, sysusers.d), and whatever identifies a machine must not
//! come from the image.

use std::collections::HashSet;
use std::path::Path;

use crate::{Kind, LintError, Rootfs, show};

/// Configuration files are small; this bounds what a lint reads of one.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Where systemd reads tmpfiles.d and sysusers.d files from, in the image.
const TMPFILES_DIRS: [&str; 2] = ["/usr/lib/tmpfiles.d", "/etc/tmpfiles.d"];
const SYSUSERS_DIRS: [&str; 2] = ["/usr/lib/sysusers.d", "/etc/sysusers.d"];

/// Parts of `/var` that `var-content` leaves alone: judged by another lint
/// (`var-log`, `var-run`, `package-caches` in the cache), not state at all
/// (caches are rebuilt by their owners, `/var/tmp` is temporary, `/var/lock`
/// is a link into `/run`), or package-manager records that describe the
/// image's `/usr` rather than the machine (dpkg, apt, ucf and
/// deb-systemd-helper's lists), which osctl reads from each image.
const VAR_NOT_MACHINE_STATE: [&str; 10] = [
    "/var/cache",
    "/var/log",
    "/var/tmp",
    "/var/run",
    "/var/lock",
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/lib/ucf",
    "/var/lib/systemd/deb-systemd-helper-enabled",
    "/var/lib/systemd/deb-systemd-user-helper-enabled",
];

/// User and group ids Debian's base-passwd allocates statically (0–99,
/// and nobody/nogroup): the same in every image, so never a surprise.
fn static_id(id: u32) -> bool {
    id < 100 || id == 65534
}

/// Where a build may leave what builders mount during a `RUN` when `/run`
/// is not a mount of its own: buildah's and podman's container marker and
/// secrets. Not part of the image.
const BUILDER_RUN_FILES: [&str; 2] = ["/run/.containerenv", "/run/secrets"];

/// Files that hold a CA bundle, by distribution convention.
const CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The paths a tmpfiles.d file declares (the second field of each line).
/// Lines whose path uses `%` specifiers are skipped: they name places only
/// systemd can resolve.
pub(crate) fn tmpfiles_paths(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with('/') && !p.contains('%'))
        .map(|p| p.trim_end_matches('/'))
}

/// The users and groups a sysusers.d file creates: `u NAME` makes a user
/// and its group, `g NAME` a group.
pub(crate) fn sysusers_names(text: &str) -> (Vec<&str>, Vec<&str>) {
    let (mut users, mut groups) = (Vec::new(), Vec::new());
    for line in text.lines().map(str::trim) {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next()) {
            (Some("u" | "u!"), Some(name)) => {
                users.push(name);
                groups.push(name);
            }
            (Some("g"), Some(name)) => groups.push(name),
            _ => {}
        }
    }
    (users, groups)
}

/// `(name, id)` of each entry of a passwd or group file (the first and
/// third fields); malformed lines are skipped (systemd skips them too).
pub(crate) fn id_entries(text: &str) -> impl Iterator<Item = (&str, u32)> {
    text.lines().filter_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?.parse().ok()?;
        Some((name, id))
    })
}

/// The text of every `*.conf` in `dirs`, in the image.
fn conf_files(root: &Rootfs, dirs: &[&str]) -> Result<Vec<String>, LintError> {
    let mut texts = Vec::new();
    for dir in dirs {
        for name in root.list(Path::new(dir))? {
            if !name.to_string_lossy().ends_with(".conf") {
                continue;
            }
            if let Some(bytes) = root.read(&Path::new(dir).join(name), MAX_CONFIG_FILE)? {
                texts.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    Ok(texts)
}

pub(super) fn var_content(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let texts = conf_files(root, &TMPFILES_DIRS)?;
    let declared: HashSet<&Path> = texts
        .iter()
        .flat_map(|t| tmpfiles_paths(t))
        .map(Path::new)
        .collect();
    let mut problems = Vec::new();
    root.walk(Path::new("/var"), |path, _| {
        // Left alone even where tmpfiles.d declares it (systemd declares
        // /var/cache and /var/log themselves).
        if VAR_NOT_MACHINE_STATE.iter().any(|p| Path::new(p) == path) {
            return Ok(false);
        }
        if path == Path::new("/var") || declared.contains(path) {
            return Ok(true);
        }
        problems.push(format!("{}: not created by tmpfiles.d", show(path)));
        Ok(false)
    })?;
    Ok(problems)
}

/// Every path below `top` that is not a directory.
fn files_below(root: &Rootfs, top: &str) -> Result<Vec<String>, LintError> {
    let mut files = Vec::new();
    root.walk(Path::new(top), |path, kind| {
        if kind != Kind::Directory {
            files.push(show(path));
        }
        Ok(true)
    })?;
    Ok(files)
}

/// Files under /var/log; not symlinks: systemd ships /var/log/README, a
/// link to its documentation in /usr, and the lint's own fix (`find
/// /var/log -type f -delete`) rightly leaves it.
pub(super) fn var_log(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let mut files = Vec::new();
    root.walk(Path::new("/var/log"), |path, kind| {
        if matches!(kind, Kind::File { .. } | Kind::Special) {
            files.push(show(path));
        }
        Ok(true)
    })?;
    Ok(files)
}

/// Files under /run and /tmp, unless the builder mounted them; not
/// directories or symlinks, which base images ship (/run/lock, /run/shm).
pub(super) fn run_tmp(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let mut problems = Vec::new();
    for dir in ["/run", "/tmp"] {
        root.walk(Path::new(dir), |path, kind| {
            if BUILDER_RUN_FILES.iter().any(|p| Path::new(p) == path) || root.is_mount(path)? {
                return Ok(false);
            }
            if matches!(kind, Kind::File { .. } | Kind::Special) {
                problems.push(show(path));
            }
            Ok(true)
        })?;
    }
    Ok(problems)
}

pub(super) fn package_caches(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let mut problems: Vec<String> = files_below(root, "/var/cache/apt/archives")?
        .into_iter()
        .filter(|p| p.ends_with(".deb"))
        .collect();
    // apt keeps its lock file and an empty partial/ there even when clean.
    problems.extend(
        files_below(root, "/var/lib/apt/lists")?
            .into_iter()
            .filter(|p| !p.ends_with("/lock")),
    );
    Ok(problems)
}

pub(super) fn sysusers(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let texts = conf_files(root, &SYSUSERS_DIRS)?;
    let (mut users, mut groups) = (HashSet::new(), HashSet::new());
    for text in &texts {
        let (u, g) = sysusers_names(text);
        users.extend(u);
        groups.extend(g);
    }
    let mut problems = Vec::new();
    for (file, what, declared) in [
        ("/etc/passwd", "user", &users),
        ("/etc/group", "group", &groups),
    ] {
        let Some(bytes) = root.read(Path::new(file), MAX_CONFIG_FILE)? else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for (name, id) in id_entries(&text) {
            if !static_id(id) && !declared.contains(name) {
                problems.push(format!(
                    "{file}: {what} {name} ({id}) has no sysusers.d entry"
                ));
            }
        }
    }
    Ok(problems)
}

pub(super) fn machine_id(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let path = Path::new("/etc/machine-id");
    let Some(bytes) = root.read(path, MAX_CONFIG_FILE)? else {
        return Ok(Vec::new());
    };
    // "uninitialized" is systemd's own marker for "first boot not done".
    let id = String::from_utf8_lossy(&bytes);
    Ok(match id.trim() {
        "" | "uninitialized" => Vec::new(),
        _ => vec!["/etc/machine-id: holds an id".to_owned()],
    })
}

pub(super) fn buildah_injected(root: &Rootfs) -> Result<Vec<String>, LintError> {
    let mut problems = Vec::new();
    for file in ["/etc/hostname", "/etc/resolv.conf"] {
        let path = Path::new(file);
        match root.kind(path)? {
            Some(Kind::File { .. }) if root.is_mount(path)? => problems.push(format!(
                "{file}: bind-mounted by the builder, which leaves an empty placeholder in the image"
            )),
            Some(Kind::File { len: 0 }) => problems.push(format!("{file}: an empty placeholder")),
            _ => {}
        }
    }
    Ok(problems)
}

pub(super) fn ca_bundle(root: &Rootfs) -> Result<Vec<String>, LintError> {
    for bundle in CA_BUNDLES {
        match root.kind(Path::new(bundle))? {
            Some(Kind::File { len }) if len > 0 => return Ok(Vec::new()),
            Some(Kind::Symlink) => return Ok(Vec::new()),
            _ => {}
        }
    }
    Ok(vec![format!("none of {}", CA_BUNDLES.join(", "))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tmpfiles_lines() {
        let text = "# comment\n\nd /var/lib/app 0750 app app -\nL /var/run - - - - ../run\nd %S/x\nC /var/x/ - - - - /usr/share/x\n";
        assert_eq!(
            tmpfiles_paths(text).collect::<Vec<_>>(),
            ["/var/lib/app", "/var/run", "/var/x"]
        );
    }

    #[test]
    fn parses_sysusers_lines() {
        let text = "u app - \"App\"\nu! locked 500\ng web -\nm app web\n# u commented\n";
        assert_eq!(
            sysusers_names(text),
            (vec!["app", "locked"], vec!["app", "locked", "web"])
        );
    }

    #[test]
    fn parses_passwd_and_group_lines() {
        let text =
            "root:x:0:0:root:/root:/bin/bash\nbroken\napp:x:998:998::/:/usr/sbin/nologin\ng:x:12\n";
        assert_eq!(
            id_entries(text).collect::<Vec<_>>(),
            [("root", 0), ("app", 998), ("g", 12)]
        );
    }
}
