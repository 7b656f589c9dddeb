//! Last words: the fingerprints of in-flight messages, kept where a killed process leaves them.
//!
//! A process that dies in two seconds (an OOM kill, a poison message that aborts it) never
//! shows up in a scrape and cannot log on its way out. So before a message is rendered its
//! fingerprint is written into a small file mapped `MAP_SHARED` in `--state-dir`: stores to a
//! shared mapping land in the page cache at once and are written back by the kernel whether
//! or not the process lives, so they survive SIGKILL (not a power cut: nothing here is
//! fsynced per message, which would cost a disk flush per delivery). The next start reads the
//! file before resetting it and reports what was in flight when the last run died.
//!
//! # File layout (`<state-dir>/lastwords`, version 1, little-endian)
//!
//! ```text
//! header, 64 bytes: magic "LFLWORDS" | version u32 | slot count u32 | state u8 (1 running,
//!                   2 clean) | zeros
//! slot i, 72 bytes at 64 + 72·i: busy u8 | 3 zero bytes | delivery u32 | fingerprint, 64 bytes
//!                   (64 lower-case hex characters; shorter ones NUL-padded)
//! ```
//!
//! A slot's busy byte is stored last when it is taken and first when it is freed, so a busy
//! slot always holds a whole fingerprint even if the process dies between two stores. Which
//! slots are free is decided in memory (an atomic bitmap), never by reading the file, so
//! concurrent tasks never take the same slot. One process per state directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use memmap2::MmapRaw;

/// The file name inside `--state-dir`.
pub const FILE_NAME: &str = "lastwords";

/// Slots by default: above the default prefetch (1000); a delivery that finds every slot
/// busy is still processed, only not recorded.
pub const DEFAULT_SLOTS: usize = 1024;

const MAGIC: &[u8; 8] = b"LFLWORDS";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 64;
const STATE_AT: usize = 16;
const RUNNING: u8 = 1;
const CLEAN: u8 = 2;
const SLOT_LEN: usize = 72;
const DELIVERY_AT: usize = 4;
const FINGERPRINT_AT: usize = 8;
const FINGERPRINT_LEN: usize = 64;
const FREE: u8 = 0;
const BUSY: u8 = 1;
/// Upper bound on slots, so a corrupt header cannot make us read or map a huge file.
const MAX_SLOTS: usize = 1 << 20;

/// What the previous run left behind when it did not exit cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    /// The fingerprints in flight when it died, each with its delivery number; possibly
    /// empty (it died between messages).
    pub fingerprints: Vec<(String, u32)>,
}

/// The last-words file of this process.
#[derive(Debug, Clone)]
pub struct LastWords {
    shared: Arc<Shared>,
}

/// State shared by the [`LastWords`] handle and every live [`Slot`].
#[derive(Debug)]
struct Shared {
    /// The mapped file: header then slots.
    map: MmapRaw,
    /// Kept open for as long as the mapping lives.
    _file: File,
    /// Where the file lives, for messages.
    path: PathBuf,
    /// Bit `i` set = slot `i` is taken. The in-memory truth of who owns which slot.
    taken: Vec<AtomicU64>,
    /// How many slots the file has.
    slots: usize,
}

/// An in-flight record; frees its slot when dropped, whatever path the message took.
#[must_use = "the fingerprint is recorded only while the Slot lives"]
#[derive(Debug)]
pub struct Slot {
    /// `None` when every slot was busy: the message is not recorded.
    held: Option<(Arc<Shared>, usize)>,
}

impl Slot {
    /// Whether the fingerprint made it into the file; `false` when every slot was busy.
    pub fn is_recorded(&self) -> bool {
        self.held.is_some()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((shared, index)) = self.held.take() {
            shared.busy_byte(index).store(FREE, Ordering::Release);
            let bit = 1u64 << (index % 64);
            if let Some(word) = shared.taken.get(index / 64) {
                word.fetch_and(!bit, Ordering::Release);
            }
        }
    }
}

impl LastWords {
    /// Opens `<dir>/lastwords` (creating `dir` if needed) with [`DEFAULT_SLOTS`] slots.
    /// Returns what the previous run left if it did not exit cleanly; the file is then reset
    /// and marked running.
    pub fn open(dir: &Path) -> io::Result<(LastWords, Option<Previous>)> {
        Self::open_with_slots(dir, DEFAULT_SLOTS)
    }

