//! Authorization, learned from the registry's own `401`.
//!
//! Model: a request goes out with whatever authorization is known (at first
//! none). A registry that wants credentials answers `401` with a
//! `WWW-Authenticate` challenge, the same one `GET /v2/` would give; its
//! answer (Basic credentials, or a bearer token traded for them) is kept
//! and the request sent again ([`RegistryClient::get`]). osctl does not ask
//! `GET /v2/` first, as docker and podman do: for an anonymous registry that
//! check is a round trip for nothing (a no-op re-pull is then one request,
//! the manifest), and for one that wants credentials the `401` to the first
//! real request costs the same single round trip the check did.

use base64::Engine;
use reqwest::header::HeaderValue;

use super::challenge::{Challenge, parse_challenge, parse_token};
use super::client::RegistryClient;
use super::response::{ReadError, read_capped};
use crate::FetchError;
use crate::limits::MAX_TOKEN_RESPONSE_BYTES;

#[derive(Default)]
pub(super) struct AuthState {
    header: Option<HeaderValue>,
    /// Bumped whenever `header` changes, so that concurrent requests failing
    /// with the same stale token authorize again only once.
    generation: u64,
}

impl RegistryClient {
    /// The header to send now (none until a `401` asked for one), and its
    /// generation for [`Self::authorize_again`].
    pub(super) async fn authorization(&self) -> (Option<HeaderValue>, u64) {
        let state = self.auth.lock().await;
        (state.header.clone(), state.generation)
    }

    /// After a `401`: authorizes again from its challenge. `Ok(true)` if
    /// there is something new to try, `Ok(false)` if the `401` stands.
    pub(super) async fn authorize_again(
        &self,
        generation: u64,
        challenge: Option<&str>,
        what: &str,
    ) -> Result<bool, FetchError> {
        let mut state = self.auth.lock().await;
        if state.generation != generation {
            return Ok(true); // another request already authorized again
        }
        let Some(challenge) = challenge.and_then(parse_challenge) else {
            return Ok(false);
        };
        tracing::debug!(what, ?challenge, "authorizing again after 401");
        let header = self.answer(&challenge).await?;
        if header == state.header {
            return Ok(false);
        }
        state.header = header;
        state.generation += 1;
        Ok(true)
    }

    /// The `Authorization` header that answers `challenge`.
    async fn answer(&self, challenge: &Challenge) -> Result<Option<HeaderValue>, FetchError> {
        match challenge {
            Challenge::Basic => match self.lookup.credentials() {
                Some(c) => {
                    let (user, password) = c.user_password();
                    let token = base64::engine::general_purpose::STANDARD
                        .encode(format!("{user}:{password}"));
                    self.sensitive(&format!("Basic {token}")).map(Some)
                }
                None => Ok(None),
            },
            Challenge::Bearer { realm, service, .. } => {
                let token = self.fetch_token(realm, service.as_deref()).await?;
                self.sensitive(&format!("Bearer {token}")).map(Some)
            }
        }
    }

    /// Asks the token service `realm` for a pull token for this repository,
    /// with the auth file's credentials if there are any. Only `pull` is
    /// asked for, whatever the challenge named: osctl never pushes.
    async fn fetch_token(&self, realm: &str, service: Option<&str>) -> Result<String, FetchError> {
        let what = format!("a pull token for {} from {realm}", self.repository);
        let mut url = reqwest::Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| FetchError::Registry {
                registry: self.registry.clone(),
                what: "authorization".into(),
                detail: format!("its token service realm {realm:?} is not an http(s) URL"),
            })?;
        if self.https_only && url.scheme() != "https" {
            return Err(FetchError::Registry {
                registry: self.registry.clone(),
                what: "authorization".into(),
                detail: format!(
                    "its token service realm {realm:?} is plain HTTP; osctl sends credentials \
                     to, and takes tokens from, a verified registry's token service only over \
                     HTTPS (mark the registry insecure in registries.conf to allow it)"
                ),
            });
        }
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("scope", &format!("repository:{}:pull", self.repository));
            if let Some(s) = service {
                query.append_pair("service", s);
            }
        }
        let (resp, attempts) = match self
            .send_retrying(|| {
                let req = self.http.get(url.clone());
                match self.lookup.credentials() {
                    Some(c) => {
                        let (user, password) = c.user_password();
                        req.basic_auth(user, Some(password))
                    }
                    None => req,
                }
            })
            .await
        {
            Ok(answer) => answer,
            Err((e, attempts)) => return Err(self.transport_error(e, attempts, &what).await),
        };
        if !resp.status().is_success() {
            return Err(self.status_error(resp, &what, attempts).await);
        }
        let body = match read_capped(resp, MAX_TOKEN_RESPONSE_BYTES).await {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                return Err(FetchError::TooLarge {
                    what: format!(
                        "the answer of token service {realm} for registry {}",
                        self.registry
                    ),
                    limit: MAX_TOKEN_RESPONSE_BYTES,
                    note: String::new(),
                });
            }
            Err(ReadError::Transfer(e)) => return Err(self.transport_error(e, 1, &what).await),
        };
        parse_token(&body).map_err(|why| FetchError::Registry {
            registry: self.registry.clone(),
            what: format!("authorization by token service {realm}"),
            detail: why,
        })
    }

    /// An `Authorization` value, kept out of debug output. Base64 and the
    /// printable-ASCII tokens `parse_token` lets through always fit a
    /// header; the error is for safety, not an expected path.
    fn sensitive(&self, value: &str) -> Result<HeaderValue, FetchError> {
        let mut v = HeaderValue::from_str(value).map_err(|_| FetchError::Registry {
            registry: self.registry.clone(),
            what: "authorization".into(),
            detail: "its credentials cannot be sent as an HTTP header".into(),
        })?;
        v.set_sensitive(true);
        Ok(v)
    }
}
