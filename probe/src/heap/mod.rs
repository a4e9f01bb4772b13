//! Heap profiling: which code holds the memory, by sampled allocation sites.
//!
//! Counting bytes (in `alloc.rs`) says *that* memory climbs; this module
//! says *where* it is allocated. A small fraction of allocations, picked by
//! Poisson sampling on bytes ([`sampling`], a mean of 512 KiB between
//! samples by default), has its stack captured ([`capture`]) and is kept in
//! a fixed table until it is freed ([`table`]). Each sample is weighted so
//! that the sums per stack are unbiased estimates of that site's live
//! bytes, live allocations and bytes allocated. On the sampler thread,
//! [`report`] picks the sites holding the most memory for the snapshot; their
//! stacks go out as raw addresses, and the collector names them.
//!
//! Cost: an allocation that is not sampled pays nothing beyond the tracking
//! allocator's own countdown, which is armed to run out at the next sample;
//! a free pays one load of a counter in the table's filter,
//! and a short lock-free probe of the table only when a live sample shares
//! that counter. Memory: the tables are
//! statics of about 1 MiB, touched only once sampling runs.

mod capture;
mod report;
mod sampling;
mod table;

pub(crate) use report::HeapReporter;
pub(crate) use sampling::{exclude_this_thread, mean as sample_interval};

/// Sets the mean bytes between samples (0 turns sampling off), makes sure
/// a `fork` cannot deadlock the child on the tables' lock, and readies the
/// unwinder on the calling thread.
pub(crate) fn set_sample_interval(bytes: u64) {
    if bytes > 0 {
        fork::guard();
        capture::prepare();
    }
    sampling::set_mean(bytes);
}

/// Fork safety: a child forked while another thread held the tables' lock
/// would deadlock on its first free of a sampled pointer. A `pthread_atfork`
/// child handler stops sampling in the child and keeps it off the lock.
mod fork {
    use std::sync::Once;

    /// Installs the handler, once per process.
    pub(super) fn guard() {
        static INSTALLED: Once = Once::new();
        INSTALLED.call_once(|| {
            // SAFETY: registers a handler with the signature the C library
            // calls; it only stores to atomics, which is async-signal-safe,
            // as a child handler of a multithreaded process must be.
            let failed = unsafe { libc::pthread_atfork(None, None, Some(in_child)) } != 0;
            if failed {
                tracing::debug!("meshwatch: cannot register the fork handler");
            }
        });
    }

    unsafe extern "C" fn in_child() {
        super::sampling::set_mean(0);
        super::table::forked();
    }
}

/// The default mean bytes between samples, as jemalloc's `lg_prof_sample:19`:
/// about 2 samples per MiB allocated.
pub(crate) const DEFAULT_SAMPLE_INTERVAL: u64 = 512 * 1024;

/// Called by the tracking allocator's slow path with the bytes this thread
/// allocated since the last call: the sampling mean when the allocation
/// that brought it here is a sample (it holds the picked byte).
pub(crate) fn bytes_allocated(bytes: u64) -> Option<u64> {
    sampling::advance(bytes)
}

/// The bytes this thread may allocate before the next sample is due: the
/// tracking allocator arms its countdown to run out no later.
pub(crate) fn bytes_until_sample() -> i64 {
    sampling::left()
}

/// Called by the tracking allocator before every free: whether `ptr` may
/// have been sampled, so that [`forget`] must run. One load.
#[inline]
pub(crate) fn may_be_sampled(ptr: *mut u8) -> bool {
    table::counted(ptr as usize)
}

/// Forgets `ptr` if it was sampled; for a pointer [`may_be_sampled`] did
/// not rule out.
#[cold]
#[inline(never)]
pub(crate) fn forget(ptr: *mut u8) {
    table::forget(ptr as usize);
}

