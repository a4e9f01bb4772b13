//! Which frames of a stack are the service's own code: the ones a person
//! reads first, in a summary, a leak's suspect or a stack on screen. Here,
//! in the API's crate, so that the collector (which names the suspect) and
//! its clients (which highlight and fold stacks) judge alike.
//!
//! A frame is foreign when either its source file says so (the toolchain's
//! sources are under `/rustc/`, dependencies under cargo's registry or git
//! checkouts, the C library's are relative `./` paths under `sysdeps/`) or
//! its name does (the standard library, tokio, the C library's internal
//! `__` functions and entry points). A frame that could not be named is
//! never the service's own: nothing says it is.
//!
//! The same holds for services in other languages, watched from outside:
//! Node.js's own modules (`node:internal/...`), packages (`node_modules`,
//! Python's `site-packages`), Python's standard library and frozen
//! modules, and the runtimes' native frames (V8's builtins, libuv).

/// Source paths of code that is not the service's.
const FOREIGN_FILES: &[&str] = &[
    "/rustc/",
    "/.cargo/registry/",
    "/.cargo/git/",
    "/sysdeps/",
    "/node_modules/",
    "/site-packages/",
    "/dist-packages/",
    "/lib/python3",
];
/// Source path prefixes of runtimes' own modules: Node.js's built-in
/// modules, Python's frozen ones (`<frozen runpy>`), and the kernel's vDSO
/// (`[vdso]`, where `clock_gettime` runs).
const FOREIGN_FILE_PREFIXES: &[&str] = &["./", "node:", "<", "["];
/// Name prefixes of the standard library's, the runtime's and the C
/// library's functions.
const FOREIGN_PREFIXES: &[&str] = &[
    "std::",
    "core::",
    "alloc::",
    "tokio::",
    "hashbrown::",
    "<tokio::",
    "<core::",
    "<alloc::",
    "<std::",
    "__",
    "Builtins_",
    // V8's perf map names its own code by kind.
    "Builtin:",
    "BytecodeHandler:",
    "Stub:",
    "RegExp:",
    "Handler:",
    "v8::",
    "node::",
    "uv_",
    "uv__",
    "llhttp_",
];
/// Thread and process entry points of the C library.
const ENTRIES: &[&str] = &["start_thread", "clone", "clone3", "_start", "main"];

/// Whether a function name is a placeholder for a frame that could not be
/// named: empty, a bare address, or `module+0xoffset`.
pub fn is_unnamed(name: &str) -> bool {
    name.is_empty()
        || name.starts_with("0x")
        || name.rsplit_once("+0x").is_some_and(|(module, offset)| {
            !module.contains("::") && u64::from_str_radix(offset, 16).is_ok()
        })
}

/// Whether the frame of `function` in `file` (empty when unknown) is the
/// service's own code.
pub fn is_own_code(function: &str, file: &str) -> bool {
    if is_unnamed(function) {
        return false;
    }
    // A C++ thunk, `{virtual override thunk({offset(-56)}, node::X::f(long))}`,
    // belongs where the function it forwards to does.
    let function = match function.strip_prefix('{') {
        Some(thunk) => thunk.split_once(", ").map_or(thunk, |(_, target)| target),
        None => function,
    };
    let foreign_file = FOREIGN_FILE_PREFIXES.iter().any(|p| file.starts_with(p))
        || FOREIGN_FILES.iter().any(|dir| file.contains(dir));
    let foreign_name =
        ENTRIES.contains(&function) || FOREIGN_PREFIXES.iter().any(|p| function.starts_with(p));
    !foreign_file && !foreign_name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_services_frames_from_the_rest() {
        for (function, file) in [
            ("", ""),
            ("core::str::validations::next_code_point", ""),
            ("<tokio::runtime::task::Task as Drop>::drop", ""),
            ("std::thread::sleep", ""),
            ("__libc_start_main", ""),
            ("start_thread", ""),
            ("clock_gettime", "[vdso]"),
            ("libgone.so.1+0x1a2b", ""),
            (
                "__memcmp_evex_movbe",
                "./string/../sysdeps/x86_64/multiarch/memcmp-evex-movbe.S",
            ),
            (
                "memchr",
                "./string/../sysdeps/x86_64/multiarch/memchr-evex.S",
            ),
            ("0x7f00dead", ""),
            (
                "<&str as core::str::pattern::Pattern>::into_searcher",
                "/rustc/59807616e/library/core/src/str/pattern.rs",
            ),
            (
                "hyper::proto::h1::role::parse_headers",
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/hyper-1.7.0/src/proto/h1/role.rs",
            ),
            ("listOnTimeout", "node:internal/timers"),
            ("Builtins_InterpreterEntryTrampoline", ""),
            ("Builtin:InterpreterEntryTrampoline", ""),
            ("BytecodeHandler:LdaZero", ""),
            ("uv__io_poll", ""),
            ("llhttp__internal_execute", ""),
            (
                "{virtual override thunk({offset(-56)}, node::Parser::OnStreamRead(long, uv_buf_t const&))}",
                "",
            ),
            ("send", "/srv/app/node_modules/ws/lib/websocket.js"),
            (
                "WSGIHandler.handle",
                "/srv/venv/lib/python3.11/site-packages/gevent/pywsgi.py",
            ),
            ("_run_module_as_main", "<frozen runpy>"),
            ("run", "/usr/lib/python3.11/threading.py"),
        ] {
            assert!(!is_own_code(function, file), "{function} in {file}");
        }
        for (function, file) in [
            (
                "meshwatch_examples::faults::loop_parser::parse_records",
                "/work/main/examples/src/faults/loop_parser.rs",
            ),
            ("mainframe::run", ""),
            ("spinForever", "/srv/app/spin.js"),
            ("spin_forever", "/srv/app/gevent_service.py"),
        ] {
            assert!(is_own_code(function, file), "{function} in {file}");
        }
    }
}
