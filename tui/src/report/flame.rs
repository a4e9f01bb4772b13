//! Stack samples as a flame graph, with `inferno`.

use crate::evidence::Frame;

/// The collapsed-stack lines inferno reads: frames root first, joined by
/// `;`, then the weight.
pub fn folded(stacks: &[(Vec<Frame>, u64)]) -> Vec<String> {
    let mut lines: Vec<String> = stacks
        .iter()
        .map(|(frames, weight)| {
            let path: Vec<String> = frames
                .iter()
                .rev()
                .map(|frame| {
                    frame
                        .function
                        .replace(';', ":")
                        .replace(char::is_whitespace, "_")
                })
                .collect();
            format!("{} {weight}", path.join(";"))
        })
        .collect();
    lines.sort();
    lines
}

/// An SVG flame graph of `stacks` (innermost frame first, with weights),
/// titled `title`; `count_name` names what the weights count.
///
/// # Errors
///
/// When inferno cannot render the lines.
pub fn flame_graph(
    title: &str,
    count_name: &str,
    stacks: &[(Vec<Frame>, u64)],
) -> std::io::Result<String> {
    let lines = folded(stacks);
    let mut options = inferno::flamegraph::Options::default();
    title.clone_into(&mut options.title);
    count_name.clone_into(&mut options.count_name);
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)?;
    Ok(String::from_utf8_lossy(&svg).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str) -> Frame {
        Frame {
            function: function.to_owned(),
            location: None,
            own: false,
        }
    }

    #[test]
    fn folds_root_first_and_renders_every_function() {
        let stacks = vec![
            (vec![frame("leaf"), frame("parse header"), frame("main")], 3),
            (vec![frame("parse header"), frame("main")], 1),
        ];
        assert_eq!(
            folded(&stacks),
            vec!["main;parse_header 1", "main;parse_header;leaf 3"]
        );
        let svg = flame_graph("loop", "samples", &stacks).unwrap();
        assert!(svg.contains("<svg"));
        for name in ["main", "parse_header", "leaf"] {
            assert!(svg.contains(name), "{name} missing from the flame graph");
        }
    }
}
