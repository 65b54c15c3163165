//! Progress reporting for pulls, kept apart from the pull itself: the store
//! calls a [`PullObserver`]; this module decides what a person (or program)
//! sees. Everything goes to stderr so stdout carries only the result.
//!
//! - bars: one indicatif bar per layer, on a terminal;
//! - plain: one line per layer event, for logs and pipes;
//! - json: one JSON object per event, for programs;
//! - none: `--quiet`.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use osctl_store::{PullObserver, Silent};

use crate::output::{human_bytes, short_id};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    Bars,
    Plain,
    Json,
    None,
}

pub fn observer(mode: ProgressMode) -> Arc<dyn PullObserver> {
    let mode = match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bars,
        ProgressMode::Auto => ProgressMode::Plain,
        m => m,
    };
    match mode {
        ProgressMode::Bars => Arc::new(Bars::default()),
        ProgressMode::Plain => Arc::new(Lines::default()),
        ProgressMode::Json => Arc::new(JsonLines::default()),
        _ => Arc::new(Silent),
    }
}

#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: Mutex<Vec<Option<ProgressBar>>>,
}

impl PullObserver for Bars {
    fn resolved(&self, reference: &str, digest: &str, layers: usize) {
        self.multi.set_draw_target(ProgressDrawTarget::stderr());
        let _ = self.multi.println(format!(
            "Pulling {reference} ({}, {layers} layers)",
            short_id(digest)
        ));
        *self.bars.lock().unwrap() = vec![None; layers];
    }
    fn layer_started(&self, index: usize, digest: &str, size: u64) {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(short_id(digest).to_string());
        if let Some(slot) = self.bars.lock().unwrap().get_mut(index) {
            *slot = Some(bar);
        }
    }
    fn layer_progress(&self, index: usize, read: u64) {
        if let Some(Some(bar)) = self.bars.lock().unwrap().get(index) {
            bar.set_position(read);
        }
    }
    fn layer_finished(&self, index: usize, reused: bool) {
        if let Some(Some(bar)) = self.bars.lock().unwrap().get(index) {
            if reused {
                bar.finish_with_message("already present");
            } else {
                bar.finish_with_message("done");
            }
        }
    }
    fn building_image(&self) {
        let _ = self.multi.println("Building composefs image");
    }
}

/// Plain lines: start and end of each layer, plus one line per 25% of a
/// large layer so a log shows the pull is alive.
#[derive(Default)]
struct Lines {
    state: Mutex<Vec<LineState>>,
}

/// One layer as the plain reporter tracks it.
#[derive(Clone, Default)]
struct LineState {
    short_digest: String,
    size: u64,
    quarters_reported: u8,
    started: Option<Instant>,
}

impl Lines {
    fn say(&self, s: String) {
        let _ = writeln!(std::io::stderr().lock(), "{s}");
    }
}

/// Layers smaller than this get no intermediate progress lines.
const QUARTER_LINES_MIN: u64 = 16 * 1024 * 1024;

impl PullObserver for Lines {
    fn resolved(&self, reference: &str, digest: &str, layers: usize) {
        self.say(format!(
            "Pulling {reference} ({}, {layers} layers)",
            short_id(digest)
        ));
        *self.state.lock().unwrap() = vec![LineState::default(); layers];
    }
    fn up_to_date(&self) {
        self.say("Manifest unchanged; nothing to fetch".into());
    }
    fn layer_started(&self, index: usize, digest: &str, size: u64) {
        if let Some(s) = self.state.lock().unwrap().get_mut(index) {
            *s = LineState {
                short_digest: short_id(digest).to_string(),
                size,
                quarters_reported: 0,
                started: Some(Instant::now()),
            };
        }
    }
    fn layer_progress(&self, index: usize, read: u64) {
        let mut st = self.state.lock().unwrap();
        let Some(layer) = st.get_mut(index) else {
            return;
        };
        if layer.size < QUARTER_LINES_MIN {
            return;
        }
        let q = (read.saturating_mul(4) / layer.size.max(1)).min(4) as u8;
        if q > layer.quarters_reported && q < 4 {
            layer.quarters_reported = q;
            let line = format!(
                "layer {}: {}% of {}",
                layer.short_digest,
                q as u32 * 25,
                human_bytes(layer.size)
            );
            drop(st);
            self.say(line);
        }
    }
    fn layer_finished(&self, index: usize, reused: bool) {
        let st = self.state.lock().unwrap();
        let Some(layer) = st.get(index) else {
            return;
        };
        let id = &layer.short_digest;
        let line = if reused {
            format!("layer {id}: already present")
        } else {
            let secs = layer
                .started
                .map_or(Duration::ZERO, |t| t.elapsed())
                .as_secs_f64();
            format!("layer {id}: {} in {secs:.1}s", human_bytes(layer.size))
        };
        drop(st);
        self.say(line);
    }
    fn building_image(&self) {
        self.say("Building composefs image".into());
    }
}

/// One JSON object per line; progress events are throttled per layer.
#[derive(Default)]
struct JsonLines {
    last: Mutex<Vec<Option<Instant>>>,
}

/// Minimum time between two progress events of one layer.
const JSON_PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

impl JsonLines {
    fn emit(&self, v: serde_json::Value) {
        let _ = writeln!(std::io::stderr().lock(), "{v}");
    }
}

impl PullObserver for JsonLines {
    fn resolved(&self, reference: &str, digest: &str, layers: usize) {
        *self.last.lock().unwrap() = vec![None; layers];
        self.emit(serde_json::json!({"event": "resolved", "reference": reference, "manifestDigest": digest, "layers": layers}));
    }
    fn up_to_date(&self) {
        self.emit(serde_json::json!({"event": "up-to-date"}));
    }
    fn layer_started(&self, index: usize, digest: &str, size: u64) {
        self.emit(serde_json::json!({"event": "layer-start", "index": index, "digest": digest, "size": size}));
    }
    fn layer_progress(&self, index: usize, read: u64) {
        let mut last = self.last.lock().unwrap();
        if let Some(slot) = last.get_mut(index) {
            if slot.is_some_and(|t| t.elapsed() < JSON_PROGRESS_INTERVAL) {
                return;
            }
            *slot = Some(Instant::now());
        }
        drop(last);
        self.emit(serde_json::json!({"event": "layer-progress", "index": index, "read": read}));
    }
    fn layer_finished(&self, index: usize, reused: bool) {
        self.emit(serde_json::json!({"event": "layer-done", "index": index, "reused": reused}));
    }
    fn building_image(&self) {
        self.emit(serde_json::json!({"event": "building-image"}));
    }
}
