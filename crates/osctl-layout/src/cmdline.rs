//! The `composefs=` kernel argument: one parser for the writer (the `options`
//! of a boot entry; which deployment is booted) and the reader (the root
//! setup), so the two cannot disagree about what a command line boots.
//!
//! | argument | meaning |
//! |---|---|
//! | `composefs=<id>` | boot deployment `<id>`; fs-verity **required** |
//! | `composefs=?<id>` | boot deployment `<id>`; fs-verity optional (a store on a filesystem without it) |
//!
//! The key and the `?` prefix follow bootc's composefs backend, so one
//! command line means the same to both tools.

use crate::DeploymentId;

/// The kernel command-line key that names the deployment to boot.
pub const KEY: &str = "composefs";

/// Whether the root must be verified by fs-verity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verity {
    Required,
    Optional,
}

/// One `composefs=` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposefsArg {
    pub id: DeploymentId,
    pub verity: Verity,
}

impl ComposefsArg {
    /// `composefs=<id>` or `composefs=?<id>`.
    pub fn render(&self) -> String {
        match self.verity {
            Verity::Required => format!("{KEY}={}", self.id),
            Verity::Optional => format!("{KEY}=?{}", self.id),
        }
    }

    /// Parses one argument's value (what follows `composefs=`).
    pub fn parse_value(value: &str) -> Result<ComposefsArg, CmdlineError> {
        let (verity, id) = match value.strip_prefix('?') {
            Some(id) => (Verity::Optional, id),
            None => (Verity::Required, value),
        };
        let id = DeploymentId::parse(id).ok_or_else(|| CmdlineError::BadValue {
            value: value.to_owned(),
        })?;
        Ok(ComposefsArg { id, verity })
    }
}

/// Why a command line's `composefs=` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineError {
    /// `composefs=` with something other than `[?]<64 hex digits>`.
    BadValue { value: String },
    /// Two `composefs=` arguments: which one boots is not clear.
    Twice,
}

impl std::fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CmdlineError::BadValue { value } => write!(
                f,
                "{KEY}={value}: expected {KEY}=<image id> or {KEY}=?<image id> (64 lowercase hex digits)"
            ),
            CmdlineError::Twice => write!(f, "{KEY}= is given twice"),
        }
    }
}

impl std::error::Error for CmdlineError {}

/// The `composefs=` argument of a kernel command line (`/proc/cmdline`);
/// `None` if there is none (the system was not booted by osctl).
pub fn find(cmdline: &str) -> Result<Option<ComposefsArg>, CmdlineError> {
    let mut found = None;
    for arg in cmdline.split_ascii_whitespace() {
        let Some(value) = arg.strip_prefix(KEY).and_then(|r| r.strip_prefix('=')) else {
            continue;
        };
        if found.is_some() {
            return Err(CmdlineError::Twice);
        }
        found = Some(ComposefsArg::parse_value(value)?);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn command_lines() {
        let required = Ok(Some(ComposefsArg {
            id: DeploymentId::parse(ID).unwrap(),
            verity: Verity::Required,
        }));
        let optional = Ok(Some(ComposefsArg {
            id: DeploymentId::parse(ID).unwrap(),
            verity: Verity::Optional,
        }));
        let cases: Vec<(String, Result<Option<ComposefsArg>, CmdlineError>)> = vec![
            (format!("BOOT_IMAGE=/x ro composefs={ID} quiet\n"), required),
            (format!("composefs=?{ID}"), optional),
            ("ro quiet composefs.digest=abc".into(), Ok(None)),
            ("".into(), Ok(None)),
            (
                "composefs=nothex".into(),
                Err(CmdlineError::BadValue {
                    value: "nothex".into(),
                }),
            ),
            (
                format!("composefs={}", ID.to_uppercase()),
                Err(CmdlineError::BadValue {
                    value: ID.to_uppercase(),
                }),
            ),
            (
                format!("composefs={ID} composefs=?{ID}"),
                Err(CmdlineError::Twice),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(find(&line), want, "{line:?}");
        }
    }

    #[test]
    fn render_is_what_find_reads() {
        for verity in [Verity::Required, Verity::Optional] {
            let arg = ComposefsArg {
                id: DeploymentId::parse(ID).unwrap(),
                verity,
            };
            assert_eq!(find(&arg.render()), Ok(Some(arg.clone())));
        }
    }
}
