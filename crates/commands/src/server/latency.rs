//! The texts of `LATENCY DOCTOR` and `LATENCY GRAPH`, from the latency monitor's samples: Redis
//! 7.0's report (`createLatencyReport` in `latency.c`) and its ASCII sparkline (`sparkline.c`),
//! byte for byte. Pure: the time and the settings the advice depends on are passed in.
//!
//! The report keeps Redis's wording ("this Redis instance", the advice about Redis's own
//! settings), as MEMORY DOCTOR does, so tools that read it see what they expect. Redis's `fork`
//! event, whose line also rates the fork speed, has no counterpart: shoal never forks.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::state::{LatencyEvent, LatencySample};

/// The settings `LATENCY DOCTOR`'s advice depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DoctorSettings {
    /// `latency-monitor-threshold`, in milliseconds (0: the monitor is off).
    pub threshold_ms: u64,
    /// `slowlog-log-slower-than`, in microseconds (negative: the slow log is off).
    pub slowlog_slower_than_us: i64,
    pub hz: u32,
    /// `appendfsync always`.
    pub fsync_always: bool,
}

// The pieces of advice, one bit each, in the order the report gives them.
const SLOWLOG_ENABLE: u32 = 1 << 0;
const SLOWLOG_TUNE: u32 = 1 << 1;
const SLOWLOG_INSPECT: u32 = 1 << 2;
const SCHEDULER: u32 = 1 << 3;
const LOCAL_DISK: u32 = 1 << 4;
const SSD: u32 = 1 << 5;
const DATA_WRITEBACK: u32 = 1 << 6;
const DISK_CONTENTION: u32 = 1 << 7;
const NO_APPENDFSYNC: u32 = 1 << 8;
const RELAX_FSYNC: u32 = 1 << 9;
const WRITE_LOAD_INFO: u32 = 1 << 10;
const HZ: u32 = 1 << 11;
const LARGE_OBJECTS: u32 = 1 << 12;
const MASS_EVICTION: u32 = 1 << 13;
const DISABLE_THP: u32 = 1 << 14;

/// What a spike of each event suggests, as Redis's report reads its event names (`command`
/// depends on the slow log's settings too, see [`doctor`]).
const EVENT_ADVICE: &[(&str, u32)] = &[
    ("command", SLOWLOG_INSPECT | LARGE_OBJECTS),
    ("fast-command", SCHEDULER),
    (
        "aof-write-pending-fsync",
        LOCAL_DISK | DISK_CONTENTION | SSD | DATA_WRITEBACK,
    ),
    (
        "aof-write-active-child",
        NO_APPENDFSYNC | DATA_WRITEBACK | SSD,
    ),
    ("aof-write-alone", LOCAL_DISK | DATA_WRITEBACK | SSD),
    ("aof-fsync-always", RELAX_FSYNC),
    ("aof-fstat", DISK_CONTENTION | LOCAL_DISK),
    ("rdb-unlink-temp-file", DISK_CONTENTION | LOCAL_DISK),
    (
        "aof-rewrite-diff-write",
        WRITE_LOAD_INFO | DATA_WRITEBACK | SSD | LOCAL_DISK,
    ),
    (
        "aof-rename",
        WRITE_LOAD_INFO | DATA_WRITEBACK | SSD | LOCAL_DISK,
    ),
    ("expire-cycle", HZ | LARGE_OBJECTS),
    ("eviction-del", LARGE_OBJECTS),
    ("eviction-cycle", MASS_EVICTION),
];

/// One event's figures over the samples it keeps (Redis's `analyzeLatencyForEvent`).
struct Stats {
    samples: u64,
    /// Integer mean, and mean absolute deviation from it, in milliseconds.
    avg_ms: u64,
    mad_ms: u64,
    /// Seconds from the oldest sample to now (at least 1).
    period_s: i64,
}

fn analyze(samples: &[LatencySample], now_unix_s: u64) -> Stats {
    let n = samples.len() as u64;
    if n == 0 {
        return Stats {
            samples: 0,
            avg_ms: 0,
            mad_ms: 0,
            period_s: 0,
        };
    }
    let sum: u64 = samples.iter().map(|s| s.ms).sum();
    let avg_ms = sum / n;
    let mad_ms = samples.iter().map(|s| s.ms.abs_diff(avg_ms)).sum::<u64>() / n;
    let oldest = samples.iter().map(|s| s.unix_s).min().unwrap_or(now_unix_s);
    let period_s = match now_unix_s as i64 - oldest as i64 {
        0 => 1,
        p => p,
    };
    Stats {
        samples: n,
        avg_ms,
        mad_ms,
        period_s,
    }
}

