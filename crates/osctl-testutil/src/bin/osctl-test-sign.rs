//! `osctl-test-sign`: sigstore signatures for shell tests, made by
//! [`osctl_testutil::sigstore`] in a plain-HTTP registry on loopback.
//!
//! ```text
//! osctl-test-sign generate-key --kind p256|p384|ed25519|rsa2048 --private FILE --public FILE
//! osctl-test-sign sign --key PRIVATE_PEM --registry 127.0.0.1:PORT --image REPO[:TAG]
//!                      [--digest sha256:HEX] --identity DOCKER_REFERENCE [--cosign]
//! ```
//!
//! `sign` signs the manifest REPO:TAG names (or `--digest`), appending to its
//! signatures, and prints the signature manifest's digest. The payload is
//! skopeo's (creator and timestamp), or cosign's (`"optional":null`) with
//! `--cosign`. Arguments are parsed by hand: two subcommands do not warrant
//! another dependency in the test support crate.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use osctl_testutil::PlainHttpRegistry;
use osctl_testutil::sigstore::{self, KeyKind, Optional, SignatureLayer, SigningKey};

const USAGE: &str = "usage:
  osctl-test-sign generate-key --kind p256|p384|ed25519|rsa2048 --private FILE --public FILE
  osctl-test-sign sign --key PRIVATE_PEM --registry 127.0.0.1:PORT --image REPO[:TAG] \
[--digest sha256:HEX] --identity DOCKER_REFERENCE [--cosign]";

/// Private keys are readable by their owner only, as key generators do.
const PRIVATE_KEY_MODE: u32 = 0o600;
const PUBLIC_KEY_MODE: u32 = 0o644;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("osctl-test-sign: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let (command, rest) = args
        .split_first()
        .with_context(|| format!("no command\n{USAGE}"))?;
    match command.as_str() {
        "generate-key" => {
            let mut flags = Flags::parse(rest, &["--kind", "--private", "--public"], &[])?;
            let kind: KeyKind = flags.required("--kind")?.parse()?;
            let key = SigningKey::generate(kind)?;
            let private = flags.required("--private")?;
            let public = flags.required("--public")?;
            let (private, public) = (Path::new(&private), Path::new(&public));
            let private_file = create_new(private, PRIVATE_KEY_MODE)?;
            let public_file = match create_new(public, PUBLIC_KEY_MODE) {
                Ok(file) => file,
                Err(e) => {
                    // Not a half key pair: the private file is ours, empty.
                    std::fs::remove_file(private)
                        .with_context(|| format!("removing {}", private.display()))?;
                    return Err(e);
                }
            };
            write_all(private_file, private, &key.private_pem())?;
            write_all(public_file, public, &key.public_pem())
        }
        "sign" => {
            let value_flags = ["--key", "--registry", "--image", "--digest", "--identity"];
            let mut flags = Flags::parse(rest, &value_flags, &["--cosign"])?;
            let key_path = flags.required("--key")?;
            let pem = std::fs::read_to_string(&key_path)
                .with_context(|| format!("reading the private key {key_path}"))?;
            let key = SigningKey::from_private_pem(&pem)
                .with_context(|| format!("private key {key_path}"))?;
            let registry = PlainHttpRegistry::new(&flags.required("--registry")?);
            let image = flags.required("--image")?;
            let identity = flags.required("--identity")?;
            let (repo, tag) = match image.rsplit_once(':') {
                Some((repo, tag)) => (repo.to_owned(), Some(tag.to_owned())),
                None => (image.clone(), None),
            };
            let digest = match (flags.optional("--digest"), tag) {
                (Some(digest), _) => digest,
                (None, Some(tag)) => osctl_testutil::api::resolve_digest(&registry, &repo, &tag)
                    .with_context(|| format!("resolving {image} in {}", registry.addr()))?,
                (None, None) => bail!("--image {image} has no tag and there is no --digest"),
            };
            let optional = if flags.switch("--cosign") {
                Optional::Null
            } else {
                Optional::skopeo_now()
            };
            let payload = sigstore::payload(&identity, &digest, optional);
            let layer = SignatureLayer::signed(&key, &payload)?;
            let sig_digest = sigstore::append_signature(&registry, &repo, &digest, &layer)?;
            eprintln!(
                "signed {repo}@{digest} as {identity}: {repo}:{} is {sig_digest}",
                sigstore::signature_tag(&digest)
            );
            println!("{sig_digest}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

/// `--name value` pairs and `--switch`es, each at most once.
struct Flags {
    values: BTreeMap<String, String>,
    switches: Vec<String>,
}

impl Flags {
    fn parse(args: &[String], value_flags: &[&str], switches: &[&str]) -> Result<Flags> {
        let mut flags = Flags {
            values: BTreeMap::new(),
            switches: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if switches.contains(&arg.as_str()) {
                if flags.switches.contains(arg) {
                    bail!("{arg} given twice");
                }
                flags.switches.push(arg.clone());
            } else if value_flags.contains(&arg.as_str()) {
                let value = args
                    .next()
                    .with_context(|| format!("{arg} needs a value"))?;
                if flags.values.insert(arg.clone(), value.clone()).is_some() {
                    bail!("{arg} given twice");
                }
            } else {
                bail!("unknown argument {arg:?}\n{USAGE}");
            }
        }
        Ok(flags)
    }

    fn required(&mut self, name: &str) -> Result<String> {
        self.values
            .remove(name)
            .with_context(|| format!("{name} is required\n{USAGE}"))
    }

    fn optional(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }
}

/// Creates a key file that must not exist yet: an existing key is never
/// overwritten (it may be the one images were signed with).
fn create_new(path: &Path, mode: u32) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn write_all(mut file: std::fs::File, path: &Path, content: &str) -> Result<()> {
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
