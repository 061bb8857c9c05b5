//! The on-disk event log: one JSON object a line for each membership and placement event,
//! in a file rotated by size (`FILE` → `FILE.1` → … → `FILE.N`, the oldest dropped).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearsay::engine::{Engine, Subscription};
use hearsay::node::Event;
use hearsay::placement::NodeId;
use serde_json::{json, Value as Json};

/// An append-only file that moves itself aside when it would outgrow `max_bytes`.
#[derive(Debug)]
pub(crate) struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    /// Open (or create) `path` for appending.
    pub(crate) fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            keep,
        })
    }

    /// Append one line (a newline is added), rotating first if the line would take the
    /// file past its limit. A line longer than the limit gets a file of its own.
    pub(crate) fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.file.write_all(&buf)?;
        self.size += len;
        Ok(())
    }

    fn rotated(&self, i: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{i}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep > 0 {
            // FILE.(N-1) → FILE.N, …, FILE → FILE.1; the old FILE.N is replaced.
            for i in (1..self.keep).rev() {
                let from = self.rotated(i);
                if from.exists() {
                    fs::rename(&from, self.rotated(i + 1))?;
                }
            }
            fs::rename(&self.path, self.rotated(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Writes a node's events to a [`RotatingFile`].
pub(crate) struct EventLog {
    file: RotatingFile,
    events: Subscription,
    /// Addresses of the members named so far, so that events read after the engine is
    /// gone (this node's own departure) still carry them.
    addrs: HashMap<NodeId, SocketAddr>,
    lagged_logged: u64,
    /// Events the subscription dropped because the log fell behind.
    pub(crate) lagged: Arc<AtomicU64>,
    failed: bool,
}

impl EventLog {
    /// Events to buffer between the node and the log writer.
    pub(crate) const CAPACITY: usize = 4096;

    pub(crate) fn new(file: RotatingFile, events: Subscription) -> Self {
        Self {
            file,
            events,
            addrs: HashMap::new(),
            lagged_logged: 0,
            lagged: Arc::new(AtomicU64::new(0)),
            failed: false,
        }
    }

    /// Write events as they come until `stop` is set.
    pub(crate) fn run(&mut self, engine: &Engine, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if let Some(e) = self.events.recv_timeout(Duration::from_millis(100)) {
                self.record(Some(engine), &e);
            }
        }
    }

    /// Write the events still buffered (after the engine stopped).
    pub(crate) fn drain(&mut self) {
        while let Some(e) = self.events.try_recv() {
            self.record(None, &e);
        }
    }

    fn record(&mut self, engine: Option<&Engine>, e: &Event) {
        let lagged = self.events.lagged();
        self.lagged.store(lagged, Ordering::Relaxed);
        if lagged > self.lagged_logged {
            let line = json!({
                "time": rfc3339_now(),
                "event": "lagged",
                "dropped": lagged - self.lagged_logged,
            });
            self.lagged_logged = lagged;
            self.write(&line);
        }
        let Some(mut line) = describe(e) else { return };
        if let Some(id) = event_member(e) {
            if let Some(engine) = engine {
                if !self.addrs.contains_key(&id) {
                    if let Some(m) = engine.local() {
                        self.addrs.insert(m.id, m.addr);
                    }
                }
                // The node publishes its member list just after its events: a member
                // this log has not seen yet shows up there a moment later.
                for attempt in 0..10 {
                    if self.addrs.contains_key(&id) {
                        break;
                    }
                    if attempt > 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    let members = engine.members();
                    if let Ok(i) = members.binary_search_by_key(&id, |m| m.id) {
                        self.addrs.insert(id, members[i].addr);
                    }
                }
            }
            if let Some(addr) = self.addrs.get(&id) {
                line["addr"] = Json::String(addr.to_string());
            }
        }
        line["time"] = Json::String(rfc3339_now());
        self.write(&line);
    }

    fn write(&mut self, line: &Json) {
        if let Err(e) = self.file.write_line(&line.to_string()) {
            // Say it once; the agent goes on without its log.
            if !self.failed {
                eprintln!(
                    "hearsay: cannot write the event log {}: {e}",
                    self.file.path.display()
                );
                self.failed = true;
            }
        }
    }
}

/// The member an event is about.
fn event_member(e: &Event) -> Option<NodeId> {
    match e {
        Event::MemberJoined(id)
        | Event::MemberUpdated(id)
        | Event::Suspected(id)
        | Event::AliveAgain(id)
        | Event::Failed(id)
        | Event::Left(id)
        | Event::Drained(id)
        | Event::Undrained(id) => Some(*id),
        _ => None,
    }
}

/// An event as a JSON object, or `None` for events the log leaves out (CRDT changes: the
/// log is about membership).
pub(crate) fn describe(e: &Event) -> Option<Json> {
    let with_id = |name: &str, id: &NodeId| json!({ "event": name, "id": id.to_string() });
    Some(match e {
        Event::Joined => json!({ "event": "joined" }),
        Event::MemberJoined(id) => with_id("member_joined", id),
        Event::MemberUpdated(id) => with_id("member_updated", id),
        Event::Suspected(id) => with_id("suspected", id),
        Event::AliveAgain(id) => with_id("alive_again", id),
        Event::Failed(id) => with_id("failed", id),
        Event::Left(id) => with_id("left", id),
        Event::Drained(id) => with_id("drained", id),
        Event::Undrained(id) => with_id("undrained", id),
        Event::PlacementChanged { version, members } => json!({
            "event": "placement_changed",
            "version": version,
            "members": members,
        }),
        Event::CrdtChanged(_) => return None,
    })
}

/// The wall-clock time as `YYYY-MM-DDTHH:MM:SS.mmmZ`, for people reading the log (it
/// orders nothing).
pub(crate) fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hearsay-eventlog-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = temp_dir("rotate");
        let path = dir.join("events.jsonl");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        let line = "x".repeat(39); // 40 bytes with the newline: two lines a file
        for i in 0..7 {
            f.write_line(&format!("{i}{}", &line[1..])).unwrap();
        }
        let read = |p: &Path| fs::read_to_string(p).unwrap();
        // 7 lines, 2 a file: FILE holds line 6, FILE.1 lines 4–5, FILE.2 lines 2–3; lines
        // 0–1 were rotated out.
        assert_eq!(read(&path).lines().count(), 1);
        assert!(read(&path).starts_with('6'));
        let one = read(&dir.join("events.jsonl.1"));
        assert_eq!(one.lines().map(|l| &l[..1]).collect::<Vec<_>>(), ["4", "5"]);
        let two = read(&dir.join("events.jsonl.2"));
        assert_eq!(two.lines().map(|l| &l[..1]).collect::<Vec<_>>(), ["2", "3"]);
        assert!(!dir.join("events.jsonl.3").exists());
        for p in [path.clone(), dir.join("events.jsonl.1")] {
            assert!(fs::metadata(&p).unwrap().len() <= 100);
        }
        // Reopening appends to what is there.
        drop(f);
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        f.write_line("again").unwrap();
        assert_eq!(read(&path).lines().count(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keep_zero_truncates_and_long_lines_still_land() {
        let dir = temp_dir("keep0");
        let path = dir.join("e.log");
        let mut f = RotatingFile::open(&path, 10, 0).unwrap();
        f.write_line("a-very-long-line").unwrap();
        f.write_line("b").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "b\n");
        assert!(!dir.join("e.log.1").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn events_are_described() {
        let e = describe(&Event::Failed(NodeId(255))).unwrap();
        assert_eq!(e, json!({"event": "failed", "id": "00000000000000ff"}));
        let e = describe(&Event::PlacementChanged {
            version: 3,
            members: 2,
        })
        .unwrap();
        assert_eq!(e["version"], 3);
        assert!(describe(&Event::CrdtChanged(b"k".to_vec())).is_none());
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400 + 3661, 7), "2000-02-29T01:01:01.007Z");
        assert_eq!(rfc3339(1_798_761_599, 999), "2026-12-31T23:59:59.999Z");
    }
}
