//! Per-node wall clocks for clock jumps (`--faults clock`), by libfaketime.
//!
//! Each node is started under `LD_PRELOAD=libfaketime.so.1` with its own timestamp file
//! holding a relative offset in seconds (`+0`, `-17`, `+30`). `FAKETIME_NO_CACHE=1` makes the
//! library read the file on every wall-clock call, so rewriting it steps that one process's
//! clock at once (about 1.4 µs per `clock_gettime(CLOCK_REALTIME)` here, against 0.06 µs).
//! `FAKETIME_DONT_FAKE_MONOTONIC=1` leaves `CLOCK_MONOTONIC` alone, so only the wall clock
//! jumps: shoal's HLC versions, TTLs and wall-clock timeouts see the step; tokio's timers and
//! the write leases (a TSC counter calibrated against `Instant`) do not.
//!
//! Why this and not something lighter: stepping the machine's clock would disturb every other
//! process on it (and the suite's own history clock), Linux time namespaces offset only the
//! monotonic and boot clocks, and shoal has no hook to offset its own clock.
//!
//! libfaketime also creates a POSIX shared-memory pair per process (`/dev/shm/faketime_shm_<pid>`,
//! `/dev/shm/sem.faketime_sem_<pid>`) and removes it only on a clean exit. The nemesis kills
//! nodes with SIGKILL, so the harness removes the pair of every node it reaps; a pair left
//! behind makes a later process that gets the same pid fail at start ("shm_open failed").

use std::path::{Path, PathBuf};

/// Where Debian's `libfaketime` package (pulled in by `faketime`) puts the library.
pub const DEFAULT_PATHS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
];

/// What to tell someone whose machine lacks the library.
pub const INSTALL_HINT: &str = concat!(
    "install libfaketime (Debian/Ubuntu: `apt-get install -y faketime`), ",
    "or pass --libfaketime PATH"
);

/// The libfaketime to preload: `given` if it exists, else the first of [`DEFAULT_PATHS`] that
/// does.
pub fn find(given: Option<&Path>) -> Result<PathBuf, String> {
    match given {
        Some(p) if p.is_file() => Ok(p.to_path_buf()),
        Some(p) => Err(format!(
            "clock jumps need libfaketime, and there is none at {}: {INSTALL_HINT}",
            p.display()
        )),
        None => DEFAULT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "clock jumps need libfaketime, not found at {}: {INSTALL_HINT}",
                    DEFAULT_PATHS.join(" or ")
                )
            }),
    }
}

/// The environment a node runs with: the library, its own timestamp file, no caching (a
/// rewrite takes effect on the next call), the monotonic clocks untouched.
pub fn env(lib: &Path, timestamp_file: &Path) -> Vec<(String, String)> {
    [
        ("LD_PRELOAD", lib.to_string_lossy().into_owned()),
        (
            "FAKETIME_TIMESTAMP_FILE",
            timestamp_file.to_string_lossy().into_owned(),
        ),
        ("FAKETIME_NO_CACHE", "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The timestamp file's text for an offset: libfaketime's relative form, in seconds.
pub fn offset_text(offset_s: i64) -> String {
    format!("{offset_s:+}\n")
}

/// Writes a node's offset. A temporary file renamed over the old one, so the node (which reads
/// the file on every wall-clock call) never reads a half-written one.
pub fn write_offset(timestamp_file: &Path, offset_s: i64) -> Result<(), String> {
    let tmp = timestamp_file.with_extension("tmp");
    std::fs::write(&tmp, offset_text(offset_s))
        .and_then(|_| std::fs::rename(&tmp, timestamp_file))
        .map_err(|e| format!("{}: {e}", timestamp_file.display()))
}

fn shm_files(pid: u32) -> [PathBuf; 2] {
    [
        PathBuf::from(format!("/dev/shm/faketime_shm_{pid}")),
        PathBuf::from(format!("/dev/shm/sem.faketime_sem_{pid}")),
    ]
}

/// Removes the shared-memory pair of a reaped process (see the module header).
pub fn remove_shm(pid: u32) {
    for f in shm_files(pid) {
        let _ = std::fs::remove_file(f);
    }
}

/// Removes libfaketime's shared-memory pairs whose process is gone (left by nodes of a run
/// that was itself killed); returns how many processes' pairs went.
pub fn remove_stale_shm() -> usize {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return 0;
    };
    let mut removed = 0;
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("faketime_shm_")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove_shm(pid);
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_written_in_libfaketimes_relative_form() {
        assert_eq!(offset_text(0), "+0\n");
        assert_eq!(offset_text(17), "+17\n");
        assert_eq!(offset_text(-30), "-30\n");
    }

    #[test]
    fn a_missing_library_says_how_to_install_it() {
        let e = find(Some(Path::new("/nonexistent/libfaketime.so.1"))).unwrap_err();
        assert!(e.contains("apt-get install -y faketime"), "{e}");
    }
}
