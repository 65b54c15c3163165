//! Snapshots of what a person sees: the exact text of `image pull` (plain
//! progress and summary), `image list`, `fsck`, `image rm` and `gc`, with
//! run-specific values (addresses, digests, paths, times) replaced by
//! placeholders. A change in wording or layout shows up here as a diff.

use crate::util::{Osctl, push_spec};
use osctl_testutil::{Entry, ImageSpec, Layer, Registry, RegistryOptions};

/// Replaces what differs from run to run with stable placeholders.
fn normalize(text: &str, registry: &str, sysroot: &str) -> String {
    let mut out = text
        .replace(registry, "REGISTRY")
        .replace(sysroot, "SYSROOT");
    // sha256:<64 hex> first, then bare 64-hex ids, then 12-hex short ids.
    out = replace_hex_runs(&out, "sha256:", 64, "sha256:<digest>");
    out = replace_hex_runs(&out, "", 64, "<id>");
    out = replace_hex_runs(&out, "", 12, "<short>");
    // Durations like "0.0s" and RFC 3339 times.
    let mut result = String::new();
    for line in out.lines() {
        let line = line
            .split(' ')
            .map(|w| {
                if w.ends_with('s') && w[..w.len() - 1].parse::<f64>().is_ok() {
                    "<secs>".to_string()
                } else if w.len() >= 20 && w.as_bytes()[4] == b'-' && w.contains('T') {
                    "<time>".to_string()
                } else {
                    w.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        result.push_str(&line);
        result.push('\n');
    }
    result
}

fn replace_hex_runs(text: &str, prefix: &str, len: usize, with: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        if text[i..].starts_with(prefix) {
            let hex_start = i + prefix.len();
            let hex_len = bytes[hex_start..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                .count();
            let boundary_before = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
            if hex_len == len && boundary_before {
                out.push_str(with);
                i = hex_start + hex_len;
                continue;
            }
        }
        let ch = text[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[test]
fn human_output_snapshots() {
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let spec = ImageSpec::new(vec![
        Layer::new(vec![Entry::file("usr/lib/os-release", "ID=snap\n")]),
        Layer::new(vec![Entry::file("etc/motd", "hello\n")]),
    ]);
    let (reference, _) = push_spec(&registry, "snap/os:v1", &spec);
    let osctl = Osctl::new();
    let sysroot = osctl.sysroot().to_str().unwrap().to_string();
    let norm = |s: &str| normalize(s, &registry.addr(), &sysroot);

    let out = osctl.run(&["image", "pull", "--progress", "plain", &reference]);
    assert!(out.status.success());
    // Layers finish in any order; sizes are masked (they depend on gzip).
    let mut lines: Vec<String> = norm(&String::from_utf8_lossy(&out.stderr))
        .lines()
        .map(mask_bytes)
        .collect();
    lines[1..3].sort();
    assert_eq!(
        lines,
        [
            "Pulling REGISTRY/snap/os:v1 (<short>, 2 layers)",
            "layer <short>: <bytes> in <secs>",
            "layer <short>: <bytes> in <secs>",
            "Building composefs image",
        ]
    );
    assert_eq!(
        norm(&String::from_utf8_lossy(&out.stdout)),
        "Pulled: REGISTRY/snap/os:v1\n  \
         manifest  sha256:<digest>\n  \
         signature not verified (the policy accepts anything)\n  \
         image id  <id>\n  \
         layers    2 fetched, 0 already present\n  \
         store     SYSROOT/sysroot/composefs (insecure mode: no fs-verity on this filesystem)\n"
    );

    let again = osctl.run(&["image", "pull", "--progress", "plain", &reference]);
    assert_eq!(
        norm(&String::from_utf8_lossy(&again.stderr)),
        "Pulling REGISTRY/snap/os:v1 (<short>, 2 layers)\nManifest unchanged; nothing to fetch\n"
    );
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("Image is up to date: "));

    let size = osctl.list()[0]["size"].as_u64().unwrap();
    let raw_list = osctl.ok(&["image", "list"]);
    // Columns are aligned: each header starts where its values start.
    let rows: Vec<&str> = raw_list.lines().collect();
    for header in ["IMAGE ID", "CREATED"] {
        let col = rows[0].find(header).unwrap();
        assert_eq!(rows[1].as_bytes()[col - 1], b' ');
        assert_ne!(
            rows[1].as_bytes()[col],
            b' ',
            "{header} column aligned:\n{raw_list}"
        );
    }
    let cells = |line: &str| -> String {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let list: Vec<String> = norm(&raw_list).lines().map(cells).collect();
    assert_eq!(
        list,
        [
            "REFERENCE | IMAGE ID | SIZE | CREATED".to_string(),
            format!("REGISTRY/snap/os:v1 | <short> | {size} B | <time>"),
        ]
    );

    // The object count is the store's, counted here, not fsck's own.
    assert_eq!(
        norm(&osctl.ok(&["fsck"])),
        format!(
            "{} objects and 1 images checked, 0 problem(s) (insecure mode: no fs-verity on this filesystem)\n",
            osctl.objects()
        )
    );
    let rm = norm(&osctl.ok(&["image", "rm", &reference]));
    assert!(
        rm.starts_with("Removed REGISTRY/snap/os:v1 (") && rm.ends_with(" freed)\n"),
        "{rm}"
    );
    assert_eq!(
        osctl.ok(&["gc"]),
        "Removed 0 unreferenced objects (0 B), pruned 0 stale refs\n"
    );
    assert_eq!(
        osctl.ok(&["image", "list"]),
        "REFERENCE  IMAGE ID  SIZE  CREATED\n"
    );
}

/// "186 B" → "<bytes>".
fn mask_bytes(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if i + 1 < words.len() && words[i].parse::<u64>().is_ok() && words[i + 1] == "B" {
            out.push("<bytes>".to_string());
            i += 2;
        } else {
            out.push(words[i].to_string());
            i += 1;
        }
    }
    out.join(" ")
}

#[test]
fn progress_bars_on_a_terminal() {
    // `script` runs osctl on a pseudo-terminal, where it draws indicatif bars
    // instead of plain lines.
    let registry = Registry::start(RegistryOptions::default()).unwrap();
    let spec = ImageSpec::new(vec![Layer::new(vec![Entry::large_file(
        "usr/share/blob",
        3_000_000,
        5,
    )])]);
    let (reference, _) = push_spec(&registry, "tty/os:v1", &spec);
    let osctl = Osctl::new();
    let command = format!(
        "{} --sysroot {} image pull {reference}",
        env!("CARGO_BIN_EXE_osctl"),
        osctl.sysroot().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("HOME", osctl.sysroot())
        .env(
            crate::util::POLICY_ENV,
            crate::util::accept_anything_policy(),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Pulling"), "{text}");
    assert!(
        text.contains("[==============================]") && text.contains(" MiB/"),
        "a full bar with the layer size: {text}"
    );
    assert!(text.contains("done"), "the bar finishes: {text}");
    assert!(
        !text.contains("in 0."),
        "no plain progress lines on a terminal: {text}"
    );
    assert!(text.contains("Pulled: "), "{text}");
}

/// A `--log-level` that does not parse is a usage error naming it, not a
/// silent fall-back to another level.
#[test]
fn a_bad_log_level_is_refused() {
    let osctl = Osctl::new();
    let out = osctl.run(&["--log-level", "osctl=[", "image", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: --log-level 'osctl=[': "),
        "{stderr}"
    );
}
