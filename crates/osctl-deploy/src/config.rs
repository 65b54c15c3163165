//! The machine's osctl settings: `/etc/osctl/config.toml`.
//!
//! ```toml
//! [boot]
//! # Boot attempts a new deployment gets before systemd-boot falls back to
//! # the previous one (systemd-boot boot counting); 0 turns counting off.
//! tries = 3
//!
//! [health]
//! # Reboot when a required health check fails on a deployment still being
//! # assessed, so its boot counter runs down. false: only report.
//! reboot-on-failure = true
//! # Default time limit of one check (a check may set its own).
//! timeout = "60s"
//! ```
//!
//! The file is optional and every key has a default. It is read from the
//! sysroot's `/etc` (the booted deployment's, on a running machine), so an
//! admin's change carries over to new deployments with the `/etc` merge.
//! Unknown keys are errors that name the file, so a typo is not silently
//! ignored.

use std::path::Path;
use std::time::Duration;

use cap_std::fs::Dir;
use serde::Deserialize;

use crate::DeployError;

/// The file, relative to the sysroot.
pub const CONFIG_FILE: &str = "etc/osctl/config.toml";

/// Boot attempts of a new deployment by default: enough to ride out one
/// flaky boot (a power cut, a slow disk) without keeping a machine on a bad
/// image for long — the value Fedora and systemd's examples use.
pub const DEFAULT_TRIES: u32 = 3;
/// Default limit of one health check: long enough for a service to come
/// up on a slow machine, short enough that a hung check does not hold a
/// bad deployment for minutes per try.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    boot_tries: u32,
    reboot_on_failure: bool,
    check_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            boot_tries: DEFAULT_TRIES,
            reboot_on_failure: true,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    boot: BootSection,
    #[serde(default)]
    health: HealthSection,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BootSection {
    tries: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HealthSection {
    reboot_on_failure: Option<bool>,
    timeout: Option<String>,
}

impl Config {
    /// Reads `<sysroot>/etc/osctl/config.toml`; defaults when it is absent.
    pub fn load(root: &Dir, sysroot: &Path) -> Result<Config, DeployError> {
        let path = sysroot.join(CONFIG_FILE);
        let text = match root.read_to_string(CONFIG_FILE) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => {
                return Err(DeployError::Io {
                    step: "reading",
                    path,
                    source: e,
                });
            }
        };
        Config::parse(&text).map_err(|why| DeployError::Config { path, why })
    }

    /// Parses the file's text; the error is one line.
    pub fn parse(text: &str) -> Result<Config, String> {
        let file: File =
            toml::from_str(text).map_err(|e| e.message().replace('\n', " ").trim().to_string())?;
        let mut config = Config::default();
        if let Some(t) = file.boot.tries {
            config.boot_tries = t;
        }
        if let Some(r) = file.health.reboot_on_failure {
            config.reboot_on_failure = r;
        }
        if let Some(t) = file.health.timeout {
            config.check_timeout =
                parse_duration(&t).map_err(|e| format!("health.timeout: {e}"))?;
        }
        Ok(config)
    }

    /// Boot attempts for a new deployment; 0 = no boot counting.
    pub fn boot_tries(&self) -> u32 {
        self.boot_tries
    }

    pub fn reboot_on_failure(&self) -> bool {
        self.reboot_on_failure
    }

    /// Default time limit of one health check.
    pub fn check_timeout(&self) -> Duration {
        self.check_timeout
    }
}

/// `"90s"`, `"2m"`, `"1m 30s"` (humantime); zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("'{s}': {e}"))?;
    if d.is_zero() {
        return Err(format!("'{s}': must be more than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let c = Config::parse(
            "[boot]\ntries = 2\n[health]\nreboot-on-failure = false\ntimeout = \"1m 30s\"\n",
        )
        .unwrap();
        assert_eq!(c.boot_tries(), 2);
        assert!(!c.reboot_on_failure());
        assert_eq!(c.check_timeout(), Duration::from_secs(90));
        assert_eq!(
            Config::parse("[boot]\ntries = 0\n").unwrap().boot_tries(),
            0
        );
    }

    #[test]
    fn mistakes_are_one_line_errors() {
        for (text, want) in [
            ("[boot]\ntrys = 2\n", "unknown field `trys`"),
            ("[boot]\ntries = -1\n", "invalid value"),
            ("[health]\ntimeout = \"soon\"\n", "health.timeout: 'soon'"),
            ("[health]\ntimeout = \"0s\"\n", "must be more than zero"),
            ("[bot]\n", "unknown field `bot`"),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
