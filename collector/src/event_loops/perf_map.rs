//! A JIT's perf map (`/tmp/perf-PID.map`), read as it grows, in which a
//! later entry replaces every earlier one it overlaps.
//!
//! V8 (`node --perf-basic-prof`) appends a line `START SIZE NAME` for each
//! piece of code it makes, and reuses the memory of code it has collected.
//! The file therefore holds stale entries that overlap the live ones: in a
//! Node.js service a few minutes old, about one entry in thirty. blazesym
//! reads the map sorted by address with no notion of which line came last,
//! so an address in new code could be named after the module evaluation
//! that once sat there (`Eval:~ node:internal/abort_controller:1:1` for a
//! loop spinning in `busyFor`). Hence this reader, by hand: the format is
//! three fields, and no crate keeps the file's order.
//!
//! The file is written by the watched process, which the collector does
//! not trust: what is kept is bounded ([`MAX_ENTRIES`], [`MAX_LINE`]), and
//! a malformed line is skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Entries kept at most; past it, new code is left unnamed rather than the
/// collector's memory growing with a hostile or runaway map.
const MAX_ENTRIES: usize = 1 << 20;
/// The longest line read; a longer one is skipped.
const MAX_LINE: usize = 4096;

/// One piece of code: where it ends and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Code {
    end: u64,
    name: String,
}

/// The perf map of one process, as far as it has been read.
#[derive(Debug)]
pub(crate) struct PerfMap {
    path: PathBuf,
    /// How far the file has been read: up to the end of its last whole line.
    read_to: u64,
    /// The live code by start address; no two entries overlap.
    code: BTreeMap<u64, Code>,
}

impl PerfMap {
    /// The perf map of process `pid`, nothing read yet.
    pub(crate) fn of(pid: u32) -> Self {
        Self {
            path: PathBuf::from(format!("/tmp/perf-{pid}.map")),
            read_to: 0,
            code: BTreeMap::new(),
        }
    }

    /// Reads the lines appended since the last call. A file shorter than
    /// what was read is a new file (the pid was reused): read again whole.
    /// A missing file is an empty map.
    pub(crate) fn refresh(&mut self) {
        let Ok(file) = File::open(&self.path) else {
            return;
        };
        let len = file.metadata().map_or(0, |m| m.len());
        if len < self.read_to {
            self.read_to = 0;
            self.code.clear();
        }
        let mut reader = BufReader::new(file);
        if reader.seek(SeekFrom::Start(self.read_to)).is_err() {
            return;
        }
        let mut line = Vec::new();
        loop {
            line.clear();
            let Ok(read) = reader
                .by_ref()
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
            else {
                return;
            };
            // A line still being written is read whole next time.
            if read == 0 || (line.last() != Some(&b'\n') && read <= MAX_LINE) {
                return;
            }
            self.read_to += read as u64;
            if line.last() != Some(&b'\n') {
                // Too long: skip the rest of it.
                let mut rest = Vec::new();
                match reader.read_until(b'\n', &mut rest) {
                    Ok(more) if rest.last() == Some(&b'\n') => self.read_to += more as u64,
                    _ => return,
                }
                continue;
            }
            if let Some((start, size, name)) = parse_line(&line) {
                self.insert(start, size, name);
            }
        }
    }

    /// Adds the code at `[start, start + size)`, replacing whatever it
    /// overlaps: that code was collected and its memory reused.
    fn insert(&mut self, start: u64, size: u64, name: &str) {
        let end = start.saturating_add(size.max(1));
        let overlapping: Vec<u64> = self
            .code
            .range(..end)
            .rev()
            .take_while(|(_, code)| code.end > start)
            .map(|(&at, _)| at)
            .collect();
        for at in overlapping {
            self.code.remove(&at);
        }
        if self.code.len() < MAX_ENTRIES {
            self.code.insert(
                start,
                Code {
                    end,
                    name: name.to_owned(),
                },
            );
        }
    }

