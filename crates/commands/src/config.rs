//! Configuration parameters as data: name, default, whether `CONFIG SET` may change it at run time,
//! and how a value is checked and written canonically. Serves `CONFIG GET|SET|RESETSTAT`, the TOML
//! config file and the command line. Values the request path reads on every command (maxmemory,
//! policy, password) are mirrored into [`crate::state::Hot`] when set.

use std::collections::BTreeMap;

use shoal_keyspace::Policy;

/// How a parameter's value is checked and normalised.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Bytes with Redis's suffixes (k, kb, m, mb, g, gb); stored as a plain integer.
    Memory,
    /// Integer within bounds.
    Int(i64, i64),
    /// `yes` / `no`.
    Bool,
    /// One of a fixed set (case-insensitive; stored lowercase).
    Enum(&'static [&'static str]),
    /// Any string.
    Str,
    /// `client-output-buffer-limit`: classes with hard, soft, soft-seconds.
    OutputBufferLimit,
}

#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub alias: Option<&'static str>,
    pub default: &'static str,
    pub kind: Kind,
    /// `CONFIG SET` may change it while running.
    pub mutable: bool,
}

/// In Redis's order (its error message lists them so), then shoal's own.
const POLICIES: &[&str] = &[
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "noeviction",
    "allkeys-tinylfu",
];

const fn p(name: &'static str, default: &'static str, kind: Kind, mutable: bool) -> Param {
    Param {
        name,
        alias: None,
        default,
        kind,
        mutable,
    }
}

/// Every parameter shoal knows. Sorted by name for CONFIG GET output stability.
pub static PARAMS: &[Param] = &[
    p("ack-timeout-ms", "1000", Kind::Int(1, i64::MAX), true),
    p("appendonly", "no", Kind::Bool, false),
    p("bind", "127.0.0.1", Kind::Str, false),
    p(
        "client-output-buffer-limit",
        "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
        Kind::OutputBufferLimit,
        true,
    ),
    p(
        "client-query-buffer-limit",
        "1073741824",
        Kind::Memory,
        true,
    ),
    p("databases", "16", Kind::Int(1, 1 << 16), false),
    p("dbfilename", "dump.shoal", Kind::Str, true),
    p("dir", ".", Kind::Str, true),
    Param {
        alias: Some("hash-max-ziplist-entries"),
        ..p(
            "hash-max-listpack-entries",
            "512",
            Kind::Int(0, i64::MAX),
            true,
        )
    },
    Param {
        alias: Some("hash-max-ziplist-value"),
        ..p(
            "hash-max-listpack-value",
            "64",
            Kind::Int(0, i64::MAX),
            true,
        )
    },
    // Redis accepts any int and clamps it to 1..=500 (see `normalise`).
    p("hz", "10", Kind::Int(0, i32::MAX as i64), true),
    p(
        "latency-monitor-threshold",
        "0",
        Kind::Int(0, i64::MAX),
        true,
    ),
    p("lfu-decay-time", "1", Kind::Int(0, i64::MAX), true),
    p("lfu-log-factor", "10", Kind::Int(0, i64::MAX), true),
    p("list-compress-depth", "0", Kind::Int(0, i64::MAX), true),
    Param {
        alias: Some("list-max-ziplist-size"),
        ..p(
            "list-max-listpack-size",
            "-2",
            Kind::Int(-5, i64::MAX),
            true,
        )
    },
    p(
        "loglevel",
        "notice",
        Kind::Enum(&["debug", "verbose", "notice", "warning"]),
        true,
    ),
    p("masterauth", "", Kind::Str, true),
    p("masteruser", "", Kind::Str, true),
    p("maxclients", "10000", Kind::Int(1, 1 << 30), true),
    p("maxmemory", "0", Kind::Memory, true),
    p(
        "maxmemory-policy",
        "allkeys-tinylfu",
        Kind::Enum(POLICIES),
        true,
    ),
    p("maxmemory-samples", "5", Kind::Int(1, 64), true),
    p("min-replicas-ack", "1", Kind::Int(0, 1 << 20), true),
    p("port", "6379", Kind::Int(0, 65535), false),
    p("proto-max-bulk-len", "536870912", Kind::Memory, true),
    p("repl-backlog-size", "67108864", Kind::Memory, true),
    p("replica-accept-empty-primary", "no", Kind::Bool, true),
    Param {
        alias: Some("slave-read-only"),
        ..p("replica-read-only", "yes", Kind::Bool, true)
    },
    Param {
        alias: Some("slaveof"),
        ..p("replicaof", "", Kind::Str, false)
    },
    p("requirepass", "", Kind::Str, true),
    p("save", "", Kind::Str, true),
    p(
        "set-max-intset-entries",
        "512",
        Kind::Int(0, i64::MAX),
        true,
    ),
    p(
        "slowlog-log-slower-than",
        "10000",
        Kind::Int(-1, i64::MAX),
        true,
    ),
    p("slowlog-max-len", "128", Kind::Int(0, i64::MAX), true),
    p("tcp-keepalive", "300", Kind::Int(0, i32::MAX as i64), true),
    p("threads", "0", Kind::Int(0, 1024), false),
    p("timeout", "0", Kind::Int(0, i32::MAX as i64), true),
    p(
        "write-strategy",
        "async",
        Kind::Enum(&["async", "sync"]),
        true,
    ),
    Param {
        alias: Some("zset-max-ziplist-entries"),
        ..p(
            "zset-max-listpack-entries",
            "128",
            Kind::Int(0, i64::MAX),
            true,
        )
    },
    Param {
        alias: Some("zset-max-ziplist-value"),
        ..p(
            "zset-max-listpack-value",
            "64",
            Kind::Int(0, i64::MAX),
            true,
        )
    },
];

