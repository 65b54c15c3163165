//! The per-file rules of the /etc merge: who wins, what is reported.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use common::*;
use osctl_deploy::{ChangeKind, ConflictKind};

#[test]
fn unchanged_file_takes_new_content() {
    let t = Trees::new();
    t.each(|r| write(r, "same", "same\n"));
    write(&t.old, "motd", "v1\n");
    write(&t.current, "motd", "v1\n");
    write(&t.new, "motd", "v2\n");
    set_xattr(&t.new, "motd", "user.origin", b"image");
    chown(&t.new, "motd", 0, 4);

    let report = t.merge();
    assert_eq!(read(&t.out("motd")), "v2\n");
    assert_eq!(get_xattr(&t.out("motd"), "user.origin").unwrap(), b"image");
    assert_eq!(owner(&t.out("motd")), (0, 4));
    assert_eq!(read(&t.out("same")), "same\n");
    assert_eq!(
        changes(report.updated()),
        [("motd".into(), ChangeKind::Modified)]
    );
    assert!(report.carried().is_empty());
    assert!(report.conflicts().is_empty());
}

#[test]
fn mtime_is_not_a_change_but_is_preserved() {
    let t = Trees::new();
    t.each(|r| write(r, "hosts", "127.0.0.1 localhost\n"));
    write(&t.new, "hosts", "127.0.0.1 localhost\n::1 localhost\n");
    let touched = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let f = fs::File::options()
        .write(true)
        .open(t.current.join("hosts"))
        .unwrap();
    f.set_modified(touched).unwrap();
    let image_time = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000);
    let f = fs::File::options()
        .write(true)
        .open(t.new.join("hosts"))
        .unwrap();
    f.set_modified(image_time).unwrap();

    let report = t.merge();
    assert_eq!(
        read(&t.out("hosts")),
        "127.0.0.1 localhost\n::1 localhost\n"
    );
    assert_eq!(meta(&t.out("hosts")).modified().unwrap(), image_time);
    assert!(report.carried().is_empty());
    assert_eq!(changes(report.updated()).len(), 1);
}

#[test]
fn admin_modified_content_is_kept() {
    let t = Trees::new();
    t.each(|r| write(r, "hosts", "127.0.0.1 localhost\n"));
    write(&t.current, "hosts", "127.0.0.1 localhost\n10.0.0.2 db\n");

    let report = t.merge();
    assert_eq!(read(&t.out("hosts")), "127.0.0.1 localhost\n10.0.0.2 db\n");
    assert_eq!(
        changes(report.carried()),
        [("hosts".into(), ChangeKind::Modified)]
    );
    assert!(report.updated().is_empty() && report.conflicts().is_empty());
}

#[test]
fn admin_metadata_changes_are_kept() {
    let t = Trees::new();
    t.each(|r| {
        for f in ["mode", "owner", "xattr", "security"] {
            write(r, f, "x\n");
        }
        link(r, "link", "mode");
    });
    chmod(&t.current, "mode", 0o600);
    chown(&t.current, "owner", 1000, 1001);
    set_xattr(&t.current, "xattr", "user.note", b"admin");
    set_xattr(&t.current, "security", "security.osctl-test", b"label");
    fs::remove_file(t.current.join("link")).unwrap();
    link(&t.current, "link", "owner");

    let report = t.merge();
    assert_eq!(mode(&t.out("mode")), 0o600);
    assert_eq!(mode(&t.out("owner")), 0o644);
    assert_eq!(owner(&t.out("owner")), (1000, 1001));
    assert_eq!(get_xattr(&t.out("xattr"), "user.note").unwrap(), b"admin");
    assert_eq!(
        get_xattr(&t.out("security"), "security.osctl-test").unwrap(),
        b"label"
    );
    assert_eq!(read_link(&t.out("link")), std::path::Path::new("owner"));
    let carried = changes(report.carried());
    for f in ["link", "mode", "owner", "security", "xattr"] {
        assert!(
            carried.contains(&(f.into(), ChangeKind::Modified)),
            "{f}: {carried:?}"
        );
    }
    assert_eq!(carried.len(), 5);
}