    /// The name of the code holding `address`.
    pub(crate) fn name(&self, address: u64) -> Option<&str> {
        let (_, code) = self.code.range(..=address).next_back()?;
        (address < code.end).then_some(code.name.as_str())
    }
}

/// `START SIZE NAME`, the first two in hex with or without `0x`.
fn parse_line(line: &[u8]) -> Option<(u64, u64, &str)> {
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut fields = line.splitn(3, ' ');
    let hex = |field: &str| u64::from_str_radix(field.trim_start_matches("0x"), 16).ok();
    let start = hex(fields.next()?)?;
    let size = hex(fields.next()?)?;
    let name = fields.next()?.trim();
    (!name.is_empty()).then_some((start, size, name))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn map_in(dir: &tempfile::TempDir) -> PerfMap {
        PerfMap {
            path: dir.path().join("perf-1.map"),
            read_to: 0,
            code: BTreeMap::new(),
        }
    }

    fn append(map: &PerfMap, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&map.path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_later_entry_replaces_the_stale_code_it_overlaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut map = map_in(&dir);
        // Lines as node writes them: module code, then a function compiled
        // later into part of that module code's collected memory.
        append(
            &map,
            "225d7e40b30e 67b JS:~ node:_http_outgoing:1:1\n\
             225d7e40ba00 10 JS:~after node:_http_outgoing:9:1\n",
        );
        map.refresh();
        assert_eq!(
            map.name(0x225d_7e40_b380),
            Some("JS:~ node:_http_outgoing:1:1")
        );
        append(
            &map,
            "225d7e40b286 10a JS:~OutgoingMessage node:_http_outgoing:102:25\n",
        );
        map.refresh();
        // Inside both: the later one. Past its end, the earlier one is gone
        // too, since its code was collected.
        assert_eq!(
            map.name(0x225d_7e40_b380),
            Some("JS:~OutgoingMessage node:_http_outgoing:102:25")
        );
        assert_eq!(map.name(0x225d_7e40_b400), None);
        assert_eq!(
            map.name(0x225d_7e40_ba05),
            Some("JS:~after node:_http_outgoing:9:1")
        );
        assert_eq!(map.name(0x225d_7e40_b285), None);
    }

    #[test]
    fn reads_only_whole_lines_and_starts_over_on_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut map = map_in(&dir);
        append(&map, "1000 10 JS:*spin /srv/a.js:1:1\n2000 10 JS:*wai");
        map.refresh();
        assert_eq!(map.name(0x1005), Some("JS:*spin /srv/a.js:1:1"));
        assert_eq!(map.name(0x2005), None, "half a line is not read yet");
        append(&map, "t /srv/a.js:5:1\n");
        map.refresh();
        assert_eq!(map.name(0x2005), Some("JS:*wait /srv/a.js:5:1"));
        // The pid was reused: a shorter file is read from its start.
        std::fs::write(&map.path, "3000 10 JS:*other /srv/b.js:1:1\n").unwrap();
        map.refresh();
        assert_eq!(map.name(0x1005), None);
        assert_eq!(map.name(0x3005), Some("JS:*other /srv/b.js:1:1"));
    }

    #[test]
    fn malformed_and_overlong_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut map = map_in(&dir);
        let long = format!("4000 10 {}\n", "x".repeat(MAX_LINE * 2));
        append(
            &map,
            &format!("zz 10 bad\n1000\n{long}0x5000 0x10 JS:*ok /srv/c.js:1:1\n"),
        );
        map.refresh();
        assert_eq!(map.name(0x4005), None);
        assert_eq!(map.name(0x5005), Some("JS:*ok /srv/c.js:1:1"));
        assert_eq!(map.code.len(), 1);
        // A missing file names nothing and is no error.
        let mut gone = PerfMap::of(u32::MAX);
        gone.refresh();
        assert_eq!(gone.name(0x5005), None);
    }
}
