//! What the osctl-diff tests share.

use osctl_diff::report::{Endpoint, Role};

/// One side of a report: an image named `name` (no deployment).
pub fn endpoint(name: &str) -> Endpoint {
    Endpoint {
        role: Role::Image,
        deployment: None,
        image: name.to_string(),
        manifest_digest: "sha256:0".to_string(),
    }
}
