//! `shoal cluster reshard` and `shoal cluster rebalance`: read the slot map from a node, plan the
//! moves (`shoal_cluster::plan`, redis-cli's arithmetic), and carry them out as slot migration
//! jobs, one per (source, target) pair, one job at a time:
//!
//! - `CLUSTER MIGRATESLOTS SLOTSRANGE <start> <end> [...] NODE <target-id>` sent to the source
//!   starts the job (`+OK`; the job runs on the source, which streams the slots' keys and hands
//!   the slots over through the configuration group);
//! - `CLUSTER GETSLOTMIGRATIONS` on the source, polled every [`JOB_POLL`], lists its jobs (each a
//!   flat array of field names and values: `name`, `operation`, `slot_ranges`, `source_node`,
//!   `target_node`, `state`, `message`, `keys_sent`, `keys_total`, `create_time`); ours is the
//!   new `EXPORT` to the target with our ranges. `success` ends it; `failed` or `cancelled` stops
//!   the tool with the job's message; a job still running after the `--timeout` stops it too
//!   (the job itself goes on: the source lists it).
//!
//! Before anything moves the cluster must pass `check` (every node agrees, no slot unowned or
//! moving), as redis-cli requires.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use shoal_cluster::SlotRange;
pub use shoal_cluster::plan::REBALANCE_THRESHOLD_PCT;
use shoal_cluster::plan::{self, Job, Primary};

use crate::cluster_tool::{NodeLine, Report, check, connect_for, nodes_of, reply_ok};
use crate::tool_client::{Client, Reply};

/// How long one migration job may run, by default, before the tool gives up on it (`--timeout`).
pub const JOB_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3600);
/// How often a job's progress is read from its source.
pub const JOB_POLL: Duration = Duration::from_millis(100);
/// How long a job just started may be missing from `CLUSTER GETSLOTMIGRATIONS` (or gone from it
/// once seen) before the slot map decides whether it moved the slots.
pub const JOB_LISTED_WAIT: Duration = Duration::from_secs(5);
/// How long the tools wait, after the jobs, for the node they were given to show the new owners.
pub const OWNERS_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a source may take to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `reshard` takes slots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sources {
    /// Every primary but the target.
    All,
    Ids(Vec<String>),
}

impl Sources {
    /// `--from` as redis-cli reads `--cluster-from`: ids separated by commas, or `all`.
    pub fn parse(s: &str) -> Sources {
        let ids: Vec<String> = s
            .split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect();
        if ids.iter().any(|x| x == "all") {
            Sources::All
        } else {
            Sources::Ids(ids)
        }
    }
}

/// `shoal cluster reshard`'s options.
#[derive(Debug, Clone)]
pub struct ReshardOptions {
    pub addr: String,
    pub from: Sources,
    pub to: String,
    pub slots: usize,
    pub password: Option<String>,
    pub job_timeout: Duration,
}

/// `shoal cluster rebalance`'s options.
#[derive(Debug, Clone)]
pub struct RebalanceOptions {
    pub addr: String,
    /// `<node-id prefix>=<weight>`.
    pub weights: Vec<String>,
    pub threshold_pct: f32,
    pub use_empty: bool,
    pub simulate: bool,
    pub password: Option<String>,
    pub job_timeout: Duration,
}

fn slot_list(n: &NodeLine) -> Vec<u16> {
    n.slots.iter().flat_map(|&(a, b)| a..=b).collect()
}

