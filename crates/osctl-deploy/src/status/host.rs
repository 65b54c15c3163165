//! The serde model of bootc's `BootcHost` object (`org.containers.bootc/v1`),
//! plus osctl's own per-entry block.
//!
//! Field names, nesting and enum spellings follow bootc's published schema
//! (`host-v1.schema.json`). Every type also deserialises, so osctl (or a fleet
//! tool) can read bootc's own output: unknown fields such as `ostree` are
//! ignored, and missing ones take the schema's defaults.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::EtcConflict;

/// `apiVersion` of the host object.
pub const API_VERSION: &str = "org.containers.bootc/v1";
/// `kind` of the host object.
pub const KIND: &str = "BootcHost";
/// A deployment id as the schema describes it: 64 lowercase hex digits
/// (what [`crate::layout::DeploymentId`] accepts).
const DEPLOYMENT_ID_PATTERN: &str = "^[0-9a-f]{64}$";

/// The host object, as `osctl status --format json|yaml` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// Always `org.containers.bootc/v1` (bootc's host object).
    #[schemars(extend("const" = API_VERSION))]
    pub api_version: String,
    /// Always `BootcHost`.
    #[schemars(extend("const" = KIND))]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HostSpec,
    #[serde(default)]
    pub status: HostStatus,
}

/// `metadata`: only `name` (always `host`) is used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: Option<String>,
}

/// `spec`: what the host should run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// The tracked image; `null` before the first deployment.
    #[serde(default)]
    pub image: Option<ImageReference>,
    #[serde(default)]
    pub boot_order: BootOrder,
}

/// An image reference with its transport (`registry`, `oci`, `oci-archive`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageReference {
    pub image: String,
    pub transport: String,
    /// How the image was checked when it was pulled, as bootc spells it:
    /// `containerPolicy` (a signature the policy requires was verified) or
    /// `insecure` (the policy accepts anything). Absent when unknown (an
    /// image pulled before osctl checked signatures). Details are in the
    /// entry's `osctl.signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ImageSignature")]
    pub signature: Option<ImageSignature>,
}

/// bootc's `ImageSignature`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ImageSignature {
    /// ostree remote signatures (bootc's ostree backend; never osctl's).
    OstreeRemote(String),
    /// Verified against the containers signature policy.
    ContainerPolicy,
    /// Not verified: the policy accepts any image for this scope.
    Insecure,
}

/// `osctl.signature`: what the signature policy decided at the pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignatureStatus {
    /// `verified` or `insecure`.
    pub result: SignatureResult,
    /// The policy file that decided.
    pub policy: String,
    /// The scope whose requirements applied (`docker scope "…"`, `default`).
    pub scope: String,
    /// `sha256:` of the verifying key's SubjectPublicKeyInfo (verified only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `ECDSA P-256`, `Ed25519`, … (verified only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    /// The digest the signature names: the image's manifest, or its index
    /// (verified only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_digest: Option<String>,
    /// The docker reference the signature names (verified only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// `osctl.signature.result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SignatureResult {
    Verified,
    Insecure,
}

/// `spec.bootOrder`: which deployment boots next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BootOrder {
    /// The staged deployment, else the booted one.
    #[default]
    Default,
    /// The rollback deployment (`osctl rollback` was run).
    Rollback,
}

/// `status`: what the host has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    pub staged: Option<BootEntry>,
    pub booted: Option<BootEntry>,
    pub rollback: Option<BootEntry>,
    /// Deployments kept besides those three (pinned ones).
    #[serde(default)]
    pub other_deployments: Vec<BootEntry>,
    #[serde(default)]
    pub rollback_queued: bool,
    /// `bootcHost` once a deployment is booted, else `null`.
    #[serde(rename = "type", default)]
    pub host_type: Option<HostType>,
    /// osctl's own findings about the host; absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osctl: Option<OsctlHostStatus>,
}

/// osctl's fields for the host, under `status.osctl`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OsctlHostStatus {
    /// What osctl found on disk and cannot use, one line each: a
    /// deployment whose origin or record does not parse, a boot entry that
    /// does not. These are left out of every decision.
    pub problems: Vec<String>,
}

/// `status.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HostType {
    BootcHost,
}