/// Redis's `memtoull`: an integer with an optional unit (b, k, kb, m, mb, g, gb; case-insensitive).
pub fn parse_memory(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let mul: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    if num.is_empty() {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// Parsed `client-output-buffer-limit` class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OutputLimit {
    pub hard_bytes: u64,
    pub soft_bytes: u64,
    pub soft_seconds: u64,
}

/// Parses `class hard soft secs [class hard soft secs ...]`, merging into `current` (Redis allows
/// setting one class at a time). Returns the canonical string.
pub fn parse_output_limits(value: &str, current: &str) -> Result<String, String> {
    let mut classes = BTreeMap::new();
    for (i, chunk) in current
        .split_whitespace()
        .collect::<Vec<_>>()
        .chunks(4)
        .enumerate()
    {
        let _ = i;
        if chunk.len() == 4 {
            classes.insert(
                chunk[0].to_string(),
                [chunk[1], chunk[2], chunk[3]].map(String::from),
            );
        }
    }
    let words: Vec<&str> = value.split_whitespace().collect();
    if words.is_empty() || words.len() % 4 != 0 {
        return Err("Wrong number of arguments in buffer limit configuration.".into());
    }
    for c in words.chunks(4) {
        let class = match c[0].to_ascii_lowercase().as_str() {
            "normal" => "normal",
            "slave" | "replica" => "slave",
            "pubsub" => "pubsub",
            _ => {
                return Err("Invalid client class specified in buffer limit configuration.".into());
            }
        };
        let hard = parse_memory(c[1]);
        let soft = parse_memory(c[2]);
        let secs = c[3].parse::<u64>().ok();
        let (Some(h), Some(s), Some(t)) = (hard, soft, secs) else {
            return Err(
                "Error in hard, soft or soft_seconds setting in buffer limit configuration.".into(),
            );
        };
        classes.insert(
            class.to_string(),
            [h.to_string(), s.to_string(), t.to_string()],
        );
    }
    Ok(["normal", "slave", "pubsub"]
        .iter()
        .filter_map(|c| {
            classes
                .get(*c)
                .map(|v| format!("{c} {} {} {}", v[0], v[1], v[2]))
        })
        .collect::<Vec<_>>()
        .join(" "))
}

/// One class's limits from a canonical `client-output-buffer-limit` string.
pub fn output_limit(canonical: &str, class: &str) -> OutputLimit {
    let w: Vec<&str> = canonical.split_whitespace().collect();
    for c in w.chunks(4) {
        if c.len() == 4 && c[0] == class {
            return OutputLimit {
                hard_bytes: c[1].parse().unwrap_or(0),
                soft_bytes: c[2].parse().unwrap_or(0),
                soft_seconds: c[3].parse().unwrap_or(0),
            };
        }
    }
    OutputLimit::default()
}

pub fn find(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| {
        p.name.eq_ignore_ascii_case(name) || p.alias.is_some_and(|a| a.eq_ignore_ascii_case(name))
    })
}

