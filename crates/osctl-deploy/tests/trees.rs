//! Directories, type changes, symlinks, hard links and special files.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use osctl_deploy::{ChangeKind, ConflictKind};

#[test]
fn file_to_dir_by_admin_while_image_changed_the_file() {
    let t = Trees::new();
    t.each(|r| write(r, "sudoers", "root ALL\n"));
    write(&t.new, "sudoers", "root ALL\n@includedir /etc/sudoers.d\n");
    remove(&t.current, "sudoers");
    write(&t.current, "sudoers/admins", "%wheel ALL\n");
    chmod(&t.current, "sudoers", 0o750);

    let report = t.merge();
    assert!(meta(&t.out("sudoers")).is_dir());
    assert_eq!(mode(&t.out("sudoers")), 0o750);
    assert_eq!(read(&t.out("sudoers/admins")), "%wheel ALL\n");
    assert_eq!(
        conflicts(&report),
        [("sudoers".into(), ConflictKind::TypeChanged)]
    );
    let c = &report.conflicts()[0];
    assert!(
        c.resolution().contains("admin's directory"),
        "{}",
        c.resolution()
    );
}

#[test]
fn dir_to_file_by_admin_while_image_changed_inside() {
    let t = Trees::new();
    t.each(|r| write(r, "profile.d/a.sh", "A=1\n"));
    write(&t.new, "profile.d/a.sh", "A=2\n");
    remove(&t.current, "profile.d");
    write(&t.current, "profile.d", "not a dir any more\n");

    let report = t.merge();
    assert!(meta(&t.out("profile.d")).is_file());
    assert_eq!(read(&t.out("profile.d")), "not a dir any more\n");
    assert_eq!(
        conflicts(&report),
        [("profile.d".into(), ConflictKind::TypeChanged)]
    );
}

#[test]
fn image_turns_a_file_the_admin_edited_into_a_dir() {
    let t = Trees::new();
    t.each(|r| write(r, "limits.conf", "a\n"));
    write(&t.current, "limits.conf", "a\nadmin\n");
    remove(&t.new, "limits.conf");
    write(&t.new, "limits.conf/00-default", "b\n");
    // Left alone by the admin: the image's type change is taken.
    t.each(|r| write(r, "rc.local", "exit 0\n"));
    remove(&t.new, "rc.local");
    write(&t.new, "rc.local/README", "gone\n");

    let report = t.merge();
    assert_eq!(read(&t.out("limits.conf")), "a\nadmin\n");
    assert_eq!(read(&t.out("rc.local/README")), "gone\n");
    assert_eq!(
        conflicts(&report),
        [("limits.conf".into(), ConflictKind::TypeChanged)]
    );
    assert_eq!(
        changes(report.updated()),
        [("rc.local".into(), ChangeKind::Modified)]
    );
}

#[test]
fn admin_deleted_dir_stays_deleted() {
    let t = Trees::new();
    t.each(|r| {
        write(r, "untouched.d/x", "1\n");
        write(r, "changed.d/keep", "1\n");
        write(r, "changed.d/sub/y", "1\n");
    });
    remove(&t.current, "untouched.d");
    remove(&t.current, "changed.d");
    write(&t.new, "changed.d/sub/y", "2\n");

    let report = t.merge();
    assert!(names(&t.target).is_empty());
    assert_eq!(
        changes(report.carried()),
        [("untouched.d".into(), ChangeKind::Deleted)]
    );
    assert_eq!(
        conflicts(&report),
        [("changed.d".into(), ConflictKind::DeletedButImageChanged)]
    );
}

#[test]
fn image_deleted_dir_goes_unless_the_admin_changed_it() {
    let t = Trees::new();
    t.each(|r| {
        write(r, "plain.d/x", "1\n");
        write(r, "edited.d/conf", "1\n");
        write(r, "edited.d/other", "1\n");
    });
    remove(&t.new, "plain.d");
    remove(&t.new, "edited.d");
    write(&t.current, "edited.d/conf", "admin\n");
    write(&t.current, "edited.d/local", "mine\n");
    chmod(&t.current, "edited.d", 0o700);

    let report = t.merge();
    assert_eq!(names(&t.target), ["edited.d"]);
    assert_eq!(names(&t.out("edited.d")), ["conf", "local"]);
    assert_eq!(read(&t.out("edited.d/conf")), "admin\n");
    assert_eq!(mode(&t.out("edited.d")), 0o700);
    assert_eq!(
        conflicts(&report),
        [
            ("edited.d".into(), ConflictKind::ModifiedButImageDeleted),
            (
                "edited.d/conf".into(),
                ConflictKind::ModifiedButImageDeleted
            )
        ]
    );
    assert_eq!(
        changes(report.carried()),
        [("edited.d/local".into(), ChangeKind::Added)]
    );
    assert_eq!(
        changes(report.updated()),
        [
            ("edited.d/other".into(), ChangeKind::Deleted),
            ("plain.d".into(), ChangeKind::Deleted)
        ]
    );
}

