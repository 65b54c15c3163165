//! Documents generated from code (`docs/status.schema.json`,
//! `docs/lints.md`): a test checks the committed file against what the code
//! generates now; with [`UPDATE_ENV`] set, the same test writes it first.
//! One way to regenerate every such file, and no ignored test for it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Set (to anything) to rewrite generated documents instead of only
/// checking them: `OSCTL_UPDATE_DOCS=1 cargo test ...`.
pub const UPDATE_ENV: &str = "OSCTL_UPDATE_DOCS";

/// Mode of a written document: in the repository, readable by all.
const DOC_MODE: u32 = 0o644;

/// When [`UPDATE_ENV`] is set, writes `text` to `path` (a temporary file,
/// fsync, rename: a failed write leaves the old file). Returns whether it
/// wrote.
pub fn update_if_asked(path: &Path, text: &str) -> bool {
    if std::env::var_os(UPDATE_ENV).is_none() {
        return false;
    }
    let dir = path.parent().expect("a document has a parent directory");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).unwrap();
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(DOC_MODE))
        .unwrap();
    std::io::Write::write_all(&mut tmp, text.as_bytes()).unwrap();
    tmp.as_file().sync_all().unwrap();
    tmp.persist(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    eprintln!("wrote {}", path.display());
    true
}