#[test]
fn setuid_and_capabilities_survive_the_owner_change() {
    let t = Trees::new();
    t.each(|r| write(r, "helper", "#!/bin/sh\n"));
    write(&t.new, "helper", "#!/bin/sh\nexit 0\n");
    chown(&t.new, "helper", 1000, 1000);
    chmod(&t.new, "helper", 0o4755);
    // A minimal VFS_CAP_REVISION_2 value: cap_net_bind_service, effective.
    let cap: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    set_xattr(&t.new, "helper", "security.capability", &cap);

    t.merge();
    assert_eq!(owner(&t.out("helper")), (1000, 1000));
    assert_eq!(mode(&t.out("helper")), 0o4755);
    assert_eq!(
        get_xattr(&t.out("helper"), "security.capability").unwrap(),
        cap
    );
}

#[test]
fn additions_and_deletions_on_either_side() {
    let t = Trees::new();
    t.each(|r| {
        write(r, "admin-deletes", "a\n");
        write(r, "image-deletes", "b\n");
    });
    remove(&t.current, "admin-deletes");
    remove(&t.new, "image-deletes");
    write(&t.current, "admin-adds", "local\n");
    chmod(&t.current, "admin-adds", 0o640);
    write(&t.new, "image-adds", "shipped\n");

    let report = t.merge();
    assert_eq!(names(&t.target), ["admin-adds", "image-adds"]);
    assert_eq!(read(&t.out("admin-adds")), "local\n");
    assert_eq!(mode(&t.out("admin-adds")), 0o640);
    assert_eq!(read(&t.out("image-adds")), "shipped\n");
    assert_eq!(
        changes(report.carried()),
        [
            ("admin-adds".into(), ChangeKind::Added),
            ("admin-deletes".into(), ChangeKind::Deleted)
        ]
    );
    assert_eq!(
        changes(report.updated()),
        [
            ("image-adds".into(), ChangeKind::Added),
            ("image-deletes".into(), ChangeKind::Deleted)
        ]
    );
    assert!(report.conflicts().is_empty());
}

#[test]
fn both_modified_keeps_the_admins_version_and_reports() {
    let t = Trees::new();
    t.each(|r| write(r, "sshd_config", "Port 22\n"));
    write(&t.current, "sshd_config", "Port 2222\n");
    write(&t.new, "sshd_config", "Port 22\nUsePAM yes\n");
    // Admin changed only the mode, image the content: still both modified.
    t.each(|r| write(r, "shadow", "root:*:\n"));
    chmod(&t.current, "shadow", 0o600);
    write(&t.new, "shadow", "root:*:\nnobody:*:\n");

    let report = t.merge();
    assert_eq!(read(&t.out("sshd_config")), "Port 2222\n");
    assert_eq!(read(&t.out("shadow")), "root:*:\n");
    assert_eq!(mode(&t.out("shadow")), 0o600);
    assert_eq!(
        conflicts(&report),
        [
            ("shadow".into(), ConflictKind::BothModified),
            ("sshd_config".into(), ConflictKind::BothModified)
        ]
    );
    assert!(report.carried().is_empty() && report.updated().is_empty());
}

#[test]
fn the_same_change_on_both_sides_is_no_conflict() {
    let t = Trees::new();
    t.each(|r| write(r, "resolv.conf", "nameserver 1.1.1.1\n"));
    write(&t.current, "resolv.conf", "nameserver 9.9.9.9\n");
    write(&t.new, "resolv.conf", "nameserver 9.9.9.9\n");
    write(&t.current, "both-added", "same\n");
    write(&t.new, "both-added", "same\n");

    let report = t.merge();
    assert_eq!(read(&t.out("resolv.conf")), "nameserver 9.9.9.9\n");
    assert_eq!(read(&t.out("both-added")), "same\n");
    assert_eq!(report, Default::default());
}

