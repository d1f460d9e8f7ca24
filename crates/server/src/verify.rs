//! `shoal verify HOST:PORT [--repair]`: compares a primary with each of its replicas slot by slot
//! (`SLOTDIGEST`), lists the keys that differ (`SLOTKEYS`, then values where versions agree), and
//! with `--repair` makes each replica hold the primary's state for them (`DUMP` + `PEXPIRETIME` on
//! the primary, `REPAIRPUT`/`REPAIRDEL` on the replica). In primary–replica mode the primary is
//! authoritative: a replica's diverging write loses even if its version is newer.
//!
//! On a member of an active-active group (`active-peers` set) the node is compared with each of
//! its peers instead, and `--repair` copies the newer version of a differing key onto the member
//! that holds the older one (either way).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cluster_tool::Report as Progress;
use crate::tool_client::{Client, Reply};

/// Timeout of each request to a node.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Slots compared per SLOTDIGEST request.
pub const DIGEST_BATCH_SLOTS: u16 = 1024;

pub struct Options {
    pub addr: String,
    pub password: Option<String>,
    pub repair: bool,
    pub db: usize,
}

/// One differing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub replica: String,
    pub slot: u16,
    pub key: Vec<u8>,
    pub primary_version: Option<u64>,
    pub replica_version: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub replicas: usize,
    pub differences: Vec<Difference>,
    pub repaired: usize,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn connect(addr: &str, opts: &Options) -> Result<Client, String> {
    let mut c = Client::connect(addr, REQUEST_TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    if let Some(p) = &opts.password {
        match c.cmd(&["AUTH", p]).map_err(err)? {
            Reply::Status(_) => {}
            other => return Err(format!("{addr}: AUTH failed: {other:?}")),
        }
    }
    if opts.db != 0 {
        c.cmd(&["SELECT", &opts.db.to_string()]).map_err(err)?;
    }
    Ok(c)
}

fn digests(c: &mut Client) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(shoal_keyspace::SLOTS);
    let mut start = 0u16;
    while (start as usize) < shoal_keyspace::SLOTS {
        let end = (start + DIGEST_BATCH_SLOTS - 1).min(shoal_keyspace::SLOTS as u16 - 1);
        let r = c
            .cmd(&["SLOTDIGEST", &start.to_string(), &end.to_string()])
            .map_err(err)?;
        let items = r
            .into_array()
            .ok_or_else(|| format!("{}: SLOTDIGEST failed", c.addr))?;
        for it in items {
            // Digests are full u64s (half of them above i64::MAX): parse them as such.
            let d = it
                .as_bytes()
                .and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok())
                .ok_or_else(|| format!("{}: bad SLOTDIGEST reply", c.addr))?;
            out.push(d);
        }
        start = end + 1;
    }
    Ok(out)
}

fn slot_keys(c: &mut Client, slot: u16) -> Result<BTreeMap<Vec<u8>, u64>, String> {
    let items = c
        .cmd(&["SLOTKEYS", &slot.to_string()])
        .map_err(err)?
        .into_array()
        .ok_or_else(|| format!("{}: SLOTKEYS failed", c.addr))?;
    let mut m = BTreeMap::new();
    for pair in items.chunks(2) {
        if let [k, v] = pair {
            m.insert(
                k.as_bytes().unwrap_or_default().to_vec(),
                v.as_int().unwrap_or(0) as u64,
            );
        }
    }
    Ok(m)
}

fn dump(c: &mut Client, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
    match c.call(&[b"DUMP", key]).map_err(err)? {
        Reply::Bulk(b) => Ok(b),
        other => Err(format!("DUMP failed: {other:?}")),
    }
}

