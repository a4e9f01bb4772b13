//! The profiler's memory: fixed-size tables in static storage.
//!
//! Two tables, both allocated once as statics (so they are bounded, and the
//! profiler never allocates, nor tracks itself):
//!
//! - **sites**: one entry per distinct stack (keyed by a hash of its return
//!   addresses) with the running sums of its live samples;
//! - **live samples**: sampled pointers not yet freed, each with its site and
//!   weight, in an open-addressing (linear probing) hash table keyed by the
//!   pointer.
//!
//! Every free must ask "was this pointer sampled?", so that question is
//! answered without a lock: the keys are atomics, a sampled pointer sits at
//! its home slot or after it with no empty slot in between, and removal
//! leaves a tombstone rather than moving other keys. The only operation that
//! moves keys, the periodic purge of tombstones, bumps a sequence number
//! around its work (a seqlock), and a reader that saw it move takes the lock.
//! Everything else (inserting, removing, the sums) happens under one mutex,
//! taken only by sampled allocations, frees of sampled pointers and the
//! sampler thread, and never held across an allocation or a free.

use std::sync::atomic::{
    AtomicU16, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, fence,
};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Return addresses kept per stack, allocator frames included: the
/// unwinder's, the profiler's and the allocator's (about five), then the
/// sixteen callers the collector keeps and shows, and a margin. Deeper
/// frames (the runtime's, down to the thread's entry) would only tell apart
/// sites that read the same, and unwinding each costs the allocating
/// thread.
pub(crate) const MAX_DEPTH: usize = 24;
/// Distinct stacks tracked at once. When full, a site with no live sample
/// is reused; when there is none, the sample is dropped and counted.
pub(crate) const MAX_SITES: usize = 1024;
/// Slots of the live-sample table: a power of two, twice the live samples
/// it may hold, so that probes stay short.
const SLOTS: usize = 1 << 14;
/// Live samples held at most: 8 GiB of live heap at the default 512 KiB mean.
const MAX_LIVE: usize = SLOTS / 2;
/// Purge tombstones once live samples plus tombstones fill this many slots.
const MAX_USED: usize = SLOTS * 3 / 4;

const EMPTY: usize = 0;
/// A removed key. No allocation is ever at address 1.
const TOMBSTONE: usize = 1;

