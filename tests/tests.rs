//! The cross-crate integration tests: the real `osctl` binary on scratch
//! sysroots, registries and disks. One test binary (one link instead of one
//! per file); one module per area, the helpers they share in `util`.
//!
//! Run one area with `cargo test -p osctl --test integration pull_faults::`.
//! Tests of one crate's own rules stay in that crate's `tests/`.

mod util;

mod boot_assessment;
mod boot_fallback;
mod cli_output;
mod container_lint;
mod contrib_units;
mod deploy_adversarial;
mod deploy_bad_input;
mod deploy_crash;
mod deploy_download_only;
mod deploy_recovery;
mod deploy_signature;
mod deploy_walkthrough;
mod diff;
mod fleet_faults;
mod fleet_fleetlock;
mod fleet_rollout;
mod fleet_vm;
mod install;
mod install_filesystem;
mod pull_auth_files;
mod pull_auth_tls;
mod pull_bearer;
mod pull_containers_storage;
mod pull_content;
mod pull_credentials_and_redirects;
mod pull_faults;
mod pull_hostile_layers;
mod pull_hostile_registry;
mod pull_memory;
mod pull_no_ca;
mod pull_noop;
mod pull_retry;
mod pull_sources;
mod pull_writeback;
mod root_setup;
mod signatures;
mod store_damage;
mod store_filesystems;
mod store_limits;
mod store_records;
