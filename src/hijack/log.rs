//! The hijack log: one JSON object per line, size-bounded by rotation to `<file>.1`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::warn;

/// An append-only JSON-lines file that is rotated once it reaches `max_bytes`, so it never
/// uses more than about twice that on disk.
pub struct HijackLog {
    /// The live file.
    path: PathBuf,
    /// Rotation threshold.
    max_bytes: u64,
    /// The open file and its size; `None` until first written or after an error.
    file: Mutex<Option<(File, u64)>>,
}

impl HijackLog {
    /// A log at `path`; the file is created on first write.
    pub fn new(path: &Path, max_bytes: u64) -> HijackLog {
        HijackLog {
            path: path.to_path_buf(),
            max_bytes,
            file: Mutex::new(None),
        }
    }

    /// Appends `entry` as one line. Errors are logged, not returned: losing a log line must
    /// never stop an answer. (Findings are rare and lines small, so the write is done in
    /// place rather than on a blocking thread.)
    pub fn write(&self, entry: &impl Serialize) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = self.append(&mut guard, &line) {
            warn!(path = %self.path.display(), error = %e, "cannot write the hijack log");
            *guard = None;
        }
    }

    fn append(&self, slot: &mut Option<(File, u64)>, line: &[u8]) -> io::Result<()> {
        if slot.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let size = file.metadata()?.len();
            *slot = Some((file, size));
        }
        let (_, size) = slot.as_ref().expect("just opened");
        if *size > 0 && size + line.len() as u64 > self.max_bytes {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            *slot = None;
            std::fs::rename(&self.path, rotated)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            *slot = Some((file, 0));
        }
        let (file, size) = slot.as_mut().expect("open");
        file.write_all(line)?;
        *size += line.len() as u64;
        Ok(())
    }
}

/// `now` as an RFC 3339 UTC timestamp with milliseconds.
pub fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_392_000_123); // 2026-11-23
        assert_eq!(timestamp(t), "2026-11-23T00:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn log_rotates_at_its_size_bound() {
        let dir = std::env::temp_dir().join(format!("dnsward-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hijack.jsonl");
        let log = HijackLog::new(&path, 100);
        for i in 0..10 {
            log.write(&serde_json::json!({ "n": i, "pad": "xxxxxxxxxxxxxxxxxxxx" }));
        }
        let live = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.join("hijack.jsonl.1")).unwrap();
        assert!(live.len() <= 100 && old.len() <= 100, "{live:?} {old:?}");
        assert!(live.contains("\"n\":9"), "{live:?}");
        for line in live.lines().chain(old.lines()) {
            let _: serde_json::Value = serde_json::from_str(line).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
