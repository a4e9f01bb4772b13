//! The functions a profile spends the most in, as printed after it is
//! written and shown in the TUI.

use std::collections::HashMap;

use meshwatch_api::Frame;

/// One function's share of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopFunction {
    pub function: String,
    /// Weight of the stacks it is the innermost frame of.
    pub own: u64,
    /// Weight of the stacks it is anywhere on, each stack once.
    pub total: u64,
}

/// The `limit` functions with the most weight in `stacks` (each innermost
/// frame first, with its weight): by self, as `pprof -top` lists them, so
/// that the code doing the work comes before the frames every stack
/// passes through; then by total.
pub fn top_functions<'a, F>(
    stacks: impl IntoIterator<Item = (F, u64)>,
    limit: usize,
) -> Vec<TopFunction>
where
    F: IntoIterator<Item = &'a Frame>,
{
    let mut own: HashMap<&str, u64> = HashMap::new();
    let mut total: HashMap<&str, u64> = HashMap::new();
    for (frames, weight) in stacks {
        let mut seen: Vec<&str> = frames.into_iter().map(|f| f.function.as_str()).collect();
        if let Some(leaf) = seen.first() {
            *own.entry(leaf).or_default() += weight;
        }
        seen.sort_unstable();
        seen.dedup();
        for function in seen {
            *total.entry(function).or_default() += weight;
        }
    }
    let mut rows: Vec<TopFunction> = total
        .iter()
        .map(|(&function, &total)| TopFunction {
            function: function.to_owned(),
            own: own.get(function).copied().unwrap_or(0),
            total,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.own
            .cmp(&a.own)
            .then(b.total.cmp(&a.total))
            .then_with(|| a.function.cmp(&b.function))
    });
    rows.truncate(limit);
    rows
}

/// `rows` as a table, each weight written by `unit`.
pub fn table(rows: &[TopFunction], unit: impl Fn(u64) -> String) -> String {
    let mut out = format!("{:>10} {:>10}  function\n", "self", "total");
    for row in rows {
        out.push_str(&format!(
            "{:>10} {:>10}  {}\n",
            unit(row.own),
            unit(row.total),
            row.function
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(functions: &[&str]) -> Vec<Frame> {
        functions
            .iter()
            .map(|f| Frame {
                function: (*f).to_owned(),
                file: String::new(),
                line: 0,
            })
            .collect()
    }

    #[test]
    fn counts_self_at_the_leaf_and_total_once_per_stack() {
        let stacks = [
            (stack(&["alloc", "cache::insert", "main"]), 3000),
            (
                stack(&["alloc", "cache::insert", "cache::insert", "main"]),
                1000,
            ),
            (stack(&["parse", "main"]), 500),
        ];
        let rows = top_functions(stacks.iter().map(|(s, w)| (s, *w)), 10);
        assert_eq!(rows[0].function, "alloc", "the most self first");
        let main = rows.iter().find(|r| r.function == "main").unwrap();
        assert_eq!((main.own, main.total), (0, 4500), "main totals every stack");
        let insert = rows.iter().find(|r| r.function == "cache::insert").unwrap();
        assert_eq!(insert.total, 4000, "recursion counted once");
        let alloc = rows.iter().find(|r| r.function == "alloc").unwrap();
        assert_eq!(alloc.own, 4000);
        let printed = table(&rows, crate::format::bytes);
        assert!(
            printed.lines().nth(1).unwrap().ends_with("alloc"),
            "{printed}"
        );
        assert!(printed.contains("4.4 KiB"), "{printed}");
        assert_eq!(
            top_functions(stacks.iter().map(|(s, w)| (s, *w)), 2).len(),
            2
        );
    }
}
