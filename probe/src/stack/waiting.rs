//! Captures a thread that waits in the kernel, without signalling it.
//!
//! A signal is the only way to read a running thread's registers, but it
//! ends some of the system calls it lands in: `poll`, `epoll_wait`, and a
//! socket read or write with a timeout fail with `EINTR` even under
//! `SA_RESTART`, and the service's own code sees the error. A thread that
//! waits (a blocked worker, an idle one) needs no signal: while it sits in
//! the kernel its user stack does not change, and the kernel says where it
//! stopped. `/proc/self/task/TID/syscall` holds the system call number and
//! arguments, then the user stack pointer and program counter (`-1` in
//! place of the number for a thread that waits outside a system call, in
//! a page fault; `running` for one on a CPU). With those, the top of the
//! stack is copied as the signal handler copies it, and the file is read
//! again: the same contents mean the thread was in the same wait all
//! along, so the copy is whole.
//!
//! x86_64 only: DWARF CFI unwinds there from the program counter and stack
//! pointer alone (the frame pointer starts unknown, and is found on the
//! stack where a frame saved it). On aarch64 the first return address is in
//! the link register, which the file does not give, so that architecture
//! keeps the signal.

use std::io::Read;

use super::capture::{RawStack, Registers, STACK_COPY, copy_stack};

/// The file's length is bounded: a number, six arguments and two
/// addresses, each at most 18 characters and a space.
const SYSCALL_FILE_MAX: usize = 9 * 19 + 1;

/// What `/proc/self/task/TID/syscall` says of a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wait {
    /// The whole line, to tell whether the thread moved in between.
    line: [u8; SYSCALL_FILE_MAX],
    len: usize,
    sp: u64,
    pc: u64,
}

/// Reads where thread `tid` waits; `None` when it runs, or the file cannot
/// be read (another kernel, a sandbox).
fn read_wait(tid: i32) -> Option<Wait> {
    let mut file = std::fs::File::open(format!("/proc/self/task/{tid}/syscall")).ok()?;
    let mut line = [0; SYSCALL_FILE_MAX];
    let mut len = 0;
    while len < line.len() {
        match file.read(&mut line[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let (sp, pc) = parse_stack_and_pc(std::str::from_utf8(&line[..len]).ok()?)?;
    Some(Wait { line, len, sp, pc })
}

/// The stack pointer and program counter, the last two fields of the
/// file's line; `None` for `running` or a line of another shape.
fn parse_stack_and_pc(line: &str) -> Option<(u64, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // `-1 SP PC` outside a system call, `NR A1..A6 SP PC` inside one.
    if fields.len() != 3 && fields.len() != 9 {
        return None;
    }
    fields.first()?.parse::<i64>().ok()?;
    let hex = |field: &str| u64::from_str_radix(field.strip_prefix("0x")?, 16).ok();
    Some((
        hex(fields[fields.len() - 2])?,
        hex(fields[fields.len() - 1])?,
    ))
}

/// Captures thread `tid` of this process into `out` if it waits in the
/// kernel; false when it runs, moved during the copy, or cannot be read,
/// and the caller may signal it instead.
pub(super) fn capture_if_waiting(tid: i32, out: &mut RawStack) -> bool {
    let Some(before) = read_wait(tid) else {
        return false;
    };
    out.stack.clear();
    out.stack.resize(STACK_COPY, 0);
    let Ok(buf) = <&mut [u8; STACK_COPY]>::try_from(out.stack.as_mut_slice()) else {
        return false;
    };
    // SAFETY: only system calls, reading this process's own memory.
    let len = unsafe { copy_stack(before.sp, buf) };
    out.stack.truncate(len);
    if read_wait(tid) != Some(before) || len == 0 {
        return false;
    }
    out.regs = Registers {
        pc: before.pc,
        sp: before.sp,
        fp: 0,
        lr: 0,
    };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stack_pointer_and_pc_of_each_shape() {
        let in_call = "7 0x7ffc1 0x1 0xffffffff 0x0 0x0 0x0 0x7ffd5f0c2a28 0x7f1c0b6e1b7d\n";
        assert_eq!(
            parse_stack_and_pc(in_call),
            Some((0x7ffd_5f0c_2a28, 0x7f1c_0b6e_1b7d))
        );
        assert_eq!(
            parse_stack_and_pc("-1 0x7ffd5f0c2a28 0x55d0c1\n"),
            Some((0x7ffd_5f0c_2a28, 0x55_d0c1))
        );
        assert_eq!(parse_stack_and_pc("running\n"), None);
        assert_eq!(parse_stack_and_pc("7 0x1 0x2 0x3\n"), None);
        assert_eq!(parse_stack_and_pc("x 0x1 0x2\n"), None);
    }
}
