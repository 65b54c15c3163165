//! Boot files from real images (OCI layouts pulled into a real store) into a
//! real boot dir: kernel discovery and installation, kargs.d, BLS entries
//! and loader.conf.

mod common_boot;

use std::fs;

use common_boot::*;
use osctl_deploy::boot::{self, BlsEntry, BootError, Tries};
use osctl_deploy::layout::DeploymentId;
use osctl_deploy::layout::cmdline::Verity;
use osctl_testutil::Entry;

#[tokio::test(flavor = "multi_thread")]
async fn find_kernel_none() {
    let env = Env::new();
    let (image, tree) = env
        .image("bare", vec![Entry::file("etc/motd", "hi\n")])
        .await;
    let e = boot::find_kernel(&tree, &image).unwrap_err();
    assert!(matches!(e, BootError::NoModulesDir { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("no kernel: /usr/lib/modules not found in {image}")
    );

    let (image, tree) = env
        .image(
            "modules-only",
            vec![Entry::file("usr/lib/modules/6.1.0/modules.dep", "")],
        )
        .await;
    let e = boot::find_kernel(&tree, &image).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("no kernel: /usr/lib/modules/*/vmlinuz not found in {image}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn find_kernel_one() {
    let env = Env::new();
    let mut entries = kernel("6.12.0", b"kernel", b"initrd");
    entries.push(Entry::file("usr/lib/modules/extra-6.1/foo.ko", "ko"));
    let (image, tree) = env.image("v1", entries).await;
    let k = boot::find_kernel(&tree, &image).unwrap();
    assert_eq!(k.version(), "6.12.0");
    assert_eq!(k.image(), image);
    assert_eq!(
        k.vmlinuz().to_str(),
        Some("/usr/lib/modules/6.12.0/vmlinuz")
    );
    assert_eq!(
        k.initramfs().to_str(),
        Some("/usr/lib/modules/6.12.0/initramfs.img")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn find_kernel_two_names_both() {
    let env = Env::new();
    let mut entries = kernel("6.1.0", b"a", b"b");
    entries.extend(kernel("6.12.0", b"c", b"d"));
    let (image, tree) = env.image("two", entries).await;
    let e = boot::find_kernel(&tree, &image).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "2 kernels in {image}: 6.1.0, 6.12.0 (each has /usr/lib/modules/<version>/vmlinuz); an image must have exactly one"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn find_kernel_missing_initramfs_or_not_a_file() {
    let env = Env::new();
    let (image, tree) = env
        .image(
            "noinitrd",
            vec![Entry::file("usr/lib/modules/6.12.0/vmlinuz", "k")],
        )
        .await;
    let e = boot::find_kernel(&tree, &image).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "no initramfs: /usr/lib/modules/6.12.0/initramfs.img not found in {image} (kernel 6.12.0)"
        )
    );

    let (image, tree) = env
        .image(
            "link",
            vec![
                Entry::file("boot/vmlinuz-6.12.0", "k"),
                Entry::symlink("usr/lib/modules/6.12.0/vmlinuz", "/boot/vmlinuz-6.12.0"),
                Entry::file("usr/lib/modules/6.12.0/initramfs.img", "i"),
            ],
        )
        .await;
    let e = boot::find_kernel(&tree, &image).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("/usr/lib/modules/6.12.0/vmlinuz in {image}: is a symlink, not a regular file")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn install_kernel_shares_identical_pairs() {
    let env = Env::new();
    let vmlinuz = vec![7u8; 300_000]; // big enough to be an external object
    let initrd = b"initramfs v1".to_vec();
    let (image, tree) = env.image("v1", kernel("6.12.0", &vmlinuz, &initrd)).await;
    let k = boot::find_kernel(&tree, &image).unwrap();
    let digest = boot::install_kernel(&tree, &k, &env.boot()).unwrap();
    assert_eq!(digest, sha256_hex(&[&vmlinuz, &initrd]));
    assert_eq!(boot::boot_digest(&tree, &k).unwrap(), digest);
    let dir = env.boot_path.join("osctl").join(&digest);
    assert_eq!(fs::read(dir.join("vmlinuz")).unwrap(), vmlinuz);
    assert_eq!(fs::read(dir.join("initramfs.img")).unwrap(), initrd);

    // Same pair again, and from another image with the same kernel: reused.
    let mtime = fs::metadata(dir.join("vmlinuz"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        boot::install_kernel(&tree, &k, &env.boot()).unwrap(),
        digest
    );
    let mut other = kernel("6.12.0", &vmlinuz, &initrd);
    other.push(Entry::file("etc/motd", "v1.1\n"));
    let (image2, tree2) = env.image("v1.1", other).await;
    let k2 = boot::find_kernel(&tree2, &image2).unwrap();
    assert_eq!(
        boot::install_kernel(&tree2, &k2, &env.boot()).unwrap(),
        digest
    );
    assert_eq!(env.kernel_dirs(), std::slice::from_ref(&digest));
    assert_eq!(
        fs::metadata(dir.join("vmlinuz"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );

    // Where vmlinuz ends is part of what a directory must match.
    let (image3, tree3) = env
        .image(
            "shifted",
            kernel("6.12.0", &vmlinuz[1..], &[&[7u8][..], &initrd].concat()),
        )
        .await;
    let k3 = boot::find_kernel(&tree3, &image3).unwrap();
    let e = boot::install_kernel(&tree3, &k3, &env.boot()).unwrap_err();
    assert!(matches!(e, BootError::BootFile { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("boot dir: osctl/{digest}/vmlinuz: ")),
        "{e}"
    );
    env.assert_no_temporaries();
}

/// A shared pair is reused only when its bytes hash to its name: a damaged
/// one is replaced (issue 9 #9: it was reused after a size check only).
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_shared_pair_is_replaced_not_reused() {
    let env = Env::new();
    let vmlinuz = vec![7u8; 300_000];
    let initrd = b"initramfs v1".to_vec();
    let (image, tree) = env.image("v1", kernel("6.12.0", &vmlinuz, &initrd)).await;
    let k = boot::find_kernel(&tree, &image).unwrap();
    let digest = boot::install_kernel(&tree, &k, &env.boot()).unwrap();
    let dir = env.boot_path.join("osctl").join(&digest);
    for (what, damage) in [
        ("same size, other bytes", vec![8u8; 300_000]),
        ("truncated", vec![7u8; 1000]),
    ] {
        fs::write(dir.join("vmlinuz"), &damage).unwrap();
        assert_eq!(
            boot::install_kernel(&tree, &k, &env.boot()).unwrap(),
            digest
        );
        assert_eq!(fs::read(dir.join("vmlinuz")).unwrap(), vmlinuz, "{what}");
        assert_eq!(
            fs::read(dir.join("initramfs.img")).unwrap(),
            initrd,
            "{what}"
        );
    }
    fs::remove_file(dir.join("initramfs.img")).unwrap();
    assert_eq!(
        boot::install_kernel(&tree, &k, &env.boot()).unwrap(),
        digest
    );
    assert_eq!(fs::read(dir.join("initramfs.img")).unwrap(), initrd);
    assert_eq!(env.kernel_dirs(), std::slice::from_ref(&digest));
    env.assert_no_temporaries();
}

#[tokio::test(flavor = "multi_thread")]
async fn different_kernels_get_own_dirs_and_unused_ones_go() {
    let env = Env::new();
    let (i1, t1) = env
        .image("v1", kernel("6.12.0", b"kernel one", b"initrd"))
        .await;
    let (i2, t2) = env
        .image("v2", kernel("6.12.1", b"kernel two", b"initrd"))
        .await;
    let d1 = boot::install_kernel(&t1, &boot::find_kernel(&t1, &i1).unwrap(), &env.boot()).unwrap();
    let d2 = boot::install_kernel(&t2, &boot::find_kernel(&t2, &i2).unwrap(), &env.boot()).unwrap();
    assert_ne!(d1, d2);
    let mut both = vec![d1.clone(), d2.clone()];
    both.sort();
    assert_eq!(env.kernel_dirs(), both);

    // Not ours (not a digest) stays; a crash leftover goes.
    let kernels = env.boot_path.join("osctl");
    fs::create_dir(kernels.join("notes")).unwrap();
    fs::create_dir(kernels.join(".tmp-1-abc")).unwrap();
    fs::write(kernels.join(".tmp-1-abc/vmlinuz"), "partial").unwrap();
    assert_eq!(boot::remove_unused_kernels(&env.boot(), &both).unwrap(), 0);
    assert_eq!(
        boot::remove_unused_kernels(&env.boot(), std::slice::from_ref(&d2)).unwrap(),
        1
    );
    assert_eq!(env.kernel_dirs(), std::slice::from_ref(&d2));
    assert!(kernels.join("notes").is_dir());
    assert_eq!(
        fs::read(kernels.join(&d2).join("vmlinuz")).unwrap(),
        b"kernel two"
    );
    assert_eq!(boot::remove_unused_kernels(&env.boot(), &[]).unwrap(), 1);
    assert!(env.kernel_dirs().is_empty());
    env.assert_no_temporaries();

    let fresh = Env::new();
    assert_eq!(boot::remove_unused_kernels(&fresh.boot(), &[]).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kargs_from_both_dirs_in_order_by_architecture() {
    let env = Env::new();
    let (image, tree) = env
        .image(
            "kargs",
            vec![
                Entry::file(
                    "usr/lib/bootc/kargs.d/20-b.toml",
                    r#"kargs = ["b=2", "opt=\"x y\""]"#,
                ),
                Entry::file(
                    "usr/lib/bootc/kargs.d/10-a.toml",
                    "# base\nkargs = [\"a=1\", \"quiet\"]\n",
                ),
                Entry::file(
                    "usr/lib/bootc/kargs.d/30-arm.toml",
                    "kargs = [\"arm\"]\nmatch-architectures = [\"aarch64\"]\n",
                ),
                Entry::file("usr/lib/bootc/kargs.d/README", "not toml"),
                Entry::file(
                    "usr/lib/osctl/kargs.d/05-z.toml",
                    "kargs = [\"z\"]\nmatch-architectures = [\"x86_64\", \"aarch64\"]\n",
                ),
                Entry::file("usr/lib/osctl/kargs.d/06-none.toml", "kargs = []\n"),
                Entry::file(
                    "usr/lib/osctl/kargs.d/07-nowhere.toml",
                    "kargs = [\"never\"]\nmatch-architectures = []\n",
                ),
            ],
        )
        .await;
    assert_eq!(
        boot::image_kargs(&tree, &image, "x86_64").unwrap(),
        ["a=1", "quiet", "b=2", "opt=\"x y\"", "z"]
    );
    assert_eq!(
        boot::image_kargs(&tree, &image, "aarch64").unwrap(),
        ["a=1", "quiet", "b=2", "opt=\"x y\"", "arm", "z"]
    );
    assert_eq!(
        boot::image_kargs(&tree, &image, "s390x").unwrap(),
        ["a=1", "quiet", "b=2", "opt=\"x y\""]
    );

    let (image, tree) = env.image("nokargs", kernel("6.12.0", b"k", b"i")).await;
    assert!(
        boot::image_kargs(&tree, &image, "x86_64")
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_kargs_files_are_named() {
    let env = Env::new();
    let cases: [(&str, &str, &str); 5] = [
        (
            "kargs = [\"a\"",
            "invalid kargs.d TOML at line 1, column ",
            "",
        ),
        (
            "kargs = [\"a\"]\nmatch-arch = [\"x86_64\"]\n",
            "invalid kargs.d TOML at line 2, column 1: ",
            "match-arch",
        ),
        (
            "match-architectures = [\"x86_64\"]\n",
            "invalid kargs.d TOML",
            "kargs",
        ),
        ("kargs = \"a b\"\n", "invalid kargs.d TOML at line 1", ""),
        (
            "kargs = [\"a b\"]\n",
            "kargs entry \"a b\" is not exactly one kernel argument",
            "",
        ),
    ];
    for (i, (text, why, mentions)) in cases.into_iter().enumerate() {
        let (image, tree) = env
            .image(
                &format!("bad{i}"),
                vec![
                    Entry::file("usr/lib/bootc/kargs.d/05-ok.toml", "kargs = [\"ok\"]\n"),
                    Entry::file("usr/lib/bootc/kargs.d/10-x.toml", text),
                ],
            )
            .await;
        let e = boot::image_kargs(&tree, &image, "x86_64")
            .unwrap_err()
            .to_string();
        let head = format!("/usr/lib/bootc/kargs.d/10-x.toml in {image}: {why}");
        assert!(e.starts_with(&head), "{e}\n  expected start: {head}");
        assert!(e.contains(mentions), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    let (image, tree) = env
        .image(
            "linked",
            vec![
                Entry::file("usr/share/k.toml", "kargs = []\n"),
                Entry::symlink("usr/lib/osctl/kargs.d/10-l.toml", "/usr/share/k.toml"),
            ],
        )
        .await;
    let e = boot::image_kargs(&tree, &image, "x86_64")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("/usr/lib/osctl/kargs.d/10-l.toml in {image}: not a regular file")
    );
}

#[test]
fn bls_render_parse_round_trip() {
    let id = id('a');
    let digest = "d".repeat(64);
    let entry = BlsEntry::for_deployment(
        &id,
        Verity::Required,
        &digest,
        Some("Debian GNU/Linux 13 (trixie)"),
        Some("2.0"),
        ["quiet", "opt=\"x y\""],
    );
    assert_eq!(
        entry.title,
        "Debian GNU/Linux 13 (trixie) 2.0 (osctl aaaaaaaaaaaa)"
    );
    assert_eq!(entry.composefs_id(), Some(id.clone()));
    let text = entry.render();
    assert_eq!(
        text,
        format!(
            "title Debian GNU/Linux 13 (trixie) 2.0 (osctl aaaaaaaaaaaa)\nversion 2.0\nsort-key osctl\n\
             linux /osctl/{digest}/vmlinuz\ninitrd /osctl/{digest}/initramfs.img\n\
             options composefs={id} quiet opt=\"x y\"\n"
        )
    );
    assert_eq!(BlsEntry::parse(&text).unwrap(), entry);

    // Without os-release or version label; tabs, comments, split options.
    let bare = BlsEntry::for_deployment(
        &id,
        Verity::Optional,
        &digest,
        None,
        None,
        Vec::<String>::new(),
    );
    assert_eq!(
        (bare.title.as_str(), bare.version.as_str()),
        ("(osctl aaaaaaaaaaaa)", "aaaaaaaaaaaa")
    );
    // A newline in a value cannot start a new key.
    let evil = BlsEntry::for_deployment(
        &id,
        Verity::Required,
        &digest,
        Some("OS\noptions init=/bin/sh"),
        None,
        ["ro"],
    );
    let parsed = BlsEntry::parse(&evil.render()).unwrap();
    assert_eq!(parsed.options, [format!("composefs={id}"), "ro".into()]);
    assert_eq!(parsed.title, "OS options init=/bin/sh (osctl aaaaaaaaaaaa)");
}

#[test]
fn entries_written_read_and_removed() {
    let env = Env::new();
    let digest = "d".repeat(64);
    let (a, b) = (id('a'), id('b'));
    let entry = |id: &DeploymentId| {
        BlsEntry::for_deployment(
            id,
            Verity::Required,
            &digest,
            Some("OS"),
            Some("1"),
            ["quiet"],
        )
    };
    boot::write_entry(&env.boot(), &a, &entry(&a), None).unwrap();
    let entries_dir = env.boot_path.join("loader/entries");
    // Foreign entries, odd names and a crash leftover are not ours.
    fs::write(
        entries_dir.join("fedora-6.12.conf"),
        "title other\nlinux /x\ninitrd /y\n",
    )
    .unwrap();
    fs::write(entries_dir.join("osctl-notanid.conf"), "garbage").unwrap();
    fs::write(entries_dir.join(format!("osctl-{b}+x.conf")), "garbage").unwrap();
    fs::write(
        entries_dir.join(format!(".tmp-1-osctl-{b}.conf")),
        "partial",
    )
    .unwrap();
    // A boot-counted entry, as systemd-boot renames them.
    fs::write(
        entries_dir.join(format!("osctl-{b}+2-1.conf")),
        entry(&b).render(),
    )
    .unwrap();

    let found = boot::read_entries(&env.boot()).unwrap();
    let summary: Vec<_> = found
        .iter()
        .map(|e| (e.id.clone(), e.file_name.clone(), e.tries))
        .collect();
    assert_eq!(
        summary,
        [
            (a.clone(), format!("osctl-{a}.conf"), None),
            (
                b.clone(),
                format!("osctl-{b}+2-1.conf"),
                Some(Tries { left: 2, done: 1 })
            ),
        ]
    );
    assert_eq!(found[0].entry, entry(&a));

    // Rewriting b gives it one uncounted file; the leftover is cleaned up.
    boot::write_entry(&env.boot(), &b, &entry(&b), None).unwrap();
    let found = boot::read_entries(&env.boot()).unwrap();
    assert_eq!(found[1].file_name, format!("osctl-{b}.conf"));
    assert_eq!(found[1].tries, None);
    assert!(!entries_dir.join(format!("osctl-{b}+2-1.conf")).exists());
    env.assert_no_temporaries();

    assert!(boot::remove_entry(&env.boot(), &a).unwrap());
    assert!(!boot::remove_entry(&env.boot(), &a).unwrap());
    let ids: Vec<_> = boot::read_entries(&env.boot())
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, std::slice::from_ref(&b));
    assert!(entries_dir.join("fedora-6.12.conf").exists());

    // A malformed entry of ours is set aside with the reason, never an
    // error that would make every entry unreadable (issue 9 #23).
    fs::write(
        entries_dir.join(format!("osctl-{a}+1.conf")),
        "title broken\n",
    )
    .unwrap();
    let ids: Vec<_> = boot::read_entries(&env.boot())
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [b]);
    let (good, bad) = boot::read_all_entries(&env.boot()).unwrap();
    assert_eq!(good.len(), 1);
    assert_eq!(
        bad,
        [boot::BadEntry {
            id: a.clone(),
            file_name: format!("osctl-{a}+1.conf"),
            tries: Some(boot::Tries { left: 1, done: 0 }),
            why: "no `linux` line".to_owned(),
        }]
    );
    assert!(boot::read_entries(&Env::new().boot()).unwrap().is_empty());
}

#[test]
fn default_entry_in_loader_conf() {
    let env = Env::new();
    let (a, b) = (id('a'), id('b'));
    assert_eq!(boot::read_default(&env.boot()).unwrap(), None);
    boot::write_default(&env.boot(), &a).unwrap();
    let conf = env.boot_path.join("loader/loader.conf");
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        format!("default osctl-{a}.conf\n")
    );
    assert_eq!(boot::read_default(&env.boot()).unwrap(), Some(a.clone()));

    fs::write(&conf, format!("# mine\ntimeout 3\ndefault fedora-*\n  editor no\ndefault osctl-{a}.conf\nconsole-mode max")).unwrap();
    assert_eq!(
        boot::read_default(&env.boot()).unwrap(),
        Some(a.clone()),
        "last line wins"
    );
    boot::write_default(&env.boot(), &b).unwrap();
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        format!("# mine\ntimeout 3\ndefault osctl-{b}.conf\n  editor no\nconsole-mode max\n")
    );
    assert_eq!(boot::read_default(&env.boot()).unwrap(), Some(b.clone()));

    for other in [
        "default fedora-6.12.conf\n",
        format!("default osctl-{b}+3.conf\n").as_str(),
        "timeout 5\n",
    ] {
        fs::write(&conf, other).unwrap();
        assert_eq!(boot::read_default(&env.boot()).unwrap(), None, "{other}");
    }
    fs::write(&conf, b"default \xff\n").unwrap();
    let e = boot::read_default(&env.boot()).unwrap_err().to_string();
    assert_eq!(e, "boot dir: loader/loader.conf: not UTF-8");
    env.assert_no_temporaries();
}

#[tokio::test(flavor = "multi_thread")]
async fn os_release_names() {
    let env = Env::new();
    let cases: Vec<(Vec<Entry>, Option<&str>)> = vec![
        (
            vec![
                Entry::file(
                    "usr/lib/os-release",
                    "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n",
                ),
                Entry::file("etc/os-release", "PRETTY_NAME=Other\n"),
            ],
            Some("Debian GNU/Linux 13 (trixie)"),
        ),
        (
            vec![Entry::file(
                "usr/lib/os-release",
                "NAME='Fedora Linux'\nPRETTY_NAME=\"\"\n",
            )],
            Some("Fedora Linux"),
        ),
        (
            vec![Entry::file("etc/os-release", "PRETTY_NAME=\"From etc\"\n")],
            Some("From etc"),
        ),
        (
            vec![
                Entry::file("usr/share/os-release", "PRETTY_NAME=x\n"),
                Entry::symlink("etc/os-release", "../usr/share/os-release"),
            ],
            None,
        ),
        (vec![Entry::file("usr/lib/os-release", "ID=debian\n")], None),
        (vec![Entry::file("etc/motd", "hi\n")], None),
    ];
    for (i, (entries, want)) in cases.into_iter().enumerate() {
        let (_, tree) = env.image(&format!("os{i}"), entries).await;
        assert_eq!(
            boot::os_release_name(&tree).unwrap().as_deref(),
            want,
            "case {i}"
        );
    }
}