    /// As [`LastWords::open`] with a chosen number of slots (at least 1; capped at 2^20).
    pub fn open_with_slots(dir: &Path, slots: usize) -> io::Result<(LastWords, Option<Previous>)> {
        let slots = slots.clamp(1, MAX_SLOTS);
        fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let previous = match fs::read(&path) {
            Ok(bytes) => parse_previous(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        // A fresh image written aside and renamed into place: a crash here leaves either the
        // old file or the new one, never a torn mix.
        let fresh = fresh_image(slots);
        let staging = dir.join(format!("{FILE_NAME}.new"));
        {
            let mut f = File::create(&staging)?;
            f.write_all(&fresh)?;
            f.sync_all()?;
        }
        fs::rename(&staging, &path)?;
        if let Ok(d) = File::open(dir) {
            // Best effort: a directory that cannot be opened for sync still got the rename.
            let _ = d.sync_all();
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let map = MmapRaw::map_raw(&file)?;
        if map.len() != fresh.len() {
            return Err(io::Error::other(format!(
                "{} changed size under us ({} bytes, expected {})",
                path.display(),
                map.len(),
                fresh.len()
            )));
        }
        let taken = (0..slots.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        let shared = Shared {
            map,
            _file: file,
            path,
            taken,
            slots,
        };
        Ok((
            LastWords {
                shared: Arc::new(shared),
            },
            previous,
        ))
    }

    /// Records `fingerprint` (64 hex characters; longer ones are cut, shorter ones padded)
    /// with its delivery number until the returned [`Slot`] is dropped. Never blocks: when
    /// every slot is busy the slot says so ([`Slot::is_recorded`] is `false`).
    pub fn record(&self, fingerprint: &str, delivery: u32) -> Slot {
        let Some(index) = self.shared.take_free() else {
            return Slot { held: None };
        };
        let mut bytes = [0u8; SLOT_LEN - DELIVERY_AT];
        bytes[..4].copy_from_slice(&delivery.to_le_bytes());
        let fp = fingerprint.as_bytes();
        let n = fp.len().min(FINGERPRINT_LEN);
        bytes[FINGERPRINT_AT - DELIVERY_AT..][..n].copy_from_slice(&fp[..n]);
        let at = self.shared.slot_offset(index) + DELIVERY_AT;
        // SAFETY: `at..at + 68` lies inside the mapping (slot_offset checks index < slots and
        // the mapping was checked to be exactly the image size, which we never truncate), and
        // the bitmap bit taken above makes this task the only writer of that slot.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.shared.map.as_mut_ptr().add(at),
                bytes.len(),
            );
        }
        self.shared.busy_byte(index).store(BUSY, Ordering::Release);
        Slot {
            held: Some((Arc::clone(&self.shared), index)),
        }
    }

    /// Marks this run as having exited cleanly: the next start reports nothing. Call it last,
    /// once everything in flight is settled. The flag is also written back to disk (best
    /// effort), so it holds across a machine restart too.
    pub fn mark_clean(&self) {
        self.shared.state_byte().store(CLEAN, Ordering::Release);
        let _ = self.shared.map.flush_range(0, HEADER_LEN);
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.slots
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl Shared {
    fn slot_offset(&self, index: usize) -> usize {
        debug_assert!(index < self.slots);
        HEADER_LEN + index.min(self.slots - 1) * SLOT_LEN
    }

    fn busy_byte(&self, index: usize) -> &AtomicU8 {
        self.byte_at(self.slot_offset(index))
    }

    fn state_byte(&self) -> &AtomicU8 {
        self.byte_at(STATE_AT)
    }

    fn byte_at(&self, offset: usize) -> &AtomicU8 {
        // SAFETY: every caller passes an offset inside the mapping (the header or a checked
        // slot), which lives as long as `self` and is never truncated; `AtomicU8` has the
        // alignment of `u8`, and every access to these bytes from this process is atomic.
        unsafe { AtomicU8::from_ptr(self.map.as_mut_ptr().add(offset)) }
    }

    /// Takes the first free slot, if any.
    fn take_free(&self) -> Option<usize> {
        for (w, word) in self.taken.iter().enumerate() {
            let valid = self.slots.saturating_sub(w * 64).min(64);
            let mask = if valid == 64 {
                u64::MAX
            } else {
                (1u64 << valid) - 1
            };
            let mut current = word.load(Ordering::Relaxed);
            loop {
                let free = !current & mask;
                if free == 0 {
                    break;
                }
                let bit = free.trailing_zeros();
                match word.compare_exchange_weak(
                    current,
                    current | (1u64 << bit),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(w * 64 + bit as usize),
                    Err(now) => current = now,
                }
            }
        }
        None
    }
}

/// A zeroed file image with the header of a running process.
fn fresh_image(slots: usize) -> Vec<u8> {
    let mut image = vec![0u8; HEADER_LEN + slots * SLOT_LEN];
    image[..8].copy_from_slice(MAGIC);
    image[8..12].copy_from_slice(&VERSION.to_le_bytes());
    image[12..16].copy_from_slice(&(slots as u32).to_le_bytes());
    image[STATE_AT] = RUNNING;
    image
}

/// What a previous file says, if it says the run did not end cleanly. A file we do not
/// recognise (another version, truncated) says nothing: better no report than a wrong one.
fn parse_previous(bytes: &[u8]) -> Option<Previous> {
    let header = bytes.get(..HEADER_LEN)?;
    if &header[..8] != MAGIC || header[8..12] != VERSION.to_le_bytes() {
        return None;
    }
    let slots = u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as usize;
    if slots > MAX_SLOTS || bytes.len() < HEADER_LEN + slots * SLOT_LEN {
        return None;
    }
    if header[STATE_AT] == CLEAN {
        return None;
    }
    let fingerprints = bytes[HEADER_LEN..HEADER_LEN + slots * SLOT_LEN]
        .chunks_exact(SLOT_LEN)
        .filter(|slot| slot[0] == BUSY)
        .map(|slot| {
            let delivery = u32::from_le_bytes([
                slot[DELIVERY_AT],
                slot[DELIVERY_AT + 1],
                slot[DELIVERY_AT + 2],
                slot[DELIVERY_AT + 3],
            ]);
            let fp = &slot[FINGERPRINT_AT..FINGERPRINT_AT + FINGERPRINT_LEN];
            let len = fp.iter().position(|&b| b == 0).unwrap_or(FINGERPRINT_LEN);
            (String::from_utf8_lossy(&fp[..len]).into_owned(), delivery)
        })
        .collect();
    Some(Previous { fingerprints })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    fn fp(n: u32) -> String {
        format!("{n:064x}")
    }

    #[test]
    fn first_start_reports_nothing_and_creates_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state/nested");
        let (lw, previous) = LastWords::open(&state).expect("open");
        assert_eq!(previous, None);
        assert_eq!(lw.path(), state.join(FILE_NAME));
        assert_eq!(lw.capacity(), DEFAULT_SLOTS);
        let len = fs::metadata(lw.path()).expect("metadata").len();
        assert_eq!(len as usize, HEADER_LEN + DEFAULT_SLOTS * SLOT_LEN);
    }

    #[test]
    fn clean_exit_reports_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lw, _) = LastWords::open(dir.path()).expect("open");
        let slot = lw.record(&fp(1), 1);
        drop(slot);
        lw.mark_clean();
        drop(lw);
        let (_lw, previous) = LastWords::open(dir.path()).expect("reopen");
        assert_eq!(previous, None);
    }

    #[test]
    fn unclean_exit_reports_the_slots_still_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lw, _) = LastWords::open(dir.path()).expect("open");
        let a = lw.record(&fp(0xa), 1);
        let b = lw.record(&fp(0xb), 3);
        let c = lw.record(&fp(0xc), 5);
        drop(b);
        std::mem::forget(a);
        std::mem::forget(c);
        drop(lw);
        let (lw, previous) = LastWords::open(dir.path()).expect("reopen");
        let mut got = previous.expect("unclean").fingerprints;
        got.sort();
        assert_eq!(got, vec![(fp(0xa), 1), (fp(0xc), 5)]);
        // The file was reset: the run after this one, if clean, reports nothing.
        lw.mark_clean();
        assert_eq!(LastWords::open(dir.path()).expect("again").1, None);
    }

    #[test]
    fn unclean_exit_with_nothing_in_flight_is_still_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(LastWords::open(dir.path()).expect("open"));
        let (_lw, previous) = LastWords::open(dir.path()).expect("reopen");
        assert_eq!(
            previous,
            Some(Previous {
                fingerprints: vec![]
            })
        );
    }

    #[test]
    fn full_slots_are_reported_not_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lw, _) = LastWords::open_with_slots(dir.path(), 2).expect("open");
        let a = lw.record(&fp(1), 1);
        let b = lw.record(&fp(2), 1);
        let c = lw.record(&fp(3), 1);
        assert!(a.is_recorded() && b.is_recorded());
        assert!(!c.is_recorded());
        drop(a);
        assert!(lw.record(&fp(4), 1).is_recorded(), "a freed slot is reused");
    }

    #[test]
    fn odd_fingerprints_are_cut_or_padded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lw, _) = LastWords::open(dir.path()).expect("open");
        let long = "f".repeat(100);
        let s1 = lw.record("abc", 2);
        let s2 = lw.record(&long, 7);
        std::mem::forget((s1, s2));
        drop(lw);
        let mut got = LastWords::open(dir.path())
            .expect("reopen")
            .1
            .expect("unclean")
            .fingerprints;
        got.sort();
        assert_eq!(got, vec![("abc".to_string(), 2), ("f".repeat(64), 7)]);
    }

    #[test]
    fn foreign_or_truncated_files_report_nothing() {
        assert_eq!(parse_previous(b""), None);
        assert_eq!(parse_previous(&[0u8; 200]), None);
        let mut image = fresh_image(4);
        image.truncate(HEADER_LEN + SLOT_LEN);
        assert_eq!(parse_previous(&image), None);
        let mut huge = fresh_image(1);
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_previous(&huge), None);
    }

    #[test]
    fn a_different_slot_count_reads_the_old_file_by_its_own_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lw, _) = LastWords::open_with_slots(dir.path(), 3).expect("open");
        std::mem::forget(lw.record(&fp(9), 2));
        drop(lw);
        let (lw, previous) = LastWords::open_with_slots(dir.path(), 100).expect("reopen");
        assert_eq!(previous.expect("unclean").fingerprints, vec![(fp(9), 2)]);
        assert_eq!(lw.capacity(), 100);
    }

    #[test]
    fn concurrent_recorders_never_share_a_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lw, _) = LastWords::open_with_slots(dir.path(), 130).expect("open");
        let held: Vec<Vec<Slot>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u32)
                .map(|t| {
                    let lw = lw.clone();
                    s.spawn(move || {
                        // Churn, then keep 30 each.
                        for i in 0..2000 {
                            drop(lw.record(&fp(t * 100_000 + i), 1));
                        }
                        (0..30).map(|i| lw.record(&fp(t * 1000 + i), t)).collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let indices: HashSet<usize> = held
            .iter()
            .flatten()
            .map(|s| s.held.as_ref().expect("recorded").1)
            .collect();
        assert_eq!(indices.len(), 120);
        std::mem::forget(held);
        drop(lw);
        let got = LastWords::open(dir.path())
            .expect("reopen")
            .1
            .expect("unclean")
            .fingerprints;
        let got: HashSet<(String, u32)> = got.into_iter().collect();
        let want: HashSet<(String, u32)> = (0..4u32)
            .flat_map(|t| (0..30).map(move |i| (fp(t * 1000 + i), t)))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn slots_are_send_to_other_tasks() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<Slot>();
        assert_send::<LastWords>();
    }

    const CHILD_DIR: &str = "LOGFENCE_LASTWORDS_CHILD_DIR";
    const CHILD_READY: &str = "LASTWORDS-READY";

    /// The child half of `fingerprints_survive_sigkill`: does nothing unless that test runs
    /// it as a separate process; then it records, frees one, and waits to be killed.
    #[test]
    fn sigkill_child_records_and_waits() {
        let Some(dir) = std::env::var_os(CHILD_DIR) else {
            return;
        };
        let (lw, _) = LastWords::open(Path::new(&dir)).expect("open");
        let _a = lw.record(&fp(0xdead), 1);
        let b = lw.record(&fp(0xbeef), 2);
        let _c = lw.record(&fp(0xf00d), 4);
        drop(b);
        println!("{CHILD_READY}");
        std::thread::sleep(std::time::Duration::from_secs(60));
        lw.mark_clean();
    }

    #[test]
    fn fingerprints_survive_sigkill() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "lastwords::tests::sigkill_child_records_and_waits",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.ends_with(CHILD_READY));
        assert!(ready, "child never recorded");
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "child died of SIGKILL: {status}");
        let (_lw, previous) = LastWords::open(dir.path()).expect("reopen");
        let mut got = previous.expect("unclean exit reported").fingerprints;
        got.sort();
        assert_eq!(got, vec![(fp(0xdead), 1), (fp(0xf00d), 4)]);
    }
}
