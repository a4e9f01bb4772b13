//! Captures another thread's registers and the top of its stack, by signal.
//!
//! The watchdog arms one process-wide slot with the target thread's id and
//! sends that thread (and only it: `tgkill`) a real-time signal. The handler
//! runs on the target thread; it allocates nothing and takes no lock: it
//! checks that it is the thread asked for, copies the program counter, stack
//! pointer, frame pointer and link register out of the signal context, and
//! copies up to [`STACK_COPY`] bytes upward from the stack pointer into a
//! static buffer with `process_vm_readv` on its own process, which stops at
//! the first unmapped page instead of faulting. Unwinding happens afterwards,
//! on the watchdog thread, from that copy.
//!
//! # Which signal
//!
//! The highest real-time signal (counting down from `SIGRTMAX`) whose
//! disposition is still the default when the probe first needs it. Not
//! `SIGPROF`, which CPU profilers (gperftools, pprof-rs) own, nor `SIGUSR1`
//! and `SIGUSR2`, which services use for their own purposes, nor `SIGURG`,
//! which the kernel sends for out-of-band TCP data. A signal the service
//! already handles is never taken over; and before every capture the probe
//! checks that its handler is still installed, so a service that takes the
//! signal later only loses stack capture, never its handler, and never gets a
//! signal whose default action would kill it. The handler blocks every other
//! signal while it runs, restores `errno`, and is installed with `SA_RESTART`
//! so that most interrupted system calls resume by themselves.

use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Bytes of stack copied upward from the stack pointer: deep enough for the
/// frames of an async service (a hundred frames of a few hundred bytes).
pub(crate) const STACK_COPY: usize = 64 * 1024;

/// Granularity of the copy: `process_vm_readv` never splits an iovec, so the
/// remote range is cut in pages and the copy stops at the first unmapped one.
const CHUNK: usize = 4096;

/// How long a thread may take to run the handler before the capture is
/// abandoned (a thread that blocks the signal, or is stopped).
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(100);

const IDLE: u8 = 0;
const ARMED: u8 = 1;
const WRITING: u8 = 2;
const DONE: u8 = 3;

/// Why a stack could not be captured. The message goes into the event's
/// `caveat`, so it says what happened in words an operator understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CaptureError {
    /// Every real-time signal already had a handler.
    #[error("no free real-time signal to capture stacks with (the service handles all of them)")]
    NoFreeSignal,
    /// The service installed its own handler on the probe's signal after the
    /// probe did.
    #[error("the service took over signal {0}, which the probe used to capture stacks")]
    SignalTaken(c_int),
    /// `tgkill` failed: the thread has exited.
    #[error("thread {0} could not be signalled (it has exited)")]
    NoSuchThread(i32),
    /// The thread did not run the handler in time: it blocks the signal, or
    /// is stopped.
    #[error("thread {0} did not answer the stack-capture signal (it may block signals)")]
    NoResponse(i32),
}

/// A thread's registers at the moment the signal arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Registers {
    pub pc: u64,
    pub sp: u64,
    pub fp: u64,
    /// The link register on aarch64; zero on x86_64.
    pub lr: u64,
}

/// Registers and the copied top of the stack, starting at `regs.sp`.
#[derive(Debug, Default)]
pub(crate) struct RawStack {
    pub regs: Registers,
    pub stack: Vec<u8>,
}

/// The one capture in flight in the process. Static so that the handler can
/// reach it without any pointer being passed.
struct Slot {
    state: AtomicU8,
    target: AtomicI32,
    regs: [AtomicU64; 4],
    len: AtomicUsize,
    stack: UnsafeCell<[u8; STACK_COPY]>,
}

// SAFETY: `stack` is written only by the handler between its ARMED→WRITING
// and WRITING→DONE transitions, and read only by the capturing thread after
// it saw DONE and before it stores IDLE; the state machine gives each side
// exclusive access in turn, with release/acquire ordering.
unsafe impl Sync for Slot {}

static SLOT: Slot = Slot {
    state: AtomicU8::new(IDLE),
    target: AtomicI32::new(0),
    regs: [
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ],
    len: AtomicUsize::new(0),
    stack: UnsafeCell::new([0; STACK_COPY]),
};

/// Serializes captures: several probes in one process (tests) share the slot.
static CAPTURER: Mutex<()> = Mutex::new(());

/// The signal the handler is installed on, chosen once per process.
static SIGNAL: OnceLock<Result<c_int, CaptureError>> = OnceLock::new();

/// The signal used for capture, installing the handler on first use.
pub(crate) fn signal() -> Result<c_int, CaptureError> {
    SIGNAL.get_or_init(install).clone()
}

fn install() -> Result<c_int, CaptureError> {
    let (low, high) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    for sig in (low..=high).rev() {
        // SAFETY: querying and setting a disposition with valid pointers to
        // zero-initialized `sigaction` structs, which are plain C data.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler_address();
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
            libc::sigfillset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) == 0 {
                return Ok(sig);
            }
        }
    }
    Err(CaptureError::NoFreeSignal)
}

fn handler_address() -> libc::sighandler_t {
    on_signal as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as libc::sighandler_t
}

/// Whether the probe's handler is still the one installed on `sig`.
pub(super) fn still_ours(sig: c_int) -> bool {
    // SAFETY: a query with a valid out-pointer to plain C data.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == handler_address()
    }
}