#[test]
fn nested_dirs_merge_entry_by_entry() {
    let t = Trees::new();
    t.each(|r| {
        write(r, "a/b/c/deep", "1\n");
        write(r, "a/b/c/deeper/leaf", "1\n");
        write(r, "a/top", "1\n");
    });
    write(&t.current, "a/b/c/deep", "admin\n");
    write(&t.new, "a/b/c/deeper/leaf", "image\n");
    write(&t.new, "a/b/new-file", "image\n");
    write(&t.current, "a/b/c/local", "admin\n");
    // Directory metadata: admin on a/b, image on a, both on a/b/c.
    chmod(&t.current, "a/b", 0o700);
    chown(&t.new, "a", 0, 5);
    chmod(&t.current, "a/b/c", 0o750);
    chmod(&t.new, "a/b/c", 0o711);

    let report = t.merge();
    let out = |p: &str| read(&t.out(p));
    assert_eq!(out("a/b/c/deep"), "admin\n");
    assert_eq!(out("a/b/c/deeper/leaf"), "image\n");
    assert_eq!(out("a/b/new-file"), "image\n");
    assert_eq!(out("a/b/c/local"), "admin\n");
    assert_eq!(out("a/top"), "1\n");
    assert_eq!(mode(&t.out("a/b")), 0o700);
    assert_eq!(owner(&t.out("a")), (0, 5));
    assert_eq!(mode(&t.out("a/b/c")), 0o750);
    assert_eq!(
        changes(report.carried()),
        [
            ("a/b".into(), ChangeKind::Modified),
            ("a/b/c/deep".into(), ChangeKind::Modified),
            ("a/b/c/local".into(), ChangeKind::Added)
        ]
    );
    assert_eq!(
        changes(report.updated()),
        [
            ("a".into(), ChangeKind::Modified),
            ("a/b/c/deeper/leaf".into(), ChangeKind::Modified),
            ("a/b/new-file".into(), ChangeKind::Added)
        ]
    );
    assert_eq!(
        conflicts(&report),
        [("a/b/c".into(), ConflictKind::BothModified)]
    );
}

#[test]
fn dirs_added_on_both_sides_are_merged() {
    let t = Trees::new();
    write(&t.current, "app.d/admin.conf", "a\n");
    write(&t.new, "app.d/image.conf", "i\n");

    let report = t.merge();
    assert_eq!(names(&t.out("app.d")), ["admin.conf", "image.conf"]);
    assert_eq!(
        changes(report.carried()),
        [("app.d/admin.conf".into(), ChangeKind::Added)]
    );
    assert_eq!(
        changes(report.updated()),
        [("app.d/image.conf".into(), ChangeKind::Added)]
    );
    assert!(report.conflicts().is_empty());
}

#[test]
fn etc_root_metadata_follows_the_rules() {
    let t = Trees::new();
    chmod(&t.current, ".", 0o750);
    set_xattr(&t.current, ".", "user.etc", b"admin");
    let report = t.merge();
    assert_eq!(mode(&t.target), 0o750);
    assert_eq!(get_xattr(&t.target, "user.etc").unwrap(), b"admin");
    assert_eq!(
        changes(report.carried()),
        [(".".into(), ChangeKind::Modified)]
    );
}

#[test]
fn symlinks_out_of_etc_are_copied_never_followed() {
    let t = Trees::new();
    let outside = t.tmp.path().join("outside");
    write(&outside, "secret", "do not read\n");
    write(&outside, "dir/file", "do not list\n");
    let abs = outside.join("secret");
    let abs_dir = outside.join("dir");
    t.each(|r| {
        link(r, "localtime", "/usr/share/zoneinfo/UTC");
        link(r, "up", "../outside/secret");
        link(r, "to-dir", abs_dir.to_str().unwrap());
    });
    // Admin points `localtime` elsewhere, adds an absolute link out of /etc;
    // the image retargets `up`. `to-dir` is a directory symlink on every
    // side while `dir` inside it changes: nothing to see through it.
    fs::remove_file(t.current.join("localtime")).unwrap();
    link(&t.current, "localtime", "/usr/share/zoneinfo/Europe/Paris");
    link(&t.current, "abs", abs.to_str().unwrap());
    set_xattr(&t.current, "abs", "trusted.osctl-test", b"on the link");
    fs::remove_file(t.new.join("up")).unwrap();
    link(&t.new, "up", "../../elsewhere");
    // Where the image has a directory and the admin a symlink to one.
    mkdir(&t.new, "ssl");
    write(&t.new, "ssl/cert.pem", "image\n");
    link(&t.current, "ssl", abs_dir.to_str().unwrap());

    let report = t.merge();
    let target = |p: &str| read_link(&t.out(p));
    assert_eq!(
        target("localtime"),
        Path::new("/usr/share/zoneinfo/Europe/Paris")
    );
    assert_eq!(target("abs"), abs);
    assert_eq!(target("up"), Path::new("../../elsewhere"));
    assert_eq!(target("to-dir"), abs_dir);
    assert_eq!(target("ssl"), abs_dir);
    for p in ["localtime", "abs", "up", "to-dir", "ssl"] {
        assert!(meta(&t.out(p)).file_type().is_symlink(), "{p}");
    }
    assert_eq!(
        get_xattr(&t.out("abs"), "trusted.osctl-test").unwrap(),
        b"on the link"
    );
    assert_eq!(get_xattr(&abs, "trusted.osctl-test"), None);
    assert_eq!(names(&outside), ["dir", "secret"]);
    assert_eq!(names(&abs_dir), ["file"]);
    assert_eq!(
        conflicts(&report),
        [("ssl".into(), ConflictKind::BothAdded)]
    );
    assert_eq!(
        changes(report.carried()),
        [
            ("abs".into(), ChangeKind::Added),
            ("localtime".into(), ChangeKind::Modified)
        ]
    );
}