static KEYS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(EMPTY) }; SLOTS];
/// Odd while the purge moves keys.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);
/// Counters of the filter in front of the table, a power of two.
const FILTER_SLOTS: usize = 1 << 15;
/// How many live samples hash to each counter (a counting filter with one
/// hash). Every free reads its pointer's counter, and one at 0 says the
/// pointer was certainly not sampled: no table probe, no seqlock. Counting
/// rather than one bit per hash matters: the allocator hands the same
/// addresses out again and again, so a bit set by one short-lived sample
/// would send every later free at that address into the table until the
/// next purge (measured: 115 instructions per request of a hello-world
/// server). The counts are exact: raised under the lock before a key is
/// stored, lowered under the lock after it is removed, never touched by the
/// purge (which moves keys, not pointers), and a `u16` cannot overflow
/// with at most [`MAX_LIVE`] samples alive.
static FILTER: [AtomicU16; FILTER_SLOTS] = [const { AtomicU16::new(0) }; FILTER_SLOTS];
const _: () = assert!(MAX_LIVE < u16::MAX as usize);
static TABLES: Mutex<Tables> = Mutex::new(Tables::EMPTY);
/// Set in the child of a `fork`: the tables' lock may have been held by a
/// thread that does not exist there, so the child never takes it. Its
/// frees of pointers sampled before the fork leave them in its copy of the
/// table, and it samples nothing (see `heap::fork`).
static FORKED_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says this process is the child of a `fork` (from the `pthread_atfork`
/// child handler): the tables are never locked again here.
pub(crate) fn forked() {
    FORKED_CHILD.store(true, Relaxed);
}

/// A stack, as captured: return addresses, innermost first.
#[derive(Clone, Copy)]
pub(crate) struct Stack {
    pub frames: [usize; MAX_DEPTH],
    pub depth: usize,
}

impl Stack {
    pub const EMPTY: Stack = Stack {
        frames: [0; MAX_DEPTH],
        depth: 0,
    };

    /// The captured addresses.
    pub fn addrs(&self) -> &[usize] {
        &self.frames[..self.depth.min(MAX_DEPTH)]
    }

    /// Identifies the stack: FNV-1a over its addresses.
    pub fn hash(&self) -> u64 {
        self.addrs().iter().fold(0xcbf2_9ce4_8422_2325, |h, &a| {
            (h ^ a as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.addrs()).finish()
    }
}

/// One allocation site's running sums, as copied out for a report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SiteReading {
    pub id: u64,
    pub stack: Stack,
    pub live_samples: u32,
    pub live_bytes: f64,
    pub live_objects: f64,
    pub allocated_bytes: f64,
}

/// Totals over every site, as copied out for a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TableTotals {
    pub live_samples: u64,
    pub dropped: u64,
}

#[derive(Clone, Copy)]
struct Sample {
    site: u32,
    bytes: f64,
    objects: f64,
}

struct Tables {
    values: [Sample; SLOTS],
    /// Live samples plus tombstones.
    used: usize,
    live: usize,
    sites: [SiteReading; MAX_SITES],
    site_count: usize,
    dropped: u64,
    /// Room for the live samples while the purge rehashes them.
    scratch: [(usize, Sample); MAX_LIVE],
}

impl Tables {
    const EMPTY: Tables = Tables {
        values: [Sample::NONE; SLOTS],
        used: 0,
        live: 0,
        sites: [SiteReading::NONE; MAX_SITES],
        site_count: 0,
        dropped: 0,
        scratch: [(EMPTY, Sample::NONE); MAX_LIVE],
    };

    /// The site of `stack`, added (or put in place of a site without live
    /// samples) when new; `None` when every site holds live samples.
    fn site_for(&mut self, id: u64, stack: &Stack) -> Option<usize> {
        let count = self.site_count;
        if let Some(i) = self.sites[..count].iter().position(|s| s.id == id) {
            return Some(i);
        }
        let slot = if count < MAX_SITES {
            self.site_count += 1;
            count
        } else {
            self.sites.iter().position(|s| s.live_samples == 0)?
        };
        self.sites[slot] = SiteReading {
            id,
            stack: *stack,
            ..SiteReading::NONE
        };
        Some(slot)
    }

    fn insert(&mut self, ptr: usize, sample: Sample) {
        let mut i = home(ptr);
        let mut free_slot = None;
        let mut counted = false;
        for _ in 0..SLOTS {
            match KEYS[i].load(Relaxed) {
                EMPTY => break,
                TOMBSTONE => {
                    free_slot.get_or_insert(i);
                }
                key if key == ptr => {
                    // Freed without our noticing (cannot happen short of a
                    // bug); replace the stale sample rather than double it.
                    self.unaccount(self.values[i]);
                    self.live -= 1;
                    free_slot = Some(i);
                    // Its filter counter already counts it.
                    counted = true;
                    break;
                }
                _ => {}
            }
            i = (i + 1) & (SLOTS - 1);
        }
        let slot = match free_slot {
            Some(slot) => slot,
            None => {
                self.used += 1;
                i
            }
        };
        self.values[slot] = sample;
        self.account(sample);
        self.live += 1;
        if !counted {
            raise(ptr);
        }
        KEYS[slot].store(ptr, std::sync::atomic::Ordering::Release);
    }

    fn remove(&mut self, ptr: usize) {
        let mut i = home(ptr);
        for _ in 0..SLOTS {
            match KEYS[i].load(Relaxed) {
                EMPTY => return,
                key if key == ptr => {
                    KEYS[i].store(TOMBSTONE, std::sync::atomic::Ordering::Release);
                    lower(ptr);
                    self.unaccount(self.values[i]);
                    self.live -= 1;
                    return;
                }
                _ => {}
            }
            i = (i + 1) & (SLOTS - 1);
        }
    }

    fn account(&mut self, sample: Sample) {
        let site = &mut self.sites[sample.site as usize];
        site.live_samples += 1;
        site.live_bytes += sample.bytes;
        site.live_objects += sample.objects;
        site.allocated_bytes += sample.bytes;
    }

    fn unaccount(&mut self, sample: Sample) {
        let site = &mut self.sites[sample.site as usize];
        site.live_samples = site.live_samples.saturating_sub(1);
        if site.live_samples == 0 {
            // No float residue on an empty site.
            site.live_bytes = 0.0;
            site.live_objects = 0.0;
        } else {
            site.live_bytes -= sample.bytes;
            site.live_objects -= sample.objects;
        }
    }

    /// Rehashes the live samples without tombstones. Readers that overlap
    /// see the sequence change and retry under the lock.
    fn purge(&mut self) {
        let mut n = 0;
        for (slot, key) in KEYS.iter().enumerate() {
            let key = key.load(Relaxed);
            if key != EMPTY && key != TOMBSTONE && n < MAX_LIVE {
                self.scratch[n] = (key, self.values[slot]);
                n += 1;
            }
        }
        SEQUENCE.fetch_add(1, Relaxed);
        fence(std::sync::atomic::Ordering::Release);
        for key in &KEYS {
            key.store(EMPTY, Relaxed);
        }
        for &(ptr, sample) in &self.scratch[..n] {
            let mut i = home(ptr);
            while KEYS[i].load(Relaxed) != EMPTY {
                i = (i + 1) & (SLOTS - 1);
            }
            self.values[i] = sample;
            KEYS[i].store(ptr, Relaxed);
        }
        SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Release);
        self.used = n;
    }
}

