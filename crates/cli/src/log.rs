//! The command line's log: the console (stderr, through the progress bars so no line tears
//! them) and, for `pyramid run`, the run directory's `run.log`.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use indicatif::{MultiProgress, ProgressDrawTarget};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// The run directory's log file, appended to by every invocation that runs there.
pub const RUN_LOG: &str = "run.log";

/// What the console shows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// `RUST_LOG`, else info and above.
    Normal,
    /// Warnings and errors only (`--quiet`).
    Quiet,
}

/// The installed log: the progress bars' home and the `run.log` sink.
pub struct Logging {
    /// Draws on stderr when it is a terminal, and nowhere otherwise.
    pub progress: MultiProgress,
    /// Holds the log of this invocation until the run directory is known.
    pub run_log: RunLog,
}

/// Installs the global subscriber. With `capture`, every line at info or above (or what
/// `RUST_LOG` asks for, if more) is kept for `run.log` (see [`RunLog::start`]).
pub fn init(console: Console, capture: bool) -> Logging {
    let terminal = std::io::stderr().is_terminal();
    let progress = MultiProgress::new();
    if !terminal {
        // indicatif hides itself off a terminal too; this makes it explicit.
        progress.set_draw_target(ProgressDrawTarget::hidden());
    }
    let env = || EnvFilter::try_from_default_env().ok();
    let console_filter = match console {
        Console::Quiet => EnvFilter::new("warn"),
        Console::Normal => env().unwrap_or_else(|| EnvFilter::new("info")),
    };
    // The file has at least info, whatever the console shows.
    let file_filter = env()
        .filter(|f| f.max_level_hint().is_none_or(|l| l >= LevelFilter::INFO))
        .unwrap_or_else(|| EnvFilter::new("info"));
    let run_log = RunLog::new(capture);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(ConsoleWriter(progress.clone()))
                // Colour codes only on a terminal, never in piped or redirected logs.
                .with_ansi(terminal)
                .with_filter(console_filter),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(run_log.clone())
                .with_ansi(false)
                .with_filter(file_filter),
        )
        .init();
    Logging { progress, run_log }
}

/// Writes to stderr with the progress bars cleared meanwhile (tracing formats an event into
/// one buffer and writes it once, so a line is never split around a redraw).
#[derive(Clone)]
struct ConsoleWriter(MultiProgress);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for ConsoleWriter {
    type Writer = ConsoleWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

enum Sink {
    /// Not a run: nothing is kept.
    Off,
    /// The run directory is not known (or not locked) yet.
    Buffer(Vec<u8>),
    File(File),
}

/// The `run.log` sink: buffers the log until [`RunLog::start`] opens the file, so a refused
/// run (lock held, fingerprints differ, bad data) writes nothing in the run directory.
#[derive(Clone)]
pub struct RunLog(Arc<Mutex<Sink>>, Arc<str>);

impl RunLog {
    fn new(capture: bool) -> Self {
        let sink = if capture {
            Sink::Buffer(Vec::new())
        } else {
            Sink::Off
        };
        Self(Arc::new(Mutex::new(sink)), header().into())
    }

    fn sink(&self) -> MutexGuard<'_, Sink> {
        // A panic while logging leaves the sink usable: keep logging.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens `<dir>/run.log` for appending, writes this invocation's header line (time,
    /// version, command line) and the lines logged so far, and sends every later line there.
    pub fn start(&self, dir: &Path) -> std::io::Result<()> {
        let mut sink = self.sink();
        let Sink::Buffer(buffered) = &*sink else {
            return Ok(());
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(RUN_LOG))?;
        let mut bytes = format!("{}\n", self.1).into_bytes();
        bytes.extend_from_slice(buffered);
        file.write_all(&bytes)?;
        *sink = Sink::File(file);
        Ok(())
    }

    /// Closes the current run directory's `run.log` and buffers again until the next
    /// [`RunLog::start`]: each seed of a multi-seed run logs into its own directory.
    pub fn detach(&self) {
        let mut sink = self.sink();
        if matches!(&*sink, Sink::File(_)) {
            *sink = Sink::Buffer(Vec::new());
        }
    }
}

/// `==== <UTC time> pyramid <version>: <command line>`, at the start of the invocation.
fn header() -> String {
    let mut now = String::new();
    let _ = SystemTime.format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut now));
    let args: Vec<String> = std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("{a:?}")
            } else {
                a
            }
        })
        .collect();
    format!(
        "==== {now} pyramid {}: {}",
        env!("CARGO_PKG_VERSION"),
        args.join(" ")
    )
}

impl Write for RunLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut *self.sink() {
            Sink::Off => {}
            Sink::Buffer(b) => b.extend_from_slice(buf),
            // A full disk must not stop the run: the console still has the line.
            Sink::File(f) => {
                let _ = f.write_all(buf);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RunLog {
    type Writer = RunLog;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