/// `LATENCY DOCTOR`'s report. `anon_huge_pages_bytes` is asked only when the report needs it.
pub(crate) fn doctor(
    events: &BTreeMap<&'static str, LatencyEvent>,
    now_unix_s: u64,
    settings: &DoctorSettings,
    anon_huge_pages_bytes: impl FnOnce() -> u64,
) -> String {
    if events.is_empty() && settings.threshold_ms == 0 {
        return "I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this Redis instance. You may use \"CONFIG SET latency-monitor-threshold <milliseconds>.\" in order to enable it. If we weren't in a deep space mission I'd suggest to take a look at https://redis.io/topics/latency-monitor.\n".into();
    }
    let mut report = String::new();
    let mut advice = 0u32;
    for (i, (name, e)) in events.iter().enumerate() {
        if i == 0 {
            report.push_str("Dave, I have observed latency spikes in this Redis instance. You don't mind talking about it, do you Dave?\n\n");
        }
        let samples: Vec<LatencySample> = e.samples.iter().copied().collect();
        let st = analyze(&samples, now_unix_s);
        let _ = writeln!(
            report,
            "{}. {name}: {} latency spikes (average {}ms, mean deviation {}ms, period {:.2} sec). Worst all time event {}ms.",
            i + 1,
            st.samples,
            st.avg_ms,
            st.mad_ms,
            st.period_s as f64 / st.samples.max(1) as f64,
            e.max_ms
        );
        if *name == "command" {
            if settings.slowlog_slower_than_us < 0 {
                advice |= SLOWLOG_ENABLE;
            } else if settings.slowlog_slower_than_us as u64 / 1000 > settings.threshold_ms {
                advice |= SLOWLOG_TUNE;
            }
        }
        if let Some((_, bits)) = EVENT_ADVICE.iter().find(|(n, _)| n == name) {
            advice |= bits;
        }
    }
    if anon_huge_pages_bytes() > 0 {
        advice |= DISABLE_THP;
    }
    if events.is_empty() && advice == 0 {
        report.push_str("Dave, no latency spike was observed during the lifetime of this Redis instance, not in the slightest bit. I honestly think you ought to sit down calmly, take a stress pill, and think things over.\n");
        return report;
    }
    if advice == 0 {
        report.push_str("\nWhile there are latency events logged, I'm not able to suggest any easy fix. Please use the Redis community to get some help, providing this report in your help request.\n");
        return report;
    }
    report.push_str("\nI have a few advices for you:\n\n");
    let threshold_us = settings.threshold_ms.saturating_mul(1000);
    let has = |bit: u32| advice & bit != 0;
    if has(SLOWLOG_ENABLE) {
        let _ = writeln!(
            report,
            "- There are latency issues with potentially slow commands you are using. Try to enable the Slow Log Redis feature using the command 'CONFIG SET slowlog-log-slower-than {threshold_us}'. If the Slow log is disabled Redis is not able to log slow commands execution for you."
        );
    }
    if has(SLOWLOG_TUNE) {
        let _ = writeln!(
            report,
            "- Your current Slow Log configuration only logs events that are slower than your configured latency monitor threshold. Please use 'CONFIG SET slowlog-log-slower-than {threshold_us}'."
        );
    }
    let fixed: [(u32, bool, &str); 13] = [
        (
            SLOWLOG_INSPECT,
            true,
            "- Check your Slow Log to understand what are the commands you are running which are too slow to execute. Please check https://redis.io/commands/slowlog for more information.\n",
        ),
        (
            SCHEDULER,
            true,
            "- The system is slow to execute Redis code paths not containing system calls. This usually means the system does not provide Redis CPU time to run for long periods. You should try to:\n  1) Lower the system load.\n  2) Use a computer / VM just for Redis if you are running other software in the same system.\n  3) Check if you have a \"noisy neighbour\" problem.\n  4) Check with 'redis-cli --intrinsic-latency 100' what is the intrinsic latency in your system.\n  5) Check if the problem is allocator-related by recompiling Redis with MALLOC=libc, if you are using Jemalloc. However this may create fragmentation problems.\n",
        ),
        (
            LOCAL_DISK,
            true,
            "- It is strongly advised to use local disks for persistence, especially if you are using AOF. Remote disks provided by platform-as-a-service providers are known to be slow.\n",
        ),
        (
            SSD,
            true,
            "- SSD disks are able to reduce fsync latency, and total time needed for snapshotting and AOF log rewriting (resulting in smaller memory usage). With extremely high write load SSD disks can be a good option. However Redis should perform reasonably with high load using normal disks. Use this advice as a last resort.\n",
        ),
        (
            DATA_WRITEBACK,
            true,
            "- Mounting ext3/4 filesystems with data=writeback can provide a performance boost compared to data=ordered, however this mode of operation provides less guarantees, and sometimes it can happen that after a hard crash the AOF file will have a half-written command at the end and will require to be repaired before Redis restarts.\n",
        ),
        (
            DISK_CONTENTION,
            true,
            "- Try to lower the disk contention. This is often caused by other disk intensive processes running in the same computer (including other Redis instances).\n",
        ),
        (
            NO_APPENDFSYNC,
            true,
            "- Assuming from the point of view of data safety this is viable in your environment, you could try to enable the 'no-appendfsync-on-rewrite' option, so that fsync will not be performed while there is a child rewriting the AOF file or producing an RDB file (the moment where there is high disk contention).\n",
        ),
        (
            RELAX_FSYNC,
            settings.fsync_always,
            "- Your fsync policy is set to 'always'. It is very hard to get good performances with such a setup, if possible try to relax the fsync policy to 'onesec'.\n",
        ),
        (
            WRITE_LOAD_INFO,
            true,
            "- Latency during the AOF atomic rename operation or when the final difference is flushed to the AOF file at the end of the rewrite, sometimes is caused by very high write load, causing the AOF buffer to get very large. If possible try to send less commands to accomplish the same work, or use Lua scripts to group multiple operations into a single EVALSHA call.\n",
        ),
        (
            HZ,
            settings.hz < 100,
            "- In order to make the Redis keys expiring process more incremental, try to set the 'hz' configuration parameter to 100 using 'CONFIG SET hz 100'.\n",
        ),
        (
            LARGE_OBJECTS,
            true,
            "- Deleting, expiring or evicting (because of maxmemory policy) large objects is a blocking operation. If you have very large objects that are often deleted, expired, or evicted, try to fragment those objects into multiple smaller objects.\n",
        ),
        (
            MASS_EVICTION,
            true,
            "- Sudden changes to the 'maxmemory' setting via 'CONFIG SET', or allocation of large objects via sets or sorted sets intersections, STORE option of SORT, Redis Cluster large keys migrations (RESTORE command), may create sudden memory pressure forcing the server to block trying to evict keys. \n",
        ),
        (
            DISABLE_THP,
            true,
            "- I detected a non zero amount of anonymous huge pages used by your process. This creates very serious latency events in different conditions, especially when Redis is persisting on disk. To disable THP support use the command 'echo never > /sys/kernel/mm/transparent_hugepage/enabled', make sure to also add it into /etc/rc.local so that the command will be executed again after a reboot. Note that even if you have already disabled THP, you still need to restart the Redis process to get rid of the huge pages already created.\n",
        ),
    ];
    for (bit, applies, text) in fixed {
        if has(bit) && applies {
            report.push_str(text);
        }
    }
    report
}

