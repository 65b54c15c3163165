//! The FleetLock wire protocol: endpoints, the request body, the
//! `{"kind","value"}` error answers, and the HTTP routing of
//! [`FleetLock`]. What a lock means lives in the parent module.

use std::sync::Arc;
use std::time::SystemTime;

use hyper::{Method, StatusCode};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::FleetLock;
use crate::admin::AdminError;
use crate::agent::error_chain;
use crate::etcd::EtcdError;
use crate::http::{self, HttpError, JSON, Request, Response};
use crate::metrics;

/// The header every FleetLock request carries, and its only value.
pub const PROTOCOL_HEADER: &str = "fleet-lock-protocol";
pub const PROTOCOL_VALUE: &str = "true";
pub const PRE_REBOOT: &str = "/v1/pre-reboot";
pub const STEADY_STATE: &str = "/v1/steady-state";
pub const METRICS: &str = "/metrics";
/// The longest group or id accepted (one etcd key segment each).
pub const MAX_NAME_LEN: usize = 253;

/// The error kinds of the protocol's `{"kind","value"}` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 400: no `fleet-lock-protocol: true` header.
    MissingHeader,
    /// 400: the body is not `{"client_params":{"id","group"}}`.
    BadRequest,
    /// 404: no such endpoint.
    NotFound,
    /// 405: not a POST (GET for /metrics).
    MethodNotAllowed,
    /// 400: the group is not `^[a-zA-Z0-9.-]+$`.
    GroupInvalid,
    /// 400: the id is empty or not a key segment.
    IdInvalid,
    /// 409: every slot is taken; the value names the holders.
    NoSlot,
    /// 409: the governing rollout's windows are closed; the value names the next opening.
    OutsideWindow,
    /// 409: the governing rollout is paused (or in a `pause` step).
    RolloutPaused,
    /// 409: the governing rollout is halted or rolling back; the value says why.
    RolloutHalted,
    /// 503: etcd did not answer.
    EtcdUnavailable,
    /// 500: a record in etcd cannot be read; nothing is granted (fail closed).
    StateUnreadable,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MissingHeader => "missing_header",
            Kind::BadRequest => "bad_request",
            Kind::NotFound => "not_found",
            Kind::MethodNotAllowed => "method_not_allowed",
            Kind::GroupInvalid => "group_invalid",
            Kind::IdInvalid => "id_invalid",
            Kind::NoSlot => "no_slot",
            Kind::OutsideWindow => "outside_window",
            Kind::RolloutPaused => "rollout_paused",
            Kind::RolloutHalted => "rollout_halted",
            Kind::EtcdUnavailable => "etcd_unavailable",
            Kind::StateUnreadable => "state_unreadable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Kind::MissingHeader | Kind::BadRequest | Kind::GroupInvalid | Kind::IdInvalid => {
                StatusCode::BAD_REQUEST
            }
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::NoSlot | Kind::OutsideWindow | Kind::RolloutPaused | Kind::RolloutHalted => {
                StatusCode::CONFLICT
            }
            Kind::EtcdUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::StateUnreadable => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A request refused: the protocol's error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {value}", kind.as_str())]
pub struct Refusal {
    pub kind: Kind,
    pub value: String,
}

impl Refusal {
    pub(crate) fn new(kind: Kind, value: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            value: value.into(),
        }
    }

    /// The HTTP answer.
    pub fn response(&self) -> Response {
        let body = ErrorBody {
            kind: self.kind.as_str(),
            value: &self.value,
        };
        Response::with(
            self.kind.status(),
            JSON,
            serde_json::to_vec(&body).expect("two strings always serialise"),
        )
    }
}

impl From<AdminError> for Refusal {
    fn from(e: AdminError) -> Refusal {
        match e {
            AdminError::Etcd(e) => e.into(),
            other => Refusal::new(Kind::StateUnreadable, error_chain(&other)),
        }
    }
}

