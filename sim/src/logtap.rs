//! Every log line the simulated programs write, kept until the world's next invariant check, so
//! that no Secret value reaches a log (invariant 7 of the simulation).
//!
//! A [`World`](crate::world::World) installs a subscriber as the default of its thread for as long
//! as it lives (every simulated host runs on that thread). It has two layers: the tap, which
//! records INFO and above from every crate and DEBUG from ours (`sv_*`), whatever `RUST_LOG`
//! says; and the usual output, filtered by `RUST_LOG` and stamped with the simulated time, to the
//! test writer (or to stderr, see [`log_to_stderr`]).
//! A line is an event's target, message and fields, or a new span's name and fields (a span's
//! fields show in every line under it).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::subscriber::DefaultGuard;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, Targets, filter_fn};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// The lines logged since the last [`LogTap::take`].
#[derive(Clone, Debug, Default)]
pub struct LogTap {
    lines: Arc<Mutex<Vec<String>>>,
}

impl LogTap {
    /// Installs the tap and the usual output as this thread's default subscriber, until the
    /// guard is dropped.
    pub fn install(&self) -> DefaultGuard {
        // turmoil opens an INFO span (the host's name) each time it runs a host, 450,000 in a
        // scenario; no line needs it, and enabled it cost a fifth of a run's CPU time. turmoil's
        // events (a host started, a port bound) are kept.
        let tapped = Targets::new()
            .with_default(Level::INFO)
            .with_target("sv_", Level::DEBUG)
            .and(filter_fn(|meta| !(meta.is_span() && meta.target().starts_with("turmoil"))));
        let subscriber =
            tracing_subscriber::registry().with(Recorder { lines: self.lines.clone() }.with_filter(tapped)).with(
                tracing_subscriber::fmt::layer()
                    .with_timer(SimulatedTime)
                    .with_writer(output())
                    .with_filter(EnvFilter::from_default_env()),
            );
        tracing::subscriber::set_default(subscriber)
    }

    /// The lines logged since the last call.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Stamps the usual output with the simulated time while a host runs (`sim   42.310s`, the clock
/// of a scenario's timeline), and with the wall clock otherwise (the harness between steps): wall
/// time says nothing about when something happened in a run that simulates minutes in a second.
struct SimulatedTime;

impl tracing_subscriber::fmt::time::FormatTime for SimulatedTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(elapsed) => write!(w, "sim {:>8.3}s", elapsed.as_secs_f64()),
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// Whether the usual output goes to stderr (a program) rather than the test writer (a test).
static TO_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends the usual output of every world made from now on to stderr: for programs, whose stdout
/// is a report (tests keep the test writer, which shows a failing test's logs only).
pub fn log_to_stderr() {
    TO_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn output() -> tracing_subscriber::fmt::writer::BoxMakeWriter {
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, TestWriter};
    match TO_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        true => BoxMakeWriter::new(std::io::stderr),
        false => BoxMakeWriter::new(TestWriter::new()),
    }
}

struct Recorder {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn push(&self, line: String) {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut line = Line(format!("{} {}:", event.metadata().level(), event.metadata().target()));
        event.record(&mut line);
        self.push(line.0);
    }

    fn on_new_span(&self, attributes: &tracing::span::Attributes<'_>, _: &tracing::span::Id, _: Context<'_, S>) {
        let mut line = Line(format!("span {}:", attributes.metadata().name()));
        attributes.record(&mut line);
        self.push(line.0);
    }

    fn on_record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>, _: Context<'_, S>) {
        let mut line = Line("span record:".to_string());
        values.record(&mut line);
        self.push(line.0);
    }
}

/// A line being formatted: ` field=value` per field.
struct Line(String);

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_info_from_everyone_and_debug_from_ours_whatever_rust_log_says() {
        let tap = LogTap::default();
        let guard = tap.install();
        tracing::info!(target: "hyper::client", url = "https://h/x", "connected");
        tracing::info_span!(target: "turmoil", "node", name = "api").in_scope(|| {});
        tracing::debug!(target: "hyper::client", "not recorded");
        tracing::debug!(target: "sv_syncer::source", token = ?"abc", "fetching");
        let span = tracing::info_span!("sync", volume = "team-a/docs");
        span.record("volume", "team-a/other");
        drop(guard);
        tracing::info!("after the guard: not recorded");
        let lines = tap.take();
        assert_eq!(
            lines,
            [
                "INFO hyper::client: message=connected url=https://h/x",
                "DEBUG sv_syncer::source: message=fetching token=\"abc\"",
                "span sync: volume=team-a/docs",
                "span record: volume=team-a/other",
            ]
        );
        assert!(tap.take().is_empty());
    }
}
