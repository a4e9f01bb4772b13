//! Stacks: the return addresses of a thread, and where they point.
//!
//! The probe captures and unwinds; it never names. Capture happens where
//! time and safety are short (inside the allocator, or for another thread by
//! signal); unwinding another thread happens later on a probe thread through
//! a [`StackSampler`], with the unwind tables already mapped in memory.
//! Naming needs the debug info, which costs tens of MiB once parsed, so it
//! happens in the collector: the probe sends raw addresses with the
//! [`ModuleMap`]'s description of the objects they fall in.
//!
//! Capturing another thread needs the `stacks` feature (default on) on
//! x86_64 or aarch64 Linux; elsewhere [`StackSampler::sample`] says why it
//! has nothing, and the watchdog reports its finding without a stack.

#[cfg(all(
    feature = "stacks",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod capture;
mod objects;
#[cfg(all(
    feature = "stacks",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod rule_caches;
#[cfg(all(
    feature = "stacks",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod unwind;
#[cfg(all(feature = "stacks", target_arch = "x86_64"))]
mod waiting;

pub(crate) use objects::ModuleMap;

#[cfg(all(
    feature = "stacks",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod here;
#[cfg(all(
    feature = "stacks",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub(crate) use here::{prepare_unwinder, unwind_here};

/// Why a thread's stack could not be sampled, in words for the event's
/// `caveat`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StackError {
    /// The signal could not be used or the thread did not answer.
    #[cfg(all(
        feature = "stacks",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    /// This build cannot capture another thread's stack.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// One sample of a thread's stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    /// The code addresses, leaf first: the leaf is the exact instruction,
    /// every other one a return address.
    pub addrs: Vec<u64>,
    /// It took a signal: the thread was running (or could not be read
    /// while it waited), and a system call it was entering may end early.
    pub signalled: bool,
}

/// Samples another thread's stack: read from where it waits in the kernel
/// when it waits ([`waiting`], x86_64), else captured by signal; then
/// unwound.
#[derive(Debug)]
pub(crate) struct StackSampler {
    #[cfg(all(
        feature = "stacks",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    unwinder: unwind::StackUnwinder,
    #[cfg(all(
        feature = "stacks",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    raw: capture::RawStack,
}

impl StackSampler {
    pub fn new() -> Self {
        Self {
            #[cfg(all(
                feature = "stacks",
                any(target_arch = "x86_64", target_arch = "aarch64")
            ))]
            unwinder: unwind::StackUnwinder::new(),
            #[cfg(all(
                feature = "stacks",
                any(target_arch = "x86_64", target_arch = "aarch64")
            ))]
            raw: capture::RawStack {
                regs: capture::Registers::default(),
                stack: Vec::with_capacity(capture::STACK_COPY),
            },
        }
    }

    /// Thread `tid`'s stack now. A thread waiting in the kernel is not
    /// signalled where its stack can be read without (x86_64).
    #[cfg(all(
        feature = "stacks",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    pub fn sample(&mut self, tid: u32) -> Result<Sample, StackError> {
        let tid =
            i32::try_from(tid).map_err(|_| StackError::Unsupported("thread id out of range"))?;
        #[cfg(target_arch = "x86_64")]
        let signalled = !waiting::capture_if_waiting(tid, &mut self.raw);
        #[cfg(not(target_arch = "x86_64"))]
        let signalled = true;
        if signalled {
            capture::capture(tid, &mut self.raw)?;
        }
        Ok(Sample {
            addrs: self.unwinder.unwind(&self.raw),
            signalled,
        })
    }

    /// Without the `stacks` feature, or on another architecture, there is
    /// no stack to give.
    #[cfg(not(all(
        feature = "stacks",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    pub fn sample(&mut self, _tid: u32) -> Result<Sample, StackError> {
        Err(StackError::Unsupported(if cfg!(feature = "stacks") {
            "stack capture is not supported on this architecture"
        } else {
            "the probe was built without its `stacks` feature"
        }))
    }
}

