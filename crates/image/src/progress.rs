//! Progress of long work (pulls, pushes, loads): bars on a terminal, one plain line per
//! finished item otherwise (CI logs, pipes), nothing when quiet.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes.
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    quiet: bool,
}

/// One item's progress (a blob).
pub struct Bar {
    pb: Option<ProgressBar>,
    label: String,
    quiet: bool,
}

impl Progress {
    /// Bars if stderr is a terminal (and not quiet), plain lines otherwise.
    pub fn new(quiet: bool) -> Progress {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi, quiet }
    }

    /// No output at all.
    pub fn hidden() -> Progress {
        Progress {
            multi: None,
            quiet: true,
        }
    }

    /// A bar for an item of `total` bytes (0 if unknown).
    pub fn bar(&self, label: &str, total: u64) -> Arc<Bar> {
        let pb = self.multi.as_ref().map(|m| {
            let pb = m.add(ProgressBar::new(total));
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            pb.set_prefix(label.to_string());
            pb
        });
        Arc::new(Bar {
            pb,
            label: label.to_string(),
            quiet: self.quiet,
        })
    }

    /// A line of status (printed above the bars on a terminal).
    pub fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }
}

impl Bar {
    /// Adds `n` bytes done.
    pub fn inc(&self, n: u64) {
        if let Some(pb) = &self.pb {
            pb.inc(n);
        }
    }

    /// Restarts (a retried download).
    pub fn reset(&self, to: u64) {
        if let Some(pb) = &self.pb {
            pb.set_position(to);
        }
    }

    /// Ends the item with a word (`done`, `skipped: already exists`).
    pub fn finish(&self, msg: &str) {
        match &self.pb {
            Some(pb) => pb.finish_with_message(msg.to_string()),
            None if !self.quiet => eprintln!("{} {msg}", self.label),
            None => {}
        }
    }
}