/// One deployment (bootc: a boot entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootEntry {
    #[serde(default)]
    pub image: Option<ImageStatus>,
    /// A newer image found by `upgrade --check`; `null` when there is none.
    #[serde(default)]
    pub cached_update: Option<ImageStatus>,
    pub incompatible: bool,
    pub pinned: bool,
    #[serde(default)]
    pub soft_reboot_capable: bool,
    /// Staged by `osctl upgrade --download-only`: finalize at shutdown
    /// leaves it, so it is not the next boot until `osctl upgrade
    /// --from-downloaded` releases it. Only ever `true` on the staged entry.
    #[serde(default)]
    pub download_only: bool,
    /// bootc's ostree container store; always `null` for osctl.
    #[serde(default)]
    pub store: Option<Store>,
    #[serde(default)]
    pub composefs: Option<BootEntryComposefs>,
    /// osctl's own fields; absent in bootc's output. bootc's schema leaves
    /// `BootEntry` open (no `additionalProperties: false`), so bootc's
    /// readers accept and ignore the key.
    // `None` is left out, never `null`: so the schema says "an object when
    // present" (`schemars(with)`); the same for `bootTries` and `health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "OsctlEntry")]
    pub osctl: Option<OsctlEntry>,
}

/// What an image is: reference, digest, label version, creation time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    pub image: ImageReference,
    /// The `org.opencontainers.image.version` label.
    #[serde(default)]
    pub version: Option<String>,
    /// The image's creation time, RFC 3339 (`null` if unknown or malformed).
    #[serde(default)]
    #[schemars(extend("format" = "date-time"))]
    pub timestamp: Option<String>,
    /// The manifest digest, `sha256:…`.
    pub image_digest: String,
    /// OCI architecture name (`amd64`, `arm64`, …).
    pub architecture: String,
}

/// bootc's `store` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Store {
    OstreeContainer,
}

/// The composefs side of a boot entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootEntryComposefs {
    /// The composefs image id (fs-verity digest of the EROFS image).
    #[schemars(regex(pattern = DEPLOYMENT_ID_PATTERN))]
    pub verity: String,
    pub boot_type: BootType,
    pub bootloader: Bootloader,
    /// `true` when the kernel argument is `composefs=?<id>`.
    pub missing_verity_allowed: bool,
    /// sha256 over vmlinuz then initramfs; type 1 (BLS) entries only.
    #[serde(default)]
    pub boot_digest: Option<String>,
}

/// How the entry boots: BLS type 1 (kernel + initramfs) or a UKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BootType {
    Bls,
    Uki,
}

/// Which bootloader reads the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    Grub,
    GrubCc,
    Systemd,
    /// The boot entries are written but no bootloader is managed.
    None,
}

/// osctl's fields for one deployment, under `osctl` in its boot entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OsctlEntry {
    /// The full deployment id (= `composefs.verity`); `osctl pin` takes it.
    #[schemars(regex(pattern = DEPLOYMENT_ID_PATTERN))]
    pub deployment_id: String,
    /// When the deployment was created (RFC 3339).
    pub deployed: String,
    /// `PRETTY_NAME` from the image's os-release.
    #[serde(default)]
    pub os_name: Option<String>,
    pub kernel_version: String,
    /// The boot entry's kernel arguments after `composefs=`: image, then local.
    #[serde(default)]
    pub kargs: Vec<String>,
    /// The machine-local subset of `kargs`, carried to the next deployment.
    #[serde(default)]
    pub local_kargs: Vec<String>,
    /// When `upgrade --check` last ran for this deployment, if ever.
    #[serde(default)]
    pub update_checked: Option<String>,
    /// `/etc` merge conflicts of the finalize that made this deployment;
    /// paths are relative to `/etc`. The administrator's version was kept.
    #[serde(default)]
    pub etc_conflicts: Vec<EtcConflict>,
    /// The boot entry's counter (systemd-boot boot counting), while the
    /// deployment is being assessed; absent once it was marked good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "BootTries")]
    pub boot_tries: Option<BootTries>,
    /// Boot assessment: what `state/deploy/<id>/health.json` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Health")]
    pub health: Option<Health>,
    /// The signature check of the pull that brought the image; absent for
    /// images pulled before osctl checked signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "SignatureStatus")]
    pub signature: Option<SignatureStatus>,
}

/// `osctl.bootTries`: attempts left and made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootTries {
    pub left: u32,
    pub done: u32,
}

/// `osctl.health`: the deployment's boot assessment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub state: Assessment,
    /// Why it failed, one line.
    #[serde(default)]
    pub reason: Option<String>,
    /// The required check that failed, by name.
    #[serde(default)]
    pub failed_check: Option<String>,
    /// When the checks last ran (RFC 3339).
    #[serde(default)]
    pub checked: Option<String>,
}

/// `osctl.health.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Assessment {
    /// Being assessed; the health checks have not run yet.
    Pending,
    /// The checks passed; not yet marked good.
    Checked,
    /// Marked good.
    Good,
    /// A required check failed, or the boot loader gave up on it.
    Failed,
}

impl Assessment {
    /// The word `osctl status` shows (the JSON value).
    pub fn as_str(self) -> &'static str {
        match self {
            Assessment::Pending => "pending",
            Assessment::Checked => "checked",
            Assessment::Good => "good",
            Assessment::Failed => "failed",
        }
    }
}