/// Columns of a graph, and rows of its curve (Redis's `LATENCY_GRAPH_COLS`, and the 4 rows
/// `latencyCommandGenSparkeline` asks for).
const GRAPH_COLS: usize = 80;
const GRAPH_ROWS: usize = 4;
/// The characters of a filled sparkline from the bottom of a row to its top; '|' fills a row
/// the curve passes over.
const FILL: &[u8; 3] = b"_o#";

/// `LATENCY GRAPH`'s text for an event: a title, a rule, then the samples oldest first as a
/// filled sparkline with each one's age written downwards under it.
pub(crate) fn graph(event: &str, e: &LatencyEvent, now_unix_s: u64) -> String {
    let values: Vec<u64> = e.samples.iter().map(|s| s.ms).collect();
    let labels: Vec<String> = e
        .samples
        .iter()
        .map(|s| age_label(now_unix_s as i64 - s.unix_s as i64))
        .collect();
    let low = values.iter().copied().min().unwrap_or(0);
    let high = values.iter().copied().max().unwrap_or(0);
    let mut out = format!(
        "{event} - high {high} ms, low {low} ms (all time high {} ms)\n",
        e.max_ms
    );
    out.push_str(&"-".repeat(GRAPH_COLS));
    out.push('\n');
    for start in (0..values.len()).step_by(GRAPH_COLS) {
        if start != 0 {
            out.push('\n');
        }
        let end = (start + GRAPH_COLS).min(values.len());
        render_range(
            &mut out,
            &values[start..end],
            &labels[start..end],
            low,
            high,
        );
    }
    out
}