impl Sample {
    const NONE: Sample = Sample {
        site: 0,
        bytes: 0.0,
        objects: 0.0,
    };
}

impl SiteReading {
    const NONE: SiteReading = SiteReading {
        id: 0,
        stack: Stack::EMPTY,
        live_samples: 0,
        live_bytes: 0.0,
        live_objects: 0.0,
        allocated_bytes: 0.0,
    };
}

/// The filter counter of `ptr`: a hash other than [`home`]'s, so the
/// filter and the table do not collide on the same pointers. The top bits
/// of a multiplicative hash, shifted so that they index the filter with no
/// mask (every free computes it).
#[inline]
fn filter_slot(ptr: usize) -> &'static AtomicU16 {
    const SHIFT: u32 = u64::BITS - FILTER_SLOTS.trailing_zeros();
    let hash = ((ptr as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F) >> SHIFT) as usize;
    &FILTER[hash]
}

/// Counts `ptr` in the filter. Under the lock, so a plain load and store
/// are a faithful increment.
fn raise(ptr: usize) {
    let counter = filter_slot(ptr);
    counter.store(counter.load(Relaxed) + 1, Relaxed);
}

/// Uncounts `ptr`. Under the lock.
fn lower(ptr: usize) {
    let counter = filter_slot(ptr);
    counter.store(counter.load(Relaxed).saturating_sub(1), Relaxed);
}