/// Checks a value for a parameter and returns its canonical form, or the reason it is invalid.
pub fn normalise(param: &Param, value: &str, current: &str) -> Result<String, String> {
    match param.kind {
        Kind::Memory => parse_memory(value)
            .map(|v| v.to_string())
            .ok_or_else(|| "argument must be a memory value".to_string()),
        Kind::Int(lo, hi) => match value.parse::<i64>() {
            Ok(v) if v >= lo && v <= hi && param.name == "hz" => Ok(v.clamp(1, 500).to_string()),
            Ok(v) if v >= lo && v <= hi => Ok(v.to_string()),
            Ok(_) => Err(format!("argument must be between {lo} and {hi} inclusive")),
            Err(_) => Err("argument couldn't be parsed into an integer".into()),
        },
        Kind::Bool => match value.to_ascii_lowercase().as_str() {
            "yes" => Ok("yes".into()),
            "no" => Ok("no".into()),
            _ => Err("argument must be 'yes' or 'no'".into()),
        },
        Kind::Enum(allowed) => {
            let v = value.to_ascii_lowercase();
            if allowed.contains(&v.as_str()) {
                Ok(v)
            } else {
                Err("argument(s) must be one of the following: ".to_string() + &allowed.join(", "))
            }
        }
        Kind::Str => Ok(value.to_string()),
        Kind::OutputBufferLimit => parse_output_limits(value, current),
    }
}

/// The current configuration values, canonical strings by parameter name.
#[derive(Debug, Clone)]
pub struct Values {
    map: BTreeMap<&'static str, String>,
}

impl Default for Values {
    fn default() -> Self {
        Values {
            map: PARAMS
                .iter()
                .map(|p| (p.name, p.default.to_string()))
                .collect(),
        }
    }
}

impl Values {
    pub fn get(&self, name: &str) -> &str {
        find(name)
            .and_then(|p| self.map.get(p.name))
            .map_or("", |s| s.as_str())
    }

    pub fn get_u64(&self, name: &str) -> u64 {
        self.get(name).parse().unwrap_or(0)
    }

    /// Sets a value without the mutability check (start-up: file and flags).
    pub fn set_initial(&mut self, name: &str, value: &str) -> Result<(), String> {
        let param =
            find(name).ok_or_else(|| format!("unknown configuration parameter '{name}'"))?;
        let v = normalise(param, value, self.get(param.name))
            .map_err(|e| format!("invalid value for '{name}': {e}"))?;
        self.map.insert(param.name, v);
        Ok(())
    }

    pub fn set(&mut self, param: &'static Param, canonical: String) {
        self.map.insert(param.name, canonical);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.map.iter().map(|(k, v)| (*k, v.as_str()))
    }

    pub fn encoding_limits(&self) -> shoal_keyspace::EncodingLimits {
        shoal_keyspace::EncodingLimits {
            hash_max_listpack_entries: self.get_u64("hash-max-listpack-entries") as usize,
            hash_max_listpack_value: self.get_u64("hash-max-listpack-value") as usize,
            list_max_listpack_size: self.get("list-max-listpack-size").parse().unwrap_or(-2),
            set_max_intset_entries: self.get_u64("set-max-intset-entries") as usize,
            zset_max_listpack_entries: self.get_u64("zset-max-listpack-entries") as usize,
            zset_max_listpack_value: self.get_u64("zset-max-listpack-value") as usize,
        }
    }

    pub fn policy(&self) -> Policy {
        Policy::parse(self.get("maxmemory-policy")).unwrap_or(Policy::AllKeysTinyLfu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units_like_redis() {
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("1kb"), Some(1024));
        assert_eq!(parse_memory("1K"), Some(1000));
        assert_eq!(parse_memory("2GB"), Some(2 << 30));
        assert_eq!(parse_memory("1tb"), None);
        assert_eq!(parse_memory("mb"), None);
    }

    #[test]
    fn output_limits_merge_per_class() {
        let d = find("client-output-buffer-limit").unwrap().default;
        let v = parse_output_limits("normal 1mb 512kb 10", d).unwrap();
        assert_eq!(
            v,
            "normal 1048576 524288 10 slave 268435456 67108864 60 pubsub 33554432 8388608 60"
        );
        assert_eq!(output_limit(&v, "normal").hard_bytes, 1 << 20);
        assert!(parse_output_limits("bogus 1 2 3", d).is_err());
    }

    #[test]
    fn params_are_sorted_and_defaults_valid() {
        for w in PARAMS.windows(2) {
            assert!(w[0].name < w[1].name);
        }
        for p in PARAMS {
            normalise(p, p.default, p.default).unwrap();
        }
    }
}