#[cfg(all(
    test,
    feature = "stacks",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    /// Spins until `stop`, saying `spinning` once it is in the loop.
    #[inline(never)]
    fn spin_in_a_distinctively_named_function(stop: &AtomicBool, spinning: &AtomicBool) -> u64 {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n = std::hint::black_box(n.wrapping_add(1));
            spinning.store(true, Ordering::Relaxed);
        }
        n
    }

    #[test]
    fn samples_and_unwinds_a_spinning_thread() {
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let spinner = {
            let (stop, spinning) = (stop.clone(), spinning.clone());
            std::thread::spawn(move || {
                tx.send(crate::identity::current_tid()).unwrap();
                spin_in_a_distinctively_named_function(&stop, &spinning)
            })
        };
        let tid = rx.recv().unwrap();
        while !spinning.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
        let mut sampler = StackSampler::new();
        let sample = sampler.sample(tid).unwrap();
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        assert!(sample.signalled, "a running thread takes a signal");
        let addrs = sample.addrs;
        assert!(addrs.len() >= 3, "{addrs:x?}");
        // The spinning function is at the leaf or, in a debug build where
        // the atomic load it calls is not inlined, up to two frames above it.
        let entry = spin_in_a_distinctively_named_function as *const () as u64;
        assert!(
            addrs[..3].iter().any(|a| (entry..entry + 4096).contains(a)),
            "{addrs:x?}, function at {entry:#x}"
        );
        // Every address lies in an object the collector is told about.
        let modules = ModuleMap::default().modules_for(addrs.iter().copied());
        assert!(
            addrs
                .iter()
                .all(|a| modules.iter().any(|m| (m.start..m.end).contains(a))),
            "{addrs:x?} {modules:?}"
        );
        // The capture used a real-time signal the probe still owns; a thread
        // that is gone is an error, not a hang.
        let sig = capture::signal().unwrap();
        assert!(sig >= libc::SIGRTMIN() && sig <= libc::SIGRTMAX());
        assert!(capture::still_ours(sig));
        assert_eq!(
            sampler.sample(i32::MAX as u32),
            Err(StackError::Capture(capture::CaptureError::NoSuchThread(
                i32::MAX
            )))
        );
        // The unwinder walked past the leaf, through std's thread entry, into
        // the C library that started the thread.
        assert!(modules.len() >= 2, "{modules:?}");
    }

    /// Waits for a datagram on `socket`, which has a read timeout.
    #[inline(never)]
    fn wait_in_a_distinctively_named_read(socket: &std::net::UdpSocket) -> std::io::Result<usize> {
        let mut buf = [0u8; 64];
        std::hint::black_box(socket.recv(&mut buf))
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_thread_waiting_in_a_read_with_a_timeout_is_sampled_without_a_signal() {
        use std::net::UdpSocket;
        use std::time::Duration;

        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let address = socket.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            tx.send(crate::identity::current_tid()).unwrap();
            wait_in_a_distinctively_named_read(&socket)
        });
        let tid = rx.recv().unwrap();
        // Until it waits in recvfrom (45).
        let path = format!("/proc/self/task/{tid}/syscall");
        while !std::fs::read_to_string(&path).unwrap().starts_with("45 ") {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut sampler = StackSampler::new();
        let entry = wait_in_a_distinctively_named_read as *const () as u64;
        for _ in 0..20 {
            let sample = sampler.sample(tid).unwrap();
            assert!(!sample.signalled, "{sample:x?}");
            assert!(
                sample
                    .addrs
                    .iter()
                    .any(|a| (entry..entry + 4096).contains(a)),
                "the waiting function is on the stack: {:x?}, function at {entry:#x}",
                sample.addrs
            );
        }
        // The read returns what it was waiting for, not `Interrupted`.
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"its own result", address)
            .unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), b"its own result".len());
    }
}