/// Captures thread `tid` of this process into `out`.
///
/// # Errors
///
/// [`CaptureError`] when no signal is available, the thread is gone, or it
/// did not answer in time.
pub(crate) fn capture(tid: i32, out: &mut RawStack) -> Result<(), CaptureError> {
    let sig = signal()?;
    let _one_at_a_time = CAPTURER.lock().unwrap_or_else(PoisonError::into_inner);
    if !still_ours(sig) {
        return Err(CaptureError::SignalTaken(sig));
    }
    SLOT.target.store(tid, Ordering::Relaxed);
    SLOT.state.store(ARMED, Ordering::Release);
    // SAFETY: plain system calls with integer arguments.
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
    if sent != 0 {
        disarm();
        return Err(CaptureError::NoSuchThread(tid));
    }
    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    loop {
        match SLOT.state.load(Ordering::Acquire) {
            DONE => break,
            ARMED if Instant::now() >= deadline => {
                if disarm() {
                    return Err(CaptureError::NoResponse(tid));
                }
            }
            // Armed and waiting, or the handler is writing (it cannot block,
            // so it finishes soon).
            _ => std::thread::sleep(Duration::from_micros(50)),
        }
    }
    out.regs = Registers {
        pc: SLOT.regs[0].load(Ordering::Relaxed),
        sp: SLOT.regs[1].load(Ordering::Relaxed),
        fp: SLOT.regs[2].load(Ordering::Relaxed),
        lr: SLOT.regs[3].load(Ordering::Relaxed),
    };
    let len = SLOT.len.load(Ordering::Relaxed).min(STACK_COPY);
    out.stack.clear();
    // SAFETY: the state is DONE, so the handler has finished writing and no
    // other capture can start before this one stores IDLE below.
    out.stack
        .extend_from_slice(unsafe { &(&*SLOT.stack.get())[..len] });
    SLOT.state.store(IDLE, Ordering::Release);
    Ok(())
}

/// Withdraws an armed request so that a late signal finds nothing to do.
/// False when the handler has already started writing.
fn disarm() -> bool {
    SLOT.state
        .compare_exchange(ARMED, IDLE, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// The signal handler. Async-signal-safe: atomics, `gettid`, `getpid` and
/// `process_vm_readv` only; no allocation, no lock, `errno` preserved.
extern "C" fn on_signal(_sig: c_int, _info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: `__errno_location` returns this thread's errno; the system calls
    // below may change it and the interrupted code must not notice.
    let errno = unsafe { *libc::__errno_location() };
    let me = i32::try_from(crate::identity::current_tid()).unwrap_or(0);
    if SLOT.target.load(Ordering::Relaxed) == me
        && SLOT
            .state
            .compare_exchange(ARMED, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    {
        // SAFETY: the kernel passes a valid `ucontext_t` to SA_SIGINFO handlers.
        let regs = unsafe { registers(context) };
        for (slot, value) in SLOT.regs.iter().zip([regs.pc, regs.sp, regs.fp, regs.lr]) {
            slot.store(value, Ordering::Relaxed);
        }
        // SAFETY: this handler holds the WRITING state, so it alone touches
        // the buffer until it stores DONE.
        let len = unsafe { copy_stack(regs.sp, &mut *SLOT.stack.get()) };
        SLOT.len.store(len, Ordering::Relaxed);
        SLOT.state.store(DONE, Ordering::Release);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Copies `[sp, sp + buf.len())` of this process into `buf`, page by page,
/// stopping at the first page that is not mapped. Returns the bytes copied.
///
/// # Safety
///
/// Only system calls; safe to call from a signal handler. The copy is a
/// snapshot only if the stack does not change meanwhile: this thread's own
/// (in the handler), or a thread known to wait in the kernel.
pub(super) unsafe fn copy_stack(sp: u64, buf: &mut [u8; STACK_COPY]) -> usize {
    const MAX_IOV: usize = STACK_COPY / CHUNK + 1;
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut remote = [empty; MAX_IOV];
    let mut count = 0;
    let mut addr = sp as usize;
    let end = addr.saturating_add(STACK_COPY);
    while addr < end && count < MAX_IOV {
        let next = ((addr / CHUNK) + 1) * CHUNK;
        let len = next.min(end) - addr;
        remote[count] = libc::iovec {
            iov_base: addr as *mut c_void,
            iov_len: len,
        };
        count += 1;
        addr += len;
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: STACK_COPY,
    };
    // SAFETY: reading our own memory through the kernel, which checks every
    // remote page and stops at the first unmapped one instead of faulting.
    let copied = unsafe {
        libc::process_vm_readv(
            libc::getpid(),
            &local,
            1,
            remote.as_ptr(),
            count as libc::c_ulong,
            0,
        )
    };
    usize::try_from(copied).unwrap_or(0)
}

/// Reads the registers that unwinding starts from out of a signal context.
///
/// # Safety
///
/// `context` must be the `ucontext_t` passed to an SA_SIGINFO handler.
#[cfg(target_arch = "x86_64")]
unsafe fn registers(context: *mut c_void) -> Registers {
    // SAFETY: guaranteed by the caller.
    let gregs = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    Registers {
        pc: gregs[libc::REG_RIP as usize] as u64,
        sp: gregs[libc::REG_RSP as usize] as u64,
        fp: gregs[libc::REG_RBP as usize] as u64,
        lr: 0,
    }
}

/// Reads the registers that unwinding starts from out of a signal context.
///
/// # Safety
///
/// `context` must be the `ucontext_t` passed to an SA_SIGINFO handler.
#[cfg(target_arch = "aarch64")]
unsafe fn registers(context: *mut c_void) -> Registers {
    // SAFETY: guaranteed by the caller.
    let mcontext = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext };
    Registers {
        pc: mcontext.pc,
        sp: mcontext.sp,
        fp: mcontext.regs[29],
        lr: mcontext.regs[30],
    }
}
