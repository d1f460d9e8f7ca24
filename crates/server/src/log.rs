//! The server's log: where lines go (`logfile`: standard error, or appended to a file), how they
//! look (`log-format`: text, or one JSON object per line), and the node's identity every line
//! carries (its node id and, in cluster mode, the cluster's current epoch).
//!
//! As Redis does, a log file is opened for each line and closed after it, so a file moved away
//! by log rotation is simply created again by the next line. Lines are rare (events, not
//! requests), so the cost does not matter; each is one `write` on an `O_APPEND` file, so lines
//! from several threads never interleave.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::RwLock;

use shoal_commands::config::{LogFormat, LogLevel};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// Who is logging: this node's id (before the server knows it: `-`) and, in cluster mode, the
/// current epoch of the cluster configuration it has installed.
struct Identity {
    node: String,
    epoch: Option<u64>,
}

static IDENTITY: RwLock<Identity> = RwLock::new(Identity {
    node: String::new(),
    epoch: None,
});

/// Sets the node id every line carries from now on.
pub fn set_node(id: &str) {
    if let Ok(mut i) = IDENTITY.write()
        && i.node != id
    {
        i.node = id.to_string();
    }
}

/// A line from the command layer (`Hooks::log`) at its Redis level.
pub fn line(level: LogLevel, message: &str) {
    match level {
        LogLevel::Debug | LogLevel::Verbose => tracing::debug!("{message}"),
        LogLevel::Notice => tracing::info!("{message}"),
        LogLevel::Warning => tracing::warn!("{message}"),
    }
}

/// Sets the cluster epoch every line carries from now on.
pub fn set_epoch(epoch: u64) {
    if let Ok(mut i) = IDENTITY.write() {
        i.epoch = Some(epoch);
    }
}

/// The filter's handle, to follow `CONFIG SET loglevel` (see [`follow_level`]).
static LEVEL: std::sync::OnceLock<(
    tracing_subscriber::reload::Handle<EnvFilter, Registry>,
    RwLock<LogLevel>,
)> = std::sync::OnceLock::new();

/// The filter for a `loglevel`. The configuration group's Raft library narrates every vote and
/// membership step at `info`: that is debugging detail, shown from `verbose` on.
fn filter_for(level: LogLevel) -> EnvFilter {
    EnvFilter::new(match level {
        LogLevel::Debug => "debug",
        LogLevel::Verbose => "debug,openraft=info",
        LogLevel::Notice => "info,openraft=warn",
        LogLevel::Warning => "warn",
    })
}

/// Installs the process's log subscriber. Creates the log file (to fail at start-up, as Redis
/// does, when it cannot be written).
pub fn init(level: LogLevel, format: LogFormat, logfile: &str) -> Result<(), String> {
    let target = if logfile.is_empty() {
        None
    } else {
        let path = PathBuf::from(logfile);
        open(&path).map_err(|e| format!("Can't open the log file {logfile}: {e}"))?;
        Some(path)
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter_for(level));
    let lines = tracing_subscriber::fmt::layer()
        .event_format(Line {
            json: format == LogFormat::Json,
        })
        .with_writer(Target(target));
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init()
        .map_err(|e| format!("log: {e}"))?;
    let _ = LEVEL.set((handle, RwLock::new(level)));
    Ok(())
}

/// Makes the log follow `level` (`CONFIG SET loglevel`); cheap when it did not change.
pub fn follow_level(level: LogLevel) {
    let Some((handle, current)) = LEVEL.get() else {
        return;
    };
    if current.read().is_ok_and(|c| *c == level) {
        return;
    }
    if let Ok(mut c) = current.write() {
        *c = level;
        let _ = handle.reload(filter_for(level));
    }
}

fn open(path: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Standard error, or the log file opened afresh for each line.
struct Target(Option<PathBuf>);

impl<'a> MakeWriter<'a> for Target {
    type Writer = Box<dyn std::io::Write + 'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match &self.0 {
            Some(path) => match open(path) {
                Ok(f) => Box::new(f),
                // The file went away and cannot be made again: the line is not lost.
                Err(_) => Box::new(std::io::stderr()),
            },
            None => Box::new(std::io::stderr()),
        }
    }
}

/// The line format; see the module's documentation.
struct Line {
    json: bool,
}

/// An event's message and fields, as text or JSON values.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push((field.name(), text.into()));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push((field.name(), value.into()));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), value.into()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), value.into()));
    }
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut f = Fields::default();
        event.record(&mut f);
        let level = event.metadata().level().as_str();
        let (node, epoch) = match IDENTITY.read() {
            Ok(i) if !i.node.is_empty() => (i.node.clone(), i.epoch),
            _ => ("-".to_string(), None),
        };
        if self.json {
            let mut o = serde_json::Map::new();
            o.insert("timestamp".into(), time.into());
            o.insert("level".into(), level.into());
            o.insert("node_id".into(), node.into());
            if let Some(e) = epoch {
                o.insert("epoch".into(), e.into());
            }
            o.insert("message".into(), f.message.into());
            if !f.fields.is_empty() {
                let fields: serde_json::Map<String, serde_json::Value> = f
                    .fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                o.insert("fields".into(), fields.into());
            }
            writeln!(writer, "{}", serde_json::Value::Object(o))
        } else {
            let mut line = format!("{time} {level:>5} node={node}");
            if let Some(e) = epoch {
                let _ = write!(line, " epoch={e}");
            }
            let _ = write!(line, " {}", f.message);
            for (k, v) in f.fields {
                match v {
                    serde_json::Value::String(s) => {
                        let _ = write!(line, " {k}={s}");
                    }
                    other => {
                        let _ = write!(line, " {k}={other}");
                    }
                }
            }
            writeln!(writer, "{line}")
        }
    }
}