impl From<EtcdError> for Refusal {
    fn from(e: EtcdError) -> Refusal {
        let kind = match &e {
            EtcdError::Decode { .. }
            | EtcdError::Encode { .. }
            | EtcdError::ForeignKey { .. }
            | EtcdError::Protocol { .. }
            | EtcdError::Config(_) => Kind::StateUnreadable,
            EtcdError::InvalidName { .. } => Kind::IdInvalid,
            _ => Kind::EtcdUnavailable,
        };
        Refusal::new(kind, error_chain(&e))
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: &'a str,
    value: &'a str,
}

/// The request body. Unknown fields are accepted: a newer client may send
/// more, and refusing it would stop its reboots for no reason.
#[derive(Debug, Deserialize)]
struct Body {
    client_params: ClientParams,
}

#[derive(Debug, Deserialize)]
struct ClientParams {
    id: String,
    group: String,
}

/// A group: `^[a-zA-Z0-9.-]+$` (the protocol's rule), at most [`MAX_NAME_LEN`].
pub fn check_group(group: &str) -> Result<(), Refusal> {
    if group.is_empty() || group.len() > MAX_NAME_LEN {
        return Err(Refusal::new(
            Kind::GroupInvalid,
            format!("group {group:?} must be 1 to {MAX_NAME_LEN} characters long"),
        ));
    }
    if let Some(c) = group
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-')))
    {
        return Err(Refusal::new(
            Kind::GroupInvalid,
            format!("group {group:?} has {c:?}: only letters, digits, '.' and '-' are allowed"),
        ));
    }
    Ok(())
}

/// An id: one key segment, printable, at most [`MAX_NAME_LEN`].
pub fn check_id(id: &str) -> Result<(), Refusal> {
    if id.is_empty() || id.len() > MAX_NAME_LEN {
        return Err(Refusal::new(
            Kind::IdInvalid,
            format!("id {id:?} must be 1 to {MAX_NAME_LEN} characters long"),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')))
    {
        return Err(Refusal::new(
            Kind::IdInvalid,
            format!("id {id:?} has {c:?}: only letters, digits, '.', '-', '_' and ':' are allowed"),
        ));
    }
    Ok(())
}

impl FleetLock {
    /// Answers one HTTP request.
    pub async fn handle(&self, req: Request) -> Response {
        match (req.method.clone(), req.path.as_str()) {
            (Method::GET, METRICS) => {
                match metrics::fleet_metrics(&self.etcd, SystemTime::now()).await {
                    Ok(text) => {
                        Response::with(StatusCode::OK, metrics::CONTENT_TYPE, text.into_bytes())
                    }
                    Err(e) => Response::with(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        format!("{}\n", error_chain(&e)).into_bytes(),
                    ),
                }
            }
            (Method::POST, PRE_REBOOT | STEADY_STATE) => {
                let pre_reboot = req.path == PRE_REBOOT;
                let result = match parse_request(&req) {
                    Ok((group, id)) if pre_reboot => {
                        self.pre_reboot(&group, &id, Timestamp::now()).await
                    }
                    Ok((group, id)) => self.steady_state(&group, &id).await,
                    Err(r) => Err(r),
                };
                match result {
                    Ok(()) => Response::empty_ok(),
                    Err(r) => {
                        tracing::info!(path = %req.path, refusal = %r, "fleetlock request refused");
                        r.response()
                    }
                }
            }
            (_, PRE_REBOOT | STEADY_STATE) => Refusal::new(
                Kind::MethodNotAllowed,
                format!("{} takes POST, not {}", req.path, req.method),
            )
            .response(),
            (_, METRICS) => Refusal::new(
                Kind::MethodNotAllowed,
                format!("{METRICS} takes GET, not {}", req.method),
            )
            .response(),
            (_, path) => Refusal::new(
                Kind::NotFound,
                format!("no endpoint {path}: {PRE_REBOOT}, {STEADY_STATE} and {METRICS} exist"),
            )
            .response(),
        }
    }
}

/// The group and id of a FleetLock request, or the refusal.
fn parse_request(req: &Request) -> Result<(String, String), Refusal> {
    match req.headers.get(PROTOCOL_HEADER) {
        Some(v) if v.as_bytes().eq_ignore_ascii_case(PROTOCOL_VALUE.as_bytes()) => {}
        Some(v) => {
            return Err(Refusal::new(
                Kind::MissingHeader,
                format!("header {PROTOCOL_HEADER} is {v:?}; it must be \"{PROTOCOL_VALUE}\""),
            ));
        }
        None => {
            return Err(Refusal::new(
                Kind::MissingHeader,
                format!("header {PROTOCOL_HEADER}: {PROTOCOL_VALUE} is required"),
            ));
        }
    }
    let body: Body = serde_json::from_slice(&req.body).map_err(|e| {
        Refusal::new(
            Kind::BadRequest,
            format!("body is not {{\"client_params\":{{\"id\":…,\"group\":…}}}}: {e}"),
        )
    })?;
    check_group(&body.client_params.group)?;
    check_id(&body.client_params.id)?;
    Ok((body.client_params.group, body.client_params.id))
}

/// Serves FleetLock and `/metrics` on `listener` until accepting fails.
pub async fn serve(server: FleetLock, listener: TcpListener) -> Result<(), HttpError> {
    let server = Arc::new(server);
    http::serve(listener, move |req| {
        let server = Arc::clone(&server);
        async move { server.handle(req).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_ids_follow_the_protocol() {
        assert_eq!(check_group("web.eu-1"), Ok(()));
        assert_eq!(check_id("0123abcd_x:y"), Ok(()));
        for (group, why) in [
            ("", "must be 1 to 253 characters long"),
            (
                "a_b",
                "has '_': only letters, digits, '.' and '-' are allowed",
            ),
            ("a/b", "has '/'"),
        ] {
            let r = check_group(group).unwrap_err();
            assert_eq!(r.kind, Kind::GroupInvalid);
            assert!(r.value.contains(why), "{group}: {}", r.value);
        }
        for (id, why) in [
            ("", "must be 1 to 253 characters long"),
            ("a/b", "has '/'"),
            ("a b", "has ' '"),
        ] {
            let r = check_id(id).unwrap_err();
            assert_eq!(r.kind, Kind::IdInvalid);
            assert!(r.value.contains(why), "{id}: {}", r.value);
        }
    }

    #[test]
    fn refusals_are_the_protocols_json() {
        let r = Refusal::new(Kind::NoSlot, "group web: all 1 slots are taken: a");
        let resp = r.response();
        assert_eq!(resp.status, StatusCode::CONFLICT);
        assert_eq!(resp.content_type, Some(JSON));
        assert_eq!(
            String::from_utf8(resp.body).unwrap(),
            r#"{"kind":"no_slot","value":"group web: all 1 slots are taken: a"}"#
        );
    }
}
