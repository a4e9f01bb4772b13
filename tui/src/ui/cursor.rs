//! Selection in a list that changes under it: the selection is the selected
//! row's id, so it follows the row when rows are re-sorted or added, and
//! falls back to the first row when its row goes away.

use super::input::Intent;

/// Rows a page key moves.
const PAGE: usize = 10;

/// The index of the selected row: the row with `selected`'s id, else the
/// first row; `None` for an empty list.
pub fn index(ids: &[&str], selected: Option<&str>) -> Option<usize> {
    if ids.is_empty() {
        return None;
    }
    Some(
        selected
            .and_then(|s| ids.iter().position(|id| *id == s))
            .unwrap_or(0),
    )
}

/// The id of the selected row.
pub fn current<'a>(ids: &[&'a str], selected: Option<&str>) -> Option<&'a str> {
    index(ids, selected).map(|i| ids[i])
}

/// The id selected after a movement intent; `None` when `intent` does not
/// move or the list is empty.
pub fn moved<'a>(ids: &[&'a str], selected: Option<&str>, intent: Intent) -> Option<&'a str> {
    let at = index(ids, selected)?;
    let last = ids.len() - 1;
    let to = match intent {
        Intent::Up => at.saturating_sub(1),
        Intent::Down => (at + 1).min(last),
        Intent::PageUp => at.saturating_sub(PAGE),
        Intent::PageDown => (at + PAGE).min(last),
        Intent::Top => 0,
        Intent::Bottom => last,
        _ => return None,
    };
    Some(ids[to])
}

/// A scroll offset after a movement intent, for text views.
pub fn scrolled(offset: u16, intent: Intent) -> u16 {
    let page = PAGE as u16;
    match intent {
        Intent::Up => offset.saturating_sub(1),
        Intent::Down => offset.saturating_add(1),
        Intent::PageUp => offset.saturating_sub(page),
        Intent::PageDown => offset.saturating_add(page),
        Intent::Top => 0,
        Intent::Bottom => u16::MAX / 2,
        _ => offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_selected_id_and_clamps() {
        let ids = ["a", "b", "c"];
        assert_eq!(index(&ids, Some("c")), Some(2));
        assert_eq!(index(&ids, Some("gone")), Some(0));
        assert_eq!(index(&[], None), None);
        assert_eq!(moved(&ids, Some("b"), Intent::Down), Some("c"));
        assert_eq!(moved(&ids, Some("c"), Intent::Down), Some("c"));
        assert_eq!(moved(&ids, None, Intent::Up), Some("a"));
        assert_eq!(moved(&ids, None, Intent::Bottom), Some("c"));
        assert_eq!(moved(&ids, None, Intent::Help), None);
        assert_eq!(scrolled(3, Intent::PageUp), 0);
    }
}
