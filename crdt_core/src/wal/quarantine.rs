//! The quarantine: damaged bytes kept aside for forensics, one directory per recovery that found damage,
//! with a JSON report of what was damaged, what was skipped and what was recovered after it.
//!
//! `quarantine/<UTC time>/report.json` plus one copy per damaged region (`<file>@<offset>+<length>.bin`)
//! and per rejected snapshot. The host marks an entry acknowledged by writing `accepted.json` into it; an
//! entry without one is an unacknowledged recovery (the node is not ready). The directory is bounded: past
//! the entry or byte limit the oldest entries go first (acknowledged ones whole, unacknowledged ones keep
//! their report, so the node stays not ready until an operator has seen it).
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use super::storage::Storage;
use super::Recovery;

/// The quarantine directory inside the log directory.
pub const DIR: &str = "quarantine";
/// The report of one entry.
pub const REPORT: &str = "report.json";
/// Written by the host when an operator acknowledged the entry.
pub const ACCEPTED: &str = "accepted.json";

/// Bounds of the quarantine directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Entries kept.
    pub max_entries: usize,
    /// Bytes of copies kept (also the most one entry copies).
    pub max_bytes: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds { max_entries: 16, max_bytes: 256 << 20 }
    }
}

/// Bytes to copy aside: a region of a segment or a whole snapshot.
#[derive(Debug)]
pub(crate) struct Copy {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// `YYYYMMDDTHHMMSS.mmmZ` for a Unix time in milliseconds (UTC; sorts by time).
pub(crate) fn stamp(ms: u64) -> String {
    let (days, rem) = (ms / 86_400_000, ms % 86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}{m:02}{d:02}T{h:02}{mi:02}{s:02}.{milli:03}Z")
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn opt_str(s: &Option<String>) -> String {
    s.as_deref().map_or_else(|| "null".to_owned(), json_str)
}

/// The report as JSON (one object; keys documented in the README's recovery section).
pub(crate) fn report_json(rec: &Recovery, entry: &str, when_ms: u64, policy: &str, dir: &str) -> String {
    let damage: Vec<String> = rec
        .damage
        .iter()
        .map(|d| {
            format!(
                "{{\"file\":{},\"offset\":{},\"length\":{},\"what\":{},\"records_missing\":{},\"loss\":{},\"copy\":{}}}",
                json_str(&d.file),
                d.offset,
                d.length,
                json_str(&d.what),
                d.records_missing,
                d.loss,
                opt_str(&d.copy)
            )
        })
        .collect();
    let snapshots: Vec<String> = rec
        .rejected_snapshots
        .iter()
        .map(|s| {
            format!(
                "{{\"file\":{},\"bytes\":{},\"what\":{},\"chunks_damaged\":{},\"copy\":{}}}",
                json_str(&s.file),
                s.bytes,
                json_str(&s.what),
                s.chunks_damaged,
                opt_str(&s.copy)
            )
        })
        .collect();
    format!(
        concat!(
            "{{\"version\":1,\"id\":{},\"when_ms\":{},\"log_dir\":{},\"policy\":{},\"loss_suspected\":{},",
            "\"records_recovered\":{},\"records_skipped\":{},\"records_after_damage\":{},",
            "\"bytes_quarantined\":{},\"torn_tail_bytes\":{},\"snapshot_seq\":{},",
            "\"damage\":[{}],\"snapshots_rejected\":[{}]}}\n"
        ),
        json_str(entry),
        when_ms,
        json_str(dir),
        json_str(policy),
        rec.loss_suspected,
        rec.records,
        rec.records_skipped,
        rec.records_after_damage,
        rec.bytes_quarantined,
        rec.truncated_bytes,
        rec.snapshot_seq,
        damage.join(","),
        snapshots.join(",")
    )
}

/// Writes a new entry with `copies` (capped at the byte bound) and the report, durably, then prunes.
/// Fills in `rec.quarantine`, the `copy` names, `bytes_quarantined` and `quarantine_dropped`.
pub(crate) fn write_entry(
    storage: &mut dyn Storage,
    rec: &mut Recovery,
    copies: Vec<(Copy, Target)>,
    bounds: Bounds,
    policy: &str,
) -> io::Result<String> {
    storage.create_dir(DIR)?;
    let when_ms = now_ms();
    let existing = storage.list(DIR)?;
    let base = stamp(when_ms);
    let mut id = base.clone();
    let mut n = 1;
    while existing.contains(&id) {
        n += 1;
        id = format!("{base}-{n}");
    }
    let entry = format!("{DIR}/{id}");
    storage.create_dir(&entry)?;
    let mut budget = bounds.max_bytes;
    for (copy, target) in copies {
        let keep = (copy.bytes.len() as u64).min(budget) as usize;
        budget -= keep as u64;
        let name = format!("{entry}/{}", copy.name);
        storage.create(&name)?;
        storage.append(&name, &copy.bytes[..keep])?;
        storage.sync(&name)?;
        rec.bytes_quarantined += keep as u64;
        let label = if keep < copy.bytes.len() {
            format!("{} (first {keep} of {} bytes)", copy.name, copy.bytes.len())
        } else {
            copy.name.clone()
        };
        match target {
            Target::Damage(i) => rec.damage[i].copy = Some(label),
            Target::Snapshot(i) => rec.rejected_snapshots[i].copy = Some(label),
        }
    }
    rec.quarantine = Some(entry.clone());
    let json = report_json(rec, &id, when_ms, policy, &storage.describe(""));
    let tmp = format!("{entry}/{REPORT}.tmp");
    storage.create(&tmp)?;
    storage.append(&tmp, json.as_bytes())?;
    storage.sync(&tmp)?;
    storage.rename(&tmp, &format!("{entry}/{REPORT}"))?;
    storage.sync_dir(&entry)?;
    storage.sync_dir(DIR)?;
    storage.sync_dir("")?;
    rec.quarantine_dropped += prune(storage, bounds, &id)?;
    Ok(entry)
}

/// Where a copy's name is recorded in the report.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Damage(usize),
    Snapshot(usize),
}

/// Drops the oldest entries beyond the bounds (never `keep`); returns how many were dropped.
fn prune(storage: &mut dyn Storage, bounds: Bounds, keep: &str) -> io::Result<u64> {
    let mut entries = storage.list(DIR)?;
    entries.sort();
    let mut sizes = Vec::with_capacity(entries.len());
    for e in &entries {
        let mut bytes = 0u64;
        let mut accepted = false;
        let mut data = Vec::new();
        for f in storage.list(&format!("{DIR}/{e}"))? {
            accepted |= f == ACCEPTED;
            if f.ends_with(".bin") {
                bytes += storage.read(&format!("{DIR}/{e}/{f}"))?.len() as u64;
                data.push(f);
            }
        }
        sizes.push((e.clone(), bytes, accepted, data));
    }
    // Entries that still hold copies (or were acknowledged) count; an unacknowledged entry whose copies
    // were dropped keeps only its small report.
    let mut count = sizes.iter().filter(|s| s.2 || !s.3.is_empty()).count();
    let mut total: u64 = sizes.iter().map(|s| s.1).sum();
    let mut dropped = 0;
    for (e, bytes, accepted, data) in sizes {
        if count <= bounds.max_entries && total <= bounds.max_bytes {
            break;
        }
        if e == keep || (!accepted && data.is_empty()) {
            continue;
        }
        let dir = format!("{DIR}/{e}");
        if accepted {
            storage.remove_dir(&dir)?;
        } else {
            for f in data {
                storage.remove(&format!("{dir}/{f}"))?;
            }
        }
        count -= 1;
        total -= bytes;
        dropped += 1;
    }
    if dropped > 0 {
        storage.sync_dir(DIR)?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(stamp(0), "19700101T000000.000Z");
        assert_eq!(stamp(1_709_210_096_789), "20240229T123456.789Z");
        assert_eq!(stamp(4_102_444_799_999), "20991231T235959.999Z");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