#[test]
fn added_on_both_sides_differently_keeps_the_admins() {
    let t = Trees::new();
    write(&t.current, "chrony.conf", "server ntp.local\n");
    write(&t.new, "chrony.conf", "pool 2.debian.pool.ntp.org\n");

    let report = t.merge();
    assert_eq!(read(&t.out("chrony.conf")), "server ntp.local\n");
    assert_eq!(
        conflicts(&report),
        [("chrony.conf".into(), ConflictKind::BothAdded)]
    );
}

#[test]
fn modify_versus_delete_keeps_the_admins_side() {
    let t = Trees::new();
    t.each(|r| {
        write(r, "admin-edits", "1\n");
        write(r, "admin-deletes", "1\n");
    });
    write(&t.current, "admin-edits", "2\n");
    remove(&t.new, "admin-edits");
    remove(&t.current, "admin-deletes");
    write(&t.new, "admin-deletes", "2\n");

    let report = t.merge();
    assert_eq!(names(&t.target), ["admin-edits"]);
    assert_eq!(read(&t.out("admin-edits")), "2\n");
    assert_eq!(
        conflicts(&report),
        [
            ("admin-deletes".into(), ConflictKind::DeletedButImageChanged),
            ("admin-edits".into(), ConflictKind::ModifiedButImageDeleted)
        ]
    );
}

#[test]
fn large_files_are_compared_by_content() {
    let t = Trees::new();
    // 3 MiB + 1: several compare blocks, differences only near the end.
    let base: String = "0123456789abcdef".repeat(3 * 65536) + "x";
    let late = |c: &str| format!("{}{c}", &base[..base.len() - 1]);
    t.each(|r| {
        write(r, "big-image", &base);
        write(r, "big-admin", &base);
        write(r, "big-same", &base);
    });
    write(&t.new, "big-image", &late("y"));
    write(&t.current, "big-admin", &late("z"));

    let report = t.merge();
    assert_eq!(read(&t.out("big-image")), late("y"));
    assert_eq!(read(&t.out("big-admin")), late("z"));
    assert_eq!(read(&t.out("big-same")), base);
    assert_eq!(
        changes(report.carried()),
        [("big-admin".into(), ChangeKind::Modified)]
    );
    assert_eq!(
        changes(report.updated()),
        [("big-image".into(), ChangeKind::Modified)]
    );
    // Copies, not links into the sources.
    assert_ne!(
        meta(&t.out("big-same")).ino(),
        meta(&t.new.join("big-same")).ino()
    );
}

#[test]
fn report_serializes_for_status() {
    let t = Trees::new();
    t.each(|r| write(r, "a", "1\n"));
    write(&t.current, "a", "2\n");
    write(&t.new, "a", "3\n");
    write(&t.current, "b", "local\n");

    let json = serde_json::to_value(t.merge()).unwrap();
    assert_eq!(json["conflicts"][0]["path"], "a");
    assert_eq!(json["conflicts"][0]["kind"], "bothModified");
    assert!(
        json["conflicts"][0]["resolution"]
            .as_str()
            .unwrap()
            .contains("admin")
    );
    assert_eq!(json["carried"][0]["path"], "b");
    assert_eq!(json["carried"][0]["kind"], "added");
    assert_eq!(json["updated"], serde_json::json!([]));
    assert_eq!(json["skipped"], serde_json::json!([]));
}

#[test]
fn io_errors_name_the_path_and_step() {
    let t = Trees::new();
    t.each(|r| write(r, "hosts", "x\n"));
    write(&t.target, "hosts", "in the way\n");

    let err = t.try_merge().unwrap_err();
    let msg = err.to_string();
    assert_eq!(msg, "/etc merge: creating /etc/hosts (target)");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("exists"), "{source}");
}