/// Runs the verification; tells `out` each differing key (`say`) and the progress of each
/// replica's check (a step per replica: the differing slots checked, the keys found so far).
pub fn run(opts: &Options, out: &mut dyn Progress) -> Result<Report, String> {
    let mut primary = connect(&opts.addr, opts)?;
    let role = primary
        .cmd(&["ROLE"])
        .map_err(err)?
        .into_array()
        .ok_or("ROLE failed")?;
    if role.first().and_then(|r| r.as_bytes()) != Some(&b"master"[..]) {
        return Err(format!("{} is not a primary", opts.addr));
    }
    let peers = match primary
        .cmd(&["CONFIG", "GET", "active-peers"])
        .map_err(err)?
        .into_array()
        .and_then(|v| v.get(1).and_then(|p| p.as_bytes().map(|b| b.to_vec())))
    {
        Some(p) => String::from_utf8_lossy(&p).into_owned(),
        None => String::new(),
    };
    let active = !peers.trim().is_empty();
    let replicas: Vec<String> = if active {
        peers.split_whitespace().map(str::to_string).collect()
    } else {
        role.get(2)
            .cloned()
            .and_then(|r| r.into_array())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                let v = r.into_array()?;
                let ip = String::from_utf8_lossy(v.first()?.as_bytes()?).into_owned();
                let port = String::from_utf8_lossy(v.get(1)?.as_bytes()?).into_owned();
                Some(format!("{ip}:{port}"))
            })
            .collect()
    };
    let mut report = Report {
        replicas: replicas.len(),
        ..Report::default()
    };
    let primary_digests = digests(&mut primary)?;
    for addr in &replicas {
        let mut replica = connect(addr, opts)?;
        let replica_digests = digests(&mut replica)?;
        let slots: Vec<u16> = (0..shoal_keyspace::SLOTS as u16)
            .filter(|&s| primary_digests[s as usize] != replica_digests[s as usize])
            .collect();
        let found_before = report.differences.len();
        out.begin(
            &format!(
                "{addr}: checking the {} of {} slots that differ",
                slots.len(),
                shoal_keyspace::SLOTS
            ),
            Some(slots.len() as u64),
        );
        for (n, &slot) in slots.iter().enumerate() {
            out.progress(
                n as u64,
                &format!(
                    "{} differing key(s)",
                    report.differences.len() - found_before
                ),
            );
            let p = slot_keys(&mut primary, slot)?;
            let r = slot_keys(&mut replica, slot)?;
            let mut keys: Vec<&Vec<u8>> = p.keys().chain(r.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let (pv, rv) = (p.get(key).copied(), r.get(key).copied());
                let differs = pv != rv || dump(&mut primary, key)? != dump(&mut replica, key)?;
                if !differs {
                    continue;
                }
                out.say(&format!(
                    "{addr} slot {slot} key {:?}: primary version {}, replica version {}",
                    String::from_utf8_lossy(key),
                    pv.map_or("missing".into(), |v| v.to_string()),
                    rv.map_or("missing".into(), |v| v.to_string()),
                ));
                report.differences.push(Difference {
                    replica: addr.clone(),
                    slot,
                    key: key.clone(),
                    primary_version: pv,
                    replica_version: rv,
                });
                if opts.repair {
                    // Active-active: the newer version wins, wherever it is.
                    if active && rv > pv {
                        repair_key(&mut replica, &mut primary, key, rv)?;
                    } else {
                        repair_key(&mut primary, &mut replica, key, pv)?;
                    }
                    report.repaired += 1;
                }
            }
        }
        out.progress(
            slots.len() as u64,
            &format!(
                "{} differing key(s)",
                report.differences.len() - found_before
            ),
        );
        out.end(&format!(
            "{} slot(s) checked, {} differing key(s)",
            slots.len(),
            report.differences.len() - found_before
        ));
    }
    Ok(report)
}

fn repair_key(
    primary: &mut Client,
    replica: &mut Client,
    key: &[u8],
    version: Option<u64>,
) -> Result<(), String> {
    let payload = match version {
        Some(_) => dump(primary, key)?,
        None => None,
    };
    match (payload, version) {
        (Some(payload), Some(v)) => {
            let at = primary
                .call(&[b"PEXPIRETIME", key])
                .map_err(err)?
                .as_int()
                .unwrap_or(-1);
            let expire = if at < 0 {
                "-1".to_string()
            } else {
                at.to_string()
            };
            let r = replica
                .call(&[
                    b"REPAIRPUT",
                    key,
                    v.to_string().as_bytes(),
                    expire.as_bytes(),
                    &payload,
                ])
                .map_err(err)?;
            if let Reply::Error(e) = r {
                return Err(format!("REPAIRPUT failed: {e}"));
            }
        }
        _ => {
            replica.call(&[b"REPAIRDEL", key]).map_err(err)?;
        }
    }
    Ok(())
}
