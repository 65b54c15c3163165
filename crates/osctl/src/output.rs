//! How results are printed. Pure functions from data to text, so the output
//! can be snapshot-tested without running a command.

use osctl_store::{ImageRecord, PullOutcome, Store};
use serde::Serialize;

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The first 12 hex digits, as container tools abbreviate ids.
pub fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

pub fn pull_summary(outcome: &PullOutcome, store: &Store) -> String {
    let r = outcome.record();
    let what = if outcome.up_to_date() {
        "Image is up to date"
    } else {
        "Pulled"
    };
    format!(
        "{what}: {}\n  manifest  {}\n  signature {}\n  image id  {}\n  layers    {} fetched, {} already present\n  store     {} ({})\n",
        r.reference(),
        r.manifest_digest(),
        r.signature()
            .map_or_else(|| "unknown".to_string(), |s| s.summary()),
        r.image_id(),
        outcome.layers_fetched(),
        outcome.layers_reused(),
        store.sysroot().join(osctl_store::REPO_PATH).display(),
        store.verity()
    )
}

pub fn image_table(records: &[ImageRecord]) -> String {
    let rows: Vec<[String; 4]> = records
        .iter()
        .map(|r| {
            [
                r.reference().to_string(),
                short_id(r.image_id()).to_string(),
                human_bytes(r.size()),
                r.created().unwrap_or("-").to_string(),
            ]
        })
        .collect();
    let header = ["REFERENCE", "IMAGE ID", "SIZE", "CREATED"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 4]| {
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageJson<'a> {
    reference: &'a str,
    transport: &'a str,
    manifest_digest: &'a str,
    config_digest: &'a str,
    image_id: &'a str,
    size: u64,
    created: Option<&'a str>,
    pulled: &'a str,
    architecture: &'a str,
    os: &'a str,
    layers: usize,
    /// The signature policy's verdict at the pull; `null` when unknown.
    signature: Option<&'a osctl_image::SignatureVerdict>,
}

pub fn image_json(records: &[ImageRecord]) -> anyhow::Result<String> {
    let items: Vec<ImageJson> = records
        .iter()
        .map(|r| ImageJson {
            reference: r.reference(),
            transport: r.transport(),
            manifest_digest: r.manifest_digest(),
            config_digest: r.config_digest(),
            image_id: r.image_id(),
            size: r.size(),
            created: r.created(),
            pulled: r.pulled(),
            architecture: r.architecture(),
            os: r.os(),
            layers: r.layers().len(),
            signature: r.signature(),
        })
        .collect();
    Ok(serde_json::to_string_pretty(&items)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(177 * 1024 * 1024), "177.0 MiB");
    }

    #[test]
    fn empty_table_has_a_header() {
        assert_eq!(image_table(&[]), "REFERENCE  IMAGE ID  SIZE  CREATED\n");
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }
}