/// How long ago a sample is: seconds, minutes, hours or days, whole.
fn age_label(elapsed_s: i64) -> String {
    match elapsed_s {
        e if e < 60 => format!("{e}s"),
        e if e < 3600 => format!("{}m", e / 60),
        e if e < 3600 * 24 => format!("{}h", e / 3600),
        e => format!("{}d", e / (3600 * 24)),
    }
}

/// Up to [`GRAPH_COLS`] samples of the sparkline (Redis's `sparklineRenderRange`, filled, on a
/// linear scale from the whole graph's `low` to its `high`): the curve's rows, a blank line,
/// then the labels one character per line.
fn render_range(out: &mut String, values: &[u64], labels: &[String], low: u64, high: u64) {
    let steps = (FILL.len() * GRAPH_ROWS) as i64;
    let span = match high - low {
        0 => 1.0,
        s => s as f64,
    };
    let step_of = |v: u64| {
        // Redis truncates the scaled value before dividing, then the quotient.
        let scaled = ((v - low) as f64 * steps as f64) as i64;
        ((scaled as f64 / span) as i64).clamp(0, steps - 1)
    };
    let steps_of: Vec<i64> = values.iter().map(|&v| step_of(v)).collect();
    let mut line = String::with_capacity(values.len() + 1);
    for row in 0..GRAPH_ROWS {
        line.clear();
        let floor = ((GRAPH_ROWS - row - 1) * FILL.len()) as i64;
        for &step in &steps_of {
            let idx = step - floor;
            line.push(match idx {
                i if i < 0 => ' ',
                i if (i as usize) < FILL.len() => FILL[i as usize] as char,
                _ => '|',
            });
        }
        out.push_str(&line);
        out.push('\n');
    }
    // Every sample has a label: one blank line, then as many as the longest label has bytes.
    out.push_str(&" ".repeat(values.len()));
    out.push('\n');
    let longest = labels.iter().map(String::len).max().unwrap_or(0);
    for k in 0..longest {
        for l in labels {
            out.push(l.as_bytes().get(k).map_or(' ', |&b| b as char));
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(samples: &[(u64, u64)]) -> LatencyEvent {
        let mut e = LatencyEvent::default();
        for &(t, ms) in samples {
            e.add(t, ms);
        }
        e
    }

    const SETTINGS: DoctorSettings = DoctorSettings {
        threshold_ms: 1,
        slowlog_slower_than_us: 10_000,
        hz: 10,
        fsync_always: false,
    };

    #[test]
    fn a_graph_is_redis_sparkline_with_ages_underneath() {
        // As redis-server 7.0.15 drew two DEBUG SLEEPs, 50 ms then 20 ms a second later.
        let e = event(&[(1000, 50), (1001, 20)]);
        assert_eq!(
            graph("command", &e, 1001),
            format!(
                "command - high 50 ms, low 20 ms (all time high 50 ms)\n{}\n# \n| \n| \n|_\n  \n10\nss\n",
                "-".repeat(80)
            )
        );
    }

    #[test]
    fn a_graph_of_equal_samples_sits_on_the_bottom_row() {
        let e = event(&[(100, 7), (160, 7), (7300, 7)]);
        let g = graph("x", &e, 7330);
        let body: Vec<&str> = g.lines().skip(2).collect();
        // Ages 7230 s, 7170 s and 30 s: "2h", "1h", "30s", written downwards.
        assert_eq!(
            body,
            ["   ", "   ", "   ", "___", "   ", "213", "hh0", "  s"]
        );
    }

    #[test]
    fn more_samples_than_columns_make_a_second_block() {
        let samples: Vec<(u64, u64)> = (0..100).map(|i| (i, i + 1)).collect();
        let g = graph("x", &event(&samples), 100);
        let lines: Vec<&str> = g.lines().collect();
        // Title, rule, 4 rows, a blank line and 3 label lines (the first block's ages are
        // 100..21 s: "1m" up to 60 s, then "59s".."21s"), an empty line between the blocks, then
        // the second block's 20 columns.
        assert_eq!(lines[2].len(), 80);
        let sep = lines.iter().position(|l| l.is_empty()).expect("separator");
        assert_eq!(sep, 2 + 4 + 1 + 3);
        assert!(lines[sep + 1..].iter().all(|l| l.len() == 20), "{g}");
    }

    #[test]
    fn samples_of_one_second_keep_its_worst_and_the_ring_is_bounded() {
        let mut e = event(&[(5, 3), (5, 9), (5, 4)]);
        assert_eq!(e.samples.len(), 1);
        assert_eq!(e.latest(), LatencySample { unix_s: 5, ms: 9 });
        for t in 6..1000 {
            e.add(t, 1);
        }
        assert_eq!(e.samples.len(), crate::state::LATENCY_SAMPLES_MAX);
        assert_eq!(e.max_ms, 9);
        assert_eq!(e.samples.front().map(|s| s.unix_s), Some(1000 - 160));
    }

    #[test]
    fn doctor_without_monitor_or_events_says_it_is_disabled() {
        let off = DoctorSettings {
            threshold_ms: 0,
            ..SETTINGS
        };
        let text = doctor(&BTreeMap::new(), 0, &off, || panic!("not asked"));
        assert!(
            text.starts_with("I'm sorry, Dave, I can't do that."),
            "{text}"
        );
        let text = doctor(&BTreeMap::new(), 0, &SETTINGS, || 0);
        assert!(
            text.starts_with("Dave, no latency spike was observed"),
            "{text}"
        );
        let text = doctor(&BTreeMap::new(), 0, &SETTINGS, || 2 << 20);
        assert!(
            text.starts_with("\nI have a few advices for you:\n\n- I detected a non zero amount of anonymous huge pages"),
            "{text}"
        );
    }

    #[test]
    fn doctor_reports_each_event_then_its_advice() {
        let mut events = BTreeMap::new();
        events.insert("command", event(&[(1000, 50), (1001, 20)]));
        events.insert("expire-cycle", event(&[(990, 3)]));
        let text = doctor(&events, 1002, &SETTINGS, || 0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..6],
            [
                "Dave, I have observed latency spikes in this Redis instance. You don't mind talking about it, do you Dave?",
                "",
                "1. command: 2 latency spikes (average 35ms, mean deviation 15ms, period 1.00 sec). Worst all time event 50ms.",
                "2. expire-cycle: 1 latency spikes (average 3ms, mean deviation 0ms, period 12.00 sec). Worst all time event 3ms.",
                "",
                "I have a few advices for you:",
            ]
        );
        let advice: Vec<&str> = lines[7..].iter().map(|l| &l[..l.len().min(30)]).collect();
        assert_eq!(
            advice,
            [
                "- Your current Slow Log config",
                "- Check your Slow Log to under",
                "- In order to make the Redis k",
                "- Deleting, expiring or evicti",
            ]
        );
        // A fast hz drops its advice; a disabled slow log asks for it instead of tuning it.
        let tuned = DoctorSettings {
            hz: 100,
            slowlog_slower_than_us: -1,
            ..SETTINGS
        };
        let text = doctor(&events, 1002, &tuned, || 0);
        assert!(
            text.contains("'CONFIG SET slowlog-log-slower-than 1000'. If the Slow log is disabled")
        );
        assert!(!text.contains("'hz'"), "{text}");
    }

    #[test]
    fn doctor_with_events_but_nothing_to_advise_says_so() {
        let mut events = BTreeMap::new();
        events.insert("something-else", event(&[(10, 2)]));
        let text = doctor(&events, 10, &SETTINGS, || 0);
        assert!(
            text.ends_with("period 1.00 sec). Worst all time event 2ms.\n\nWhile there are latency events logged, I'm not able to suggest any easy fix. Please use the Redis community to get some help, providing this report in your help request.\n"),
            "{text}"
        );
    }
}
