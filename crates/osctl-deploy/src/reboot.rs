//! The reboot: `systemctl reboot`, so the shutdown runs its units
//! (`osctl-finalize-staged.service` finalizes the staged deployment on the
//! way down). One function for every caller — `switch --apply`, a failed
//! health check, the fleet agent with its reboot slot — so the
//! [`REBOOT_ENV`](crate::test_hooks::REBOOT_ENV) test hook replaces it
//! everywhere at once.

use std::process::Command;

use crate::test_hooks::{REBOOT_ENV, var};

/// What reboots a machine osctl runs on.
pub const REBOOT_COMMAND: &str = "systemctl reboot";

/// Why a reboot could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RebootError {
    #[error("reboot command '{command}' could not be started: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("reboot command '{command}' failed: {status}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
    },
}

/// The command [`reboot`] runs: [`REBOOT_COMMAND`], or the test hook's.
pub fn reboot_command() -> String {
    var(REBOOT_ENV)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|| REBOOT_COMMAND.to_string())
}

/// Runs the reboot command and waits for it: `systemctl reboot` returns
/// once the shutdown is queued, so returning is normal; the caller stops
/// acting afterwards.
pub fn reboot() -> Result<(), RebootError> {
    let command = reboot_command();
    let mut words = command.split_whitespace();
    // An empty hook value runs nothing: `true` stands in for it.
    let program = words.next().unwrap_or("true");
    let status = Command::new(program)
        .args(words)
        .status()
        .map_err(|source| RebootError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !status.success() {
        return Err(RebootError::Failed { command, status });
    }
    Ok(())
}