fn home(ptr: usize) -> usize {
    // Allocations are aligned: mix the bits before masking.
    ((ptr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50) as usize & (SLOTS - 1)
}

fn lock() -> MutexGuard<'static, Tables> {
    TABLES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records a sampled allocation at `ptr`, standing for `bytes` bytes and
/// `objects` allocations, made from `stack`. Drops and counts it when the
/// tables are full.
pub(crate) fn record(ptr: usize, bytes: f64, objects: f64, stack: &Stack) {
    let id = stack.hash();
    let mut tables = lock();
    if tables.live >= MAX_LIVE {
        tables.dropped += 1;
        return;
    }
    let Some(site) = tables.site_for(id, stack) else {
        tables.dropped += 1;
        return;
    };
    if tables.used >= MAX_USED {
        tables.purge();
    }
    let site = u32::try_from(site).unwrap_or(0);
    tables.insert(
        ptr,
        Sample {
            site,
            bytes,
            objects,
        },
    );
}

/// Whether a live sample shares `ptr`'s filter counter: false says `ptr`
/// was certainly not sampled. Called on every free: one load. Relaxed is
/// enough: the sample of a live `ptr` was counted before its allocation
/// returned, which happens-before this free of it, and only this free
/// uncounts it.
#[inline]
pub(crate) fn counted(ptr: usize) -> bool {
    filter_slot(ptr).load(Relaxed) != 0
}

/// Forgets `ptr` if it was sampled: a short lock-free probe of the table,
/// and the lock only when it is there.
pub(crate) fn forget(ptr: usize) {
    if counted(ptr) && !FORKED_CHILD.load(Relaxed) && in_table(ptr) {
        lock().remove(ptr);
    }
}

/// Whether `ptr` may be in the table; false only when it certainly is not.
/// Answered true (the lock then decides) when the purge moved keys during
/// the probe.
fn in_table(ptr: usize) -> bool {
    let before = SEQUENCE.load(Acquire);
    if before & 1 == 1 {
        return true;
    }
    let mut i = home(ptr);
    let mut found = false;
    for _ in 0..SLOTS {
        match KEYS[i].load(Acquire) {
            EMPTY => break,
            key if key == ptr => {
                found = true;
                break;
            }
            _ => {}
        }
        i = (i + 1) & (SLOTS - 1);
    }
    fence(Acquire);
    found || SEQUENCE.load(Relaxed) != before
}

/// Copies every site with live samples into `out` (cleared first) and
/// returns the totals. `out` is grown before the lock is taken, so nothing
/// is allocated while it is held.
pub(crate) fn read(out: &mut Vec<SiteReading>) -> TableTotals {
    out.clear();
    out.reserve(MAX_SITES);
    let tables = lock();
    out.extend(
        tables.sites[..tables.site_count]
            .iter()
            .filter(|s| s.live_samples > 0)
            .copied(),
    );
    TableTotals {
        live_samples: tables.live as u64,
        dropped: tables.dropped,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The tables and the allocator's counters are process-wide: tests that
    /// touch them take this one lock.
    pub(crate) use crate::alloc::tests::SERIAL;

    pub(crate) fn stack(addrs: &[usize]) -> Stack {
        let mut stack = Stack::EMPTY;
        stack.frames[..addrs.len()].copy_from_slice(addrs);
        stack.depth = addrs.len();
        stack
    }

    fn site(id: u64) -> Option<SiteReading> {
        let mut out = Vec::new();
        read(&mut out);
        out.into_iter().find(|s| s.id == id)
    }

    #[test]
    fn records_sums_per_site_and_forgets_on_free() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let a = stack(&[0x1000, 0x2000, 0xdead_0001]);
        let b = stack(&[0x1000, 0x3000, 0xdead_0001]);
        assert_ne!(a.hash(), b.hash());
        let base = 0x7f00_0000_0000usize;
        for n in 0..10 {
            record(base + n * 64, 100.0, 2.0, &a);
        }
        record(base + 4096, 50.0, 1.0, &b);
        let sa = site(a.hash()).unwrap();
        assert_eq!(sa.live_samples, 10);
        assert_eq!(sa.live_bytes, 1000.0);
        assert_eq!(sa.live_objects, 20.0);
        assert_eq!(sa.stack.addrs(), a.addrs());
        for n in 0..10 {
            forget(base + n * 64);
        }
        assert!(site(a.hash()).is_none(), "no live samples left at a");
        assert_eq!(site(b.hash()).unwrap().allocated_bytes, 50.0);
        forget(base + 4096);
        forget(base + 8192); // never sampled: nothing happens
        assert!(site(b.hash()).is_none());
    }

    #[test]
    fn an_address_sampled_once_and_freed_stops_passing_the_filter() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let s = stack(&[0x9000, 0xdead_0004]);
        // The allocator hands this address out again and again; one sample
        // of it must not send every later free into the table.
        let reused = 0x4000_1234_5670usize;
        let count = || filter_slot(reused).load(Relaxed);
        assert_eq!(count(), 0, "never sampled");
        record(reused, 10.0, 1.0, &s);
        assert_eq!(count(), 1, "sampled and live");
        assert!(in_table(reused));
        forget(reused);
        assert_eq!(
            count(),
            0,
            "freed: a later free at this address skips the table"
        );
        // Sampled twice (the stale sample replaced), freed once.
        record(reused, 10.0, 1.0, &s);
        record(reused, 10.0, 1.0, &s);
        forget(reused);
        assert_eq!(count(), 0, "replaced, then freed");
        assert!(site(s.hash()).is_none());
    }

    #[test]
    fn a_child_forked_while_the_tables_are_locked_frees_without_deadlock() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        // Switching sampling on installs the fork handler.
        let mean = crate::heap::sample_interval();
        crate::heap::set_sample_interval(mean.max(512 * 1024));
        crate::heap::set_sample_interval(mean);
        let s = stack(&[0xa000, 0xdead_0005]);
        let ptr = 0x3000_0000_0000usize;
        record(ptr, 1.0, 1.0, &s);
        let held = lock();
        // SAFETY: the child only calls `forget` (no allocation, no lock
        // once forked) and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            forget(ptr);
            // SAFETY: ends the child without running the parent's handlers.
            unsafe { libc::_exit(0) };
        }
        drop(held);
        assert!(pid > 0, "fork failed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child; `status` is a valid out-pointer.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                break;
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: kills and reaps our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                panic!("the forked child deadlocked on the tables' lock");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status}"
        );
        forget(ptr);
        assert!(site(s.hash()).is_none());
    }

    #[test]
    fn survives_many_more_samples_than_slots_through_purges() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let s = stack(&[0x5000, 0xdead_0002]);
        let base = 0x6000_0000_0000usize;
        // Churn: keep 100 alive while 5 * SLOTS come and go.
        for n in 0..5 * SLOTS {
            record(base + n * 16, 1.0, 1.0, &s);
            if n >= 100 {
                forget(base + (n - 100) * 16);
            }
        }
        let reading = site(s.hash()).unwrap();
        assert_eq!(reading.live_samples, 100);
        assert_eq!(reading.allocated_bytes, (5 * SLOTS) as f64);
        for n in 5 * SLOTS - 100..5 * SLOTS {
            forget(base + n * 16);
        }
        assert!(site(s.hash()).is_none());
    }

    #[test]
    fn concurrent_record_and_forget_balance() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let s = stack(&[0x7000, 0xdead_0003]);
        std::thread::scope(|scope| {
            for t in 0..4usize {
                let s = &s;
                scope.spawn(move || {
                    let base = 0x5000_0000_0000usize + t * 0x1_0000_0000;
                    for n in 0..3000 {
                        record(base + n * 32, 1.0, 1.0, s);
                        if n % 3 != 0 {
                            forget(base + n * 32);
                        }
                    }
                });
            }
        });
        assert_eq!(site(s.hash()).unwrap().live_samples, 4 * 1000);
        for t in 0..4usize {
            let base = 0x5000_0000_0000usize + t * 0x1_0000_0000;
            for n in (0..3000).step_by(3) {
                forget(base + n * 32);
            }
        }
        assert!(site(s.hash()).is_none());
    }
}