fn ranges_text(ranges: &[SlotRange]) -> String {
    ranges
        .iter()
        .map(|r| {
            if r.start == r.end {
                r.start.to_string()
            } else {
                format!("{}-{}", r.start, r.end)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The slot map of the cluster `addr` belongs to, refused unless `check` finds nothing wrong.
fn sane_view(addr: &str, password: Option<&str>, doing: &str) -> Result<Vec<NodeLine>, String> {
    let r = check(addr, password)?;
    if r.problems > 0 {
        return Err(format!(
            "{}\n*** Please fix your cluster problems before {doing}",
            r.lines.join("\n")
        ));
    }
    nodes_of(addr, password)
}

/// Moves `opts.slots` slots to `opts.to` from the sources, in proportion to what each owns.
/// `confirm` is asked whether to go ahead with the plan shown (the binary asks the user unless
/// `--yes`).
pub fn reshard(
    opts: &ReshardOptions,
    confirm: impl FnOnce() -> bool,
    mut report: impl Report,
) -> Result<(), String> {
    let pw = opts.password.as_deref();
    let view = sane_view(&opts.addr, pw, "resharding")?;
    let unknown = |id: &str| {
        format!("*** The specified node ({id}) is not known or not a master, please retry.")
    };
    let target = view
        .iter()
        .find(|n| n.id == opts.to && n.primary)
        .ok_or_else(|| unknown(&opts.to))?;
    let mut sources: Vec<&NodeLine> = Vec::new();
    match &opts.from {
        Sources::All => sources.extend(view.iter().filter(|n| n.primary && n.id != target.id)),
        Sources::Ids(ids) => {
            for id in ids {
                let n = view
                    .iter()
                    .find(|n| &n.id == id && n.primary)
                    .ok_or_else(|| unknown(id))?;
                if n.id == target.id {
                    report.say("*** It is not possible to use the target node as source node.");
                } else if !sources.iter().any(|s| s.id == n.id) {
                    sources.push(n);
                }
            }
        }
    }
    if sources.is_empty() {
        return Err("*** No source nodes given, operation aborted.".into());
    }
    let primaries: Vec<Primary> = sources
        .iter()
        .map(|n| Primary::new(n.id.clone(), slot_list(n)))
        .collect();
    let moves = plan::reshard(&primaries, &target.id, opts.slots);
    let jobs = plan::jobs(&moves);
    report.say(&format!("\nReady to move {} slots.", opts.slots));
    report.say("  Source nodes:");
    for s in &sources {
        report.say(&format!("    M: {} {}", s.id, s.addr));
    }
    report.say("  Destination node:");
    report.say(&format!("    M: {} {}", target.id, target.addr));
    report.say("  Resharding plan:");
    for j in &jobs {
        report.say(&format!(
            "    Moving {} slots ({}) from {}",
            j.slot_count(),
            ranges_text(&j.ranges),
            j.from
        ));
    }
    if jobs.is_empty() {
        return Err("*** The sources own no slot: nothing to move.".into());
    }
    if !confirm() {
        return Err("aborted: the plan was not confirmed".into());
    }
    run_jobs(&opts.addr, &view, &jobs, pw, opts.job_timeout, &mut report)
}

/// Balances the slots over the primaries by weight, unless every primary is within the
/// threshold of its share.
pub fn rebalance(opts: &RebalanceOptions, mut report: impl Report) -> Result<(), String> {
    let pw = opts.password.as_deref();
    let view = sane_view(&opts.addr, pw, "rebalancing")?;
    let mut primaries: Vec<Primary> = view
        .iter()
        .filter(|n| n.primary)
        .map(|n| Primary::new(n.id.clone(), slot_list(n)))
        .collect();
    for w in &opts.weights {
        let Some((name, value)) = w.split_once('=') else {
            return Err(format!("*** invalid input {w}"));
        };
        let weight: f32 = value
            .parse()
            .ok()
            .filter(|x: &f32| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("*** invalid input {w}"))?;
        let name = name.to_ascii_lowercase();
        let p = primaries
            .iter_mut()
            .find(|p| p.id.starts_with(&name) && !name.is_empty())
            .ok_or_else(|| format!("*** No such master node {name}"))?;
        p.weight = weight;
    }
    let plan = plan::rebalance(&primaries, opts.threshold_pct, opts.use_empty)?;
    if !plan.needed {
        report.say(&format!(
            "*** No rebalancing needed! All nodes are within the {:.2}% threshold.",
            opts.threshold_pct
        ));
        return Ok(());
    }
    report.say(&format!(
        ">>> Rebalancing across {} nodes. Total weight = {:.2}",
        plan.nodes, plan.total_weight
    ));
    let addr_of = |id: &str| {
        view.iter()
            .find(|n| n.id == id)
            .map_or_else(|| id.to_string(), |n| n.addr.clone())
    };
    let mut moves = Vec::new();
    for st in &plan.steps {
        report.say(&format!(
            "Moving {} slots from {} to {}",
            st.slots.len(),
            addr_of(&st.from),
            addr_of(&st.to)
        ));
        moves.extend(st.slots.iter().map(|&slot| plan::SlotMove {
            slot,
            from: st.from.clone(),
            to: st.to.clone(),
        }));
    }
    if opts.simulate {
        report.say("(simulated: nothing moved)");
        return Ok(());
    }
    let jobs = plan::jobs(&moves);
    run_jobs(&opts.addr, &view, &jobs, pw, opts.job_timeout, &mut report)
}

/// Runs the jobs one after another with a bar over their slots, then waits until the node at
/// `addr` shows every moved slot with its new owner.
fn run_jobs(
    addr: &str,
    view: &[NodeLine],
    jobs: &[Job],
    password: Option<&str>,
    timeout: Duration,
    report: &mut impl Report,
) -> Result<(), String> {
    let total: usize = jobs.iter().map(Job::slot_count).sum();
    let addr_of = |id: &str| -> Result<String, String> {
        view.iter()
            .find(|n| n.id == id)
            .map(|n| n.addr.clone())
            .ok_or_else(|| format!("{id} is not in the cluster"))
    };
    report.begin(
        &format!(">>> Moving {total} slots in {} job(s)", jobs.len()),
        Some(total as u64),
    );
    let mut done = 0usize;
    for (i, job) in jobs.iter().enumerate() {
        let (src, dst) = (addr_of(&job.from)?, addr_of(&job.to)?);
        report.say(&format!(
            ">>> Job {}/{}: {} slots ({}) from {src} to {dst}",
            i + 1,
            jobs.len(),
            job.slot_count(),
            ranges_text(&job.ranges)
        ));
        let r = run_job(&src, job, password, timeout, &mut |sent, keys| {
            // The job's slots count as done in proportion to its keys sent, so the rate and the
            // time left move during a long job, not only at its end.
            let within = (job.slot_count() as u64 * sent)
                .checked_div(keys)
                .unwrap_or(0)
                .min(job.slot_count() as u64);
            report.progress(
                done as u64 + within,
                &format!("job {}/{}: {sent}/{keys} keys", i + 1, jobs.len()),
            )
        });
        if let Err(e) = r {
            report.end("failed");
            return Err(e);
        }
        done += job.slot_count();
        report.progress(done as u64, &format!("job {}/{} done", i + 1, jobs.len()));
    }
    report.end(&format!("{total} slots moved"));
    let deadline = Instant::now() + OWNERS_SETTLE_TIMEOUT;
    while !jobs
        .iter()
        .all(|j| owns_all(addr, password, j).unwrap_or(false))
    {
        if Instant::now() >= deadline {
            return Err(format!(
                "the jobs succeeded but {addr} does not show the new owners after {OWNERS_SETTLE_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    report.say(&format!("[OK] {total} slots moved."));
    Ok(())
}

/// One entry of `CLUSTER GETSLOTMIGRATIONS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migration {
    pub name: String,
    pub operation: String,
    pub slots: Vec<u16>,
    pub source: String,
    pub target: String,
    pub state: String,
    pub message: String,
    pub keys_sent: u64,
    pub keys_total: u64,
}

fn string(r: &Reply) -> String {
    match r {
        Reply::Int(i) => i.to_string(),
        other => String::from_utf8_lossy(other.as_bytes().unwrap_or_default()).into_owned(),
    }
}

/// `0-99 200-299` (a lone slot may be written `7`) as ascending slots; `None` if malformed.
fn parse_slot_ranges(s: &str) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    for part in s.split([' ', ',']).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let r = SlotRange::new(a.parse().ok()?, b.parse().ok()?)?;
        out.extend(r.iter());
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Parses the reply of `CLUSTER GETSLOTMIGRATIONS`: an array of flat field/value arrays.
pub fn parse_migrations(r: Reply) -> Result<Vec<Migration>, String> {
    let entries = match r {
        Reply::Error(e) => return Err(e),
        Reply::Array(Some(v)) => v,
        other => return Err(format!("unexpected reply {other:?}")),
    };
    let mut out = Vec::new();
    for e in entries {
        let Reply::Array(Some(fields)) = e else {
            return Err("a migration that is not an array of fields".into());
        };
        let mut m = Migration::default();
        for kv in fields.chunks(2) {
            let [k, v] = kv else {
                return Err("a migration with a field and no value".into());
            };
            let num = || v.as_int().filter(|n| *n >= 0).map(|n| n as u64);
            match string(k).as_str() {
                "name" => m.name = string(v),
                "operation" => m.operation = string(v),
                "slot_ranges" => {
                    m.slots = parse_slot_ranges(&string(v))
                        .ok_or_else(|| format!("bad slot_ranges {:?}", string(v)))?
                }
                "source_node" => m.source = string(v),
                "target_node" => m.target = string(v),
                "state" => m.state = string(v),
                "message" => m.message = string(v),
                "keys_sent" => m.keys_sent = num().ok_or("bad keys_sent")?,
                "keys_total" => m.keys_total = num().ok_or("bad keys_total")?,
                _ => {}
            }
        }
        out.push(m);
    }
    Ok(out)
}

fn migrations(c: &mut Client, addr: &str) -> Result<Vec<Migration>, String> {
    let r = c
        .cmd(&["CLUSTER", "GETSLOTMIGRATIONS"])
        .map_err(|e| format!("{addr}: {e}"))?;
    parse_migrations(r).map_err(|e| format!("{addr}: {e}"))
}

/// Whether the node at `addr` shows every slot of `job` owned by its target.
fn owns_all(addr: &str, password: Option<&str>, job: &Job) -> Result<bool, String> {
    let view = nodes_of(addr, password)?;
    let Some(t) = view.iter().find(|n| n.id == job.to) else {
        return Ok(false);
    };
    let owned: HashSet<u16> = slot_list(t).into_iter().collect();
    Ok(job
        .ranges
        .iter()
        .flat_map(|r| r.iter())
        .all(|s| owned.contains(&s)))
}

/// Starts `job` on its source at `addr` and follows it until it ends or `timeout` passes;
/// `progress` gets (keys sent, keys in all) as the source reports them.
pub fn run_job(
    addr: &str,
    job: &Job,
    password: Option<&str>,
    timeout: Duration,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), String> {
    let mut c = connect_for(addr, password, REQUEST_TIMEOUT)?;
    // The jobs already listed are not ours.
    let before: HashSet<String> = migrations(&mut c, addr)?
        .into_iter()
        .map(|m| m.name)
        .collect();
    let mut args: Vec<String> = vec!["CLUSTER".into(), "MIGRATESLOTS".into(), "SLOTSRANGE".into()];
    for r in &job.ranges {
        args.push(r.start.to_string());
        args.push(r.end.to_string());
    }
    args.push("NODE".into());
    args.push(job.to.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    reply_ok(addr, c.cmd(&args))?;
    let slots: Vec<u16> = job.ranges.iter().flat_map(|r| r.iter()).collect();
    let started = Instant::now();
    // When our job was last listed (it may not be listed yet, or no longer once done).
    let mut listed: Option<(Instant, String)> = None;
    loop {
        let mine = migrations(&mut c, addr)?.into_iter().find(|m| {
            !before.contains(&m.name)
                && m.operation.eq_ignore_ascii_case("EXPORT")
                && m.target == job.to
                && m.slots == slots
        });
        match mine {
            Some(m) => {
                progress(m.keys_sent, m.keys_total);
                match m.state.as_str() {
                    "success" => return Ok(()),
                    "failed" | "cancelled" => {
                        return Err(format!(
                            "{addr}: slot migration {} {}: {}",
                            m.name,
                            m.state,
                            if m.message.is_empty() {
                                "(no message)"
                            } else {
                                &m.message
                            }
                        ));
                    }
                    _ => listed = Some((Instant::now(), m.name)),
                }
            }
            None => {
                let since = listed.as_ref().map_or(started, |(t, _)| *t);
                if since.elapsed() >= JOB_LISTED_WAIT {
                    // Done and no longer listed, or never started: the slot map tells.
                    if owns_all(addr, password, job)? {
                        return Ok(());
                    }
                    return Err(format!(
                        "{addr}: the migration of slots {} to {} is not listed by CLUSTER \
                         GETSLOTMIGRATIONS and the slots did not move",
                        ranges_text(&job.ranges),
                        job.to
                    ));
                }
            }
        }
        if started.elapsed() >= timeout {
            let name = listed.map(|(_, n)| n).unwrap_or_default();
            return Err(format!(
                "{addr}: slot migration {name} did not finish within {timeout:?} (it goes on: \
                 CLUSTER GETSLOTMIGRATIONS on {addr} shows it)"
            ));
        }
        std::thread::sleep(JOB_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::sync::{Arc, Mutex};

    const SOURCE: &str = "1111111111111111111111111111111111111111";
    const TARGET: &str = "2222222222222222222222222222222222222222";

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    /// A job as `CLUSTER GETSLOTMIGRATIONS` lists it (integers as bulk strings).
    fn entry(
        name: &str,
        ranges: &str,
        state: &str,
        message: &str,
        sent: u64,
        total: u64,
    ) -> String {
        let fields = [
            ("name", name.to_string()),
            ("operation", "EXPORT".into()),
            ("slot_ranges", ranges.into()),
            ("source_node", SOURCE.into()),
            ("target_node", TARGET.into()),
            ("state", state.into()),
            ("message", message.into()),
            ("keys_sent", sent.to_string()),
            ("keys_total", total.to_string()),
            ("create_time", "1700000000000".into()),
        ];
        let mut s = format!("*{}\r\n", 2 * fields.len());
        for (k, v) in fields {
            s += &bulk(k);
            s += &bulk(&v);
        }
        s
    }

    /// A source node speaking only what a job uses: GETSLOTMIGRATIONS lists an older job of its
    /// own and, once MIGRATESLOTS started ours, ours in the next state of `states` at each poll
    /// (the last one stays). Records every request.
    fn fake_source(
        states: Vec<(&'static str, &'static str, u64, u64)>,
        refuse: Option<&'static str>,
    ) -> (String, Arc<Mutex<Vec<Vec<String>>>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let old = entry(&"a".repeat(40), "5000-5009", "success", "", 3, 3);
            let (mut started, mut polls) = (false, 0usize);
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let n: usize = line.trim()[1..].parse().unwrap();
                    let mut args = Vec::new();
                    for _ in 0..n {
                        let mut len = String::new();
                        r.read_line(&mut len).unwrap();
                        let mut arg = String::new();
                        r.read_line(&mut arg).unwrap();
                        args.push(arg.trim_end().to_string());
                    }
                    log.lock().unwrap().push(args.clone());
                    let reply = match args[1].as_str() {
                        "MIGRATESLOTS" => match refuse {
                            Some(e) => format!("-{e}\r\n"),
                            None => {
                                started = true;
                                "+OK\r\n".to_string()
                            }
                        },
                        "GETSLOTMIGRATIONS" if started => {
                            let (state, msg, sent, total) = states[polls.min(states.len() - 1)];
                            polls += 1;
                            let ours =
                                entry(&"b".repeat(40), "0-99 200-299", state, msg, sent, total);
                            format!("*2\r\n{old}{ours}")
                        }
                        "GETSLOTMIGRATIONS" => format!("*1\r\n{old}"),
                        _ => "-ERR unknown\r\n".into(),
                    };
                    w.write_all(reply.as_bytes()).unwrap();
                }
            }
        });
        (addr, seen)
    }

    fn job() -> Job {
        Job {
            from: SOURCE.into(),
            to: TARGET.into(),
            ranges: vec![
                SlotRange::new(0, 99).unwrap(),
                SlotRange::new(200, 299).unwrap(),
            ],
        }
    }

    #[test]
    fn a_job_is_started_on_its_source_and_followed_to_success() {
        let (addr, seen) = fake_source(
            vec![
                ("running", "", 0, 10),
                ("running", "", 6, 10),
                ("success", "", 10, 10),
            ],
            None,
        );
        let mut progress = Vec::new();
        run_job(&addr, &job(), None, Duration::from_secs(10), &mut |s, t| {
            progress.push((s, t))
        })
        .unwrap();
        assert_eq!(progress, vec![(0, 10), (6, 10), (10, 10)]);
        let seen = seen.lock().unwrap();
        let start = seen.iter().find(|a| a[1] == "MIGRATESLOTS").unwrap();
        assert_eq!(
            start.join(" "),
            format!("CLUSTER MIGRATESLOTS SLOTSRANGE 0 99 200 299 NODE {TARGET}")
        );
    }

    #[test]
    fn a_failed_or_refused_job_stops_with_its_message() {
        let (addr, _) = fake_source(
            vec![
                ("running", "", 1, 10),
                ("failed", "target went away", 1, 10),
            ],
            None,
        );
        let e = run_job(&addr, &job(), None, Duration::from_secs(10), &mut |_, _| {}).unwrap_err();
        assert!(e.contains("failed: target went away"), "{e}");
        let (addr, _) = fake_source(vec![("cancelled", "", 0, 0)], None);
        let e = run_job(&addr, &job(), None, Duration::from_secs(10), &mut |_, _| {}).unwrap_err();
        assert!(e.contains("cancelled: (no message)"), "{e}");
        let (addr, _) = fake_source(vec![], Some("ERR Slot 0 is already migrating"));
        let e = run_job(&addr, &job(), None, Duration::from_secs(10), &mut |_, _| {}).unwrap_err();
        assert!(e.ends_with("ERR Slot 0 is already migrating"), "{e}");
    }

    #[test]
    fn a_job_running_past_its_timeout_stops_the_tool() {
        let (addr, _) = fake_source(vec![("running", "", 1, 1000)], None);
        let t = Instant::now();
        let e = run_job(
            &addr,
            &job(),
            None,
            Duration::from_millis(300),
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(e.contains("did not finish within"), "{e}");
        assert!(e.contains(&"b".repeat(40)), "names the job: {e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn migrations_parse_and_sources_read_as_redis_cli_reads_them() {
        assert_eq!(parse_slot_ranges("0-2 7"), Some(vec![0, 1, 2, 7]));
        assert_eq!(parse_slot_ranges("5-1"), None);
        assert_eq!(parse_slot_ranges("16384"), None);
        let r = Reply::Array(Some(vec![Reply::Array(Some(vec![
            Reply::Bulk(Some(b"state".to_vec())),
            Reply::Bulk(Some(b"running".to_vec())),
            Reply::Bulk(Some(b"keys_sent".to_vec())),
            Reply::Int(4),
        ]))]));
        let m = parse_migrations(r).unwrap();
        assert_eq!((m[0].state.as_str(), m[0].keys_sent), ("running", 4));
        assert!(parse_migrations(Reply::Error("ERR unknown subcommand".into())).is_err());
        assert_eq!(
            Sources::parse("a,b"),
            Sources::Ids(vec!["a".into(), "b".into()])
        );
        assert_eq!(Sources::parse("a,all"), Sources::All);
        assert_eq!(ranges_text(&job().ranges), "0-99,200-299");
    }
}
