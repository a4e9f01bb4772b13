//! Reading stack frames: which ones are the service's own code.

use crate::v1::Frame;

impl Frame {
    /// Whether this frame belongs to the Rust runtime, the standard library
    /// or the C library (or could not be named) rather than to the service's
    /// own code. The probe uses it to judge whether stack samples agree on
    /// the service's code; the collector to name the function a person should
    /// look at first.
    pub fn is_runtime(&self) -> bool {
        const PREFIXES: &[&str] = &[
            "std::", "core::", "alloc::", "tokio::", "<tokio::", "<core::", "<alloc::", "<std::",
            "__",
        ];
        const ENTRIES: &[&str] = &["start_thread", "clone", "clone3", "_start", "main"];
        let name = self.function.as_str();
        name.is_empty() || ENTRIES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(function: &str) -> Frame {
        Frame {
            function: function.to_owned(),
            ..Frame::default()
        }
    }

    #[test]
    fn tells_runtime_frames_from_the_services() {
        for runtime in [
            "",
            "core::str::validations::next_code_point",
            "<tokio::runtime::task::Task as Drop>::drop",
            "std::thread::sleep",
            "__libc_start_main",
            "start_thread",
        ] {
            assert!(named(runtime).is_runtime(), "{runtime}");
        }
        for service in [
            "meshwatch_examples::faults::loop_parser::parse_records",
            "mainframe::run",
        ] {
            assert!(!named(service).is_runtime(), "{service}");
        }
    }
}