#[test]
fn hardlinks_are_kept_within_one_side() {
    let t = Trees::new();
    t.each(|r| {
        write(r, "group/a", "1\n");
        fs::hard_link(r.join("group/a"), r.join("group/b")).unwrap();
        write(r, "split/p", "1\n");
        fs::hard_link(r.join("split/p"), r.join("split/q")).unwrap();
        write(r, "edited/x", "1\n");
        fs::hard_link(r.join("edited/x"), r.join("edited/y")).unwrap();
    });
    // The image changes the `group` pair through one name (both change).
    fs::write(t.new.join("group/a"), "2\n").unwrap();
    // The admin replaces `split/p` by a new file, breaking its link; the
    // image changes the pair (p: conflict, admin wins; q: image wins).
    fs::remove_file(t.current.join("split/p")).unwrap();
    write(&t.current, "split/p", "admin\n");
    fs::write(t.new.join("split/q"), "2\n").unwrap();
    // The admin edits the `edited` pair in place; the image leaves it alone.
    fs::write(t.current.join("edited/y"), "admin\n").unwrap();
    // And adds a linked pair of its own.
    write(&t.current, "new1", "n\n");
    fs::hard_link(t.current.join("new1"), t.current.join("new2")).unwrap();

    let report = t.merge();
    let ino = |p: &str| meta(&t.out(p)).ino();
    assert_eq!(read(&t.out("group/b")), "2\n");
    assert_eq!(ino("group/a"), ino("group/b"));
    assert_eq!(read(&t.out("edited/x")), "admin\n");
    assert_eq!(ino("edited/x"), ino("edited/y"));
    assert_eq!(ino("new1"), ino("new2"));
    assert_eq!(meta(&t.out("new1")).nlink(), 2);
    assert_eq!(read(&t.out("split/p")), "admin\n");
    assert_eq!(read(&t.out("split/q")), "2\n");
    assert_ne!(ino("split/p"), ino("split/q"));
    assert_eq!(
        conflicts(&report),
        [("split/p".into(), ConflictKind::BothModified)]
    );
}

#[test]
fn special_files_are_recreated() {
    use rustix::fs::{FileType, Mode, makedev, mknodat};
    let t = Trees::new();
    let node = |root: &Path, name: &str, ft: FileType, dev: u64| {
        let dir = fs::File::open(root).unwrap();
        mknodat(&dir, name, ft, Mode::from_raw_mode(0o640), dev).unwrap();
    };
    t.each(|r| node(r, "initctl", FileType::Fifo, 0));
    node(&t.current, "initctl-admin", FileType::Fifo, 0);
    chown(&t.current, "initctl-admin", 0, 7);
    node(&t.new, "null", FileType::CharacterDevice, makedev(1, 3));
    node(&t.new, "loop", FileType::BlockDevice, makedev(7, 0));
    node(&t.current, "sock", FileType::Socket, 0);

    let report = t.merge();
    let ft = |p: &str| meta(&t.out(p)).file_type();
    assert!(ft("initctl").is_fifo());
    assert!(ft("initctl-admin").is_fifo());
    assert_eq!(owner(&t.out("initctl-admin")), (0, 7));
    assert!(ft("null").is_char_device());
    assert_eq!(meta(&t.out("null")).rdev(), makedev(1, 3));
    assert!(ft("loop").is_block_device());
    assert!(ft("sock").is_socket());
    assert_eq!(mode(&t.out("null")), 0o640);
    assert!(report.skipped().is_empty());
    assert_eq!(
        changes(report.carried()),
        [
            ("initctl-admin".into(), ChangeKind::Added),
            ("sock".into(), ChangeKind::Added)
        ]
    );
}

#[test]
fn a_changed_device_number_is_a_change() {
    use rustix::fs::{FileType, Mode, makedev, mknodat};
    let t = Trees::new();
    for (root, minor) in [(&t.old, 3), (&t.current, 3), (&t.new, 5)] {
        let dir = fs::File::open(root).unwrap();
        let mode = Mode::from_raw_mode(0o600);
        mknodat(
            &dir,
            "dev",
            FileType::CharacterDevice,
            mode,
            makedev(1, minor),
        )
        .unwrap();
    }
    let report = t.merge();
    assert_eq!(meta(&t.out("dev")).rdev(), makedev(1, 5));
    assert_eq!(
        changes(report.updated()),
        [("dev".into(), ChangeKind::Modified)]
    );
}