/// Records the allocation of `size` bytes at `ptr` as a sample drawn at
/// `mean` ([`bytes_allocated`] said it is one): captures its stack and
/// records it under the reentrancy guard, so allocations made by the
/// unwinder are not sampled in turn.
#[cold]
#[inline(never)]
pub(crate) fn sample(ptr: *mut u8, size: usize, mean: u64) {
    sampling::guarded(|| {
        let stack = capture::capture();
        let (bytes, objects) = sampling::weight(size, mean);
        table::record(ptr as usize, bytes, objects, &stack);
    });
}

#[cfg(all(test, feature = "stacks"))]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::PoisonError;

    use super::*;
    use crate::TrackingAllocator;

    #[inline(never)]
    fn allocate_from_a_distinctive_function(
        alloc: &TrackingAllocator,
        layout: Layout,
        n: usize,
    ) -> Vec<usize> {
        let mut ptrs = Vec::with_capacity(n);
        for _ in 0..n {
            // SAFETY: a valid non-zero layout; the test frees every pointer.
            ptrs.push(unsafe { alloc.alloc(layout) } as usize);
        }
        ptrs
    }

    /// Whether `site`'s stack passes through the function at `entry`: one
    /// of its return addresses lies just after the function's start.
    fn passes_through(site: &meshwatch_proto::v1::HeapSite, entry: usize) -> bool {
        let entry = entry as u64;
        site.stack.as_ref().is_some_and(|s| {
            s.addresses
                .iter()
                .any(|a| (entry..entry + 1024).contains(a))
        })
    }

    #[test]
    fn samples_are_captured_weighted_and_forgotten_when_freed() {
        let _serial = table::tests::SERIAL
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let alloc = TrackingAllocator::system();
        let layout = Layout::from_size_align(4096, 8).unwrap();
        set_sample_interval(64);
        // Sampling is noticed at the thread's next slow path, which only
        // draws its countdown; one comes within the allocator's 64 KiB
        // flush budget.
        let warm = allocate_from_a_distinctive_function(&alloc, layout, 17);
        let ptrs = allocate_from_a_distinctive_function(&alloc, layout, 20);
        set_sample_interval(0);

        let mut reporter = HeapReporter::default();
        let report = reporter.report();
        let entry = allocate_from_a_distinctive_function as *const () as usize;
        let site = report
            .sites
            .iter()
            .find(|s| passes_through(s, entry) && s.live_samples == 20)
            .unwrap_or_else(|| panic!("no site in the caller: {:#x?}", report.sites));
        // The collector is told which object holds every address it must name.
        let stack = site.stack.as_ref().unwrap();
        assert!(
            stack
                .addresses
                .iter()
                .all(|a| report.modules.iter().any(|m| (m.start..m.end).contains(a))),
            "{stack:x?} {:?}",
            report.modules
        );
        assert_eq!(site.live_samples, 20);
        // A 4 KiB allocation at a 64-byte mean is certain to be sampled, so
        // each stands for itself.
        assert_eq!(site.live_bytes, 20 * 4096);
        assert_eq!(site.live_objects, 20);
        let id = site.id;
        let again = reporter.report();
        let site = again.sites.iter().find(|s| s.id == id).unwrap();
        assert!(site.stack.is_none(), "stacks are not resent at once");

        for ptr in ptrs.into_iter().chain(warm) {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { alloc.dealloc(ptr as *mut u8, layout) };
        }
        let after = reporter.report();
        assert!(after.sites.iter().all(|s| s.id != id), "{:?}", after.sites);
    }

    #[test]
    fn nothing_is_sampled_while_sampling_is_off() {
        let _serial = table::tests::SERIAL
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        set_sample_interval(0);
        let alloc = TrackingAllocator::system();
        let layout = Layout::from_size_align(1 << 20, 8).unwrap();
        let ptrs = allocate_from_a_distinctive_function(&alloc, layout, 4);
        let report = HeapReporter::default().report();
        let entry = allocate_from_a_distinctive_function as *const () as usize;
        assert!(report.sites.iter().all(|s| !passes_through(s, entry)));
        for ptr in ptrs {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { alloc.dealloc(ptr as *mut u8, layout) };
        }
    }
}
