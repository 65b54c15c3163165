//! `upgrade`: re-resolve the tracked reference and stage what it points to
//! now; `upgrade --check` fetches only the manifest and config and records
//! the answer as the booted deployment's `cachedUpdate` (as bootc does), so
//! `status` can show it without another network round trip. An update the
//! signature policy refuses is reported as refused and not recorded.

use std::sync::Arc;

use oci_spec::image::ImageConfiguration;
use osctl_image::{FetchError, FetchOptions, ImageRef, Source};
use osctl_store::PullObserver;

use crate::DeployError;
use crate::origin::CachedUpdate;
use crate::stage::{StageOptions, StageOutcome};
use crate::sysroot::Sysroot;
use crate::sysroot::now;

/// Configs are small; this bounds what a hostile registry can make osctl hold.
const MAX_CONFIG: u64 = 8 * 1024 * 1024;

/// What `upgrade --check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateCheck {
    /// The reference still resolves to the deployed manifest.
    UpToDate { image: String },
    /// It resolves to another manifest.
    Available { image: String, update: CachedUpdate },
    /// It resolves to a manifest the signature policy refuses: reported,
    /// never offered (nothing is recorded as an update).
    Refused {
        image: String,
        digest: String,
        why: String,
    },
}

impl Sysroot {
    /// The reference upgrades follow: the staged deployment's, else the booted one's.
    pub fn tracked(&self) -> Result<(ImageRef, String), DeployError> {
        let state = self.state()?;
        let d = state
            .staged
            .or(state.booted)
            .ok_or(DeployError::NothingTracked)?;
        let imgref = d.origin().image_ref()?;
        Ok((imgref, d.origin().manifest_digest.clone()))
    }

    /// Resolves the tracked reference without downloading layers.
    pub async fn check_update(&self, fetch: &FetchOptions) -> Result<UpdateCheck, DeployError> {
        let (imgref, deployed) = self.tracked()?;
        let source = Source::open(&imgref, fetch).await?;
        let image = imgref.to_string();
        let check = match source.resolve().await {
            Err(FetchError::SignatureRefused { digest, why, .. }) => {
                UpdateCheck::Refused { image, digest, why }
            }
            Err(e) => return Err(e.into()),
            Ok(resolved) if resolved.digest() == deployed => UpdateCheck::UpToDate { image },
            Ok(resolved) => {
                let desc = resolved.manifest().config();
                let what = format!("config {} of {image}", desc.digest());
                let raw = source.read_small_blob(desc, &what, MAX_CONFIG).await?;
                let config: ImageConfiguration =
                    serde_json::from_slice(&raw).map_err(|source| DeployError::BadConfig {
                        what: what.clone(),
                        source,
                    })?;
                UpdateCheck::Available {
                    image,
                    update: CachedUpdate {
                        manifest_digest: resolved.digest().to_string(),
                        version: config
                            .config()
                            .as_ref()
                            .and_then(|c| c.labels().as_ref())
                            .and_then(|l| l.get("org.opencontainers.image.version").cloned()),
                        timestamp: config.created().clone(),
                        architecture: config.architecture().to_string(),
                        checked: now(),
                    },
                }
            }
        };
        self.lock()?;
        if let Some(booted) = self.state()?.booted {
            let mut origin = booted.origin().clone();
            origin.cached_update = match &check {
                UpdateCheck::Available { update, .. } => Some(update.clone()),
                UpdateCheck::UpToDate { .. } | UpdateCheck::Refused { .. } => None,
            };
            self.write_origin(booted.id(), &origin)?;
            crate::failpoint::hit("upgrade:after-cached-update");
        }
        Ok(check)
    }

    /// Pulls the tracked reference and stages it if it changed. An image
    /// that already failed on this machine (its health checks, or its boot
    /// counter ran out) is not staged again unless `force`. With
    /// `download_only` it is staged download-only (see
    /// [`crate::StageOptions::download_only`]); refused before the pull when
    /// that would change the next boot, unless what boots next is already
    /// the image the reference points to (`AlreadyStaged`).
    pub async fn upgrade(
        &self,
        fetch: &FetchOptions,
        observer: Arc<dyn PullObserver>,
        force: bool,
        download_only: bool,
    ) -> Result<StageOutcome, DeployError> {
        let (imgref, _) = self.tracked()?;
        if download_only && let Err(refused) = self.check_download_only() {
            // The update that boots next (staged by hand, or this download
            // released) may be the very image the reference points to:
            // then there is nothing to download and nothing to refuse, and
            // a download-only timer must not fail on every run until the
            // reboot. Only the manifest is fetched to tell.
            let resolved = Source::open(&imgref, fetch).await?.resolve().await?;
            return match self.state()?.staged {
                Some(staged) if staged.origin().manifest_digest == resolved.digest() => {
                    Ok(StageOutcome::AlreadyStaged(staged.id().clone()))
                }
                _ => Err(refused),
            };
        }
        let outcome = self.store().pull(&imgref, fetch, observer).await?;
        crate::failpoint::hit("stage:after-pull");
        let record = outcome.record();
        if !force && let Some(failed) = self.failure_of(record.manifest_digest())? {
            return Err(DeployError::FailedBefore {
                image: imgref.to_string(),
                digest: failed.manifest_digest,
                reason: failed.reason,
                at: failed.at,
            });
        }
        self.stage_record_with(
            &imgref,
            record,
            &StageOptions {
                download_only,
                ..StageOptions::default()
            },
        )
    }
}
