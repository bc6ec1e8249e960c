use super::*;

/// The file name of a database whose next flush panics (fault
/// injection for the VFS's close path).
pub(in crate::sqlite) static PANIC_IN_FLUSH: std::sync::Mutex<Option<&'static str>> =
    std::sync::Mutex::new(None);

/// Panics once if `path` is the file [`PANIC_IN_FLUSH`] names.
pub(super) fn maybe_panic_in_flush(path: &Path) {
    let mut hook = PANIC_IN_FLUSH.lock().unwrap_or_else(|e| e.into_inner());
    if hook.is_some_and(|name| path.ends_with(name)) {
        *hook = None;
        drop(hook);
        panic!("injected: flush of {}", path.display());
    }
}

#[test]
fn heal_reports_name_the_page_as_sqlite_does() {
    let p = PageId(9);
    assert_eq!(
        sqlite_numbered(p, "page 9 is corrupt: checksum 0x1 does not match"),
        "page 10 is corrupt: checksum 0x1 does not match"
    );
    assert_eq!(
        sqlite_numbered(
            p,
            "no good copy: its copy of page 9 is stale; page 90 and subpage 9 stay"
        ),
        "no good copy: its copy of page 10 is stale; page 90 and subpage 9 stay"
    );
    assert_eq!(sqlite_numbered(p, "page 9"), "page 10");
    assert_eq!(sqlite_numbered(p, "page "), "page ");
    assert_eq!(sqlite_numbered(p, "nothing here"), "nothing here");
    assert_eq!(sqlite_numbered(p, "seite 9 — page 9"), "seite 9 — page 10");
}

proptest::proptest! {
    /// The page's own id becomes its SQLite number; text around it and
    /// any other page's number are kept.
    #[test]
    fn only_the_pages_own_number_changes(
        id in 0u64..1_000_000,
        other in 0u64..1_000_000,
        before in "[a-z ]{0,12}",
        after in "[a-z:;,. ]{0,12}",
    ) {
        let p = PageId(id);
        let text = format!("{before}:page {id}{after}");
        proptest::prop_assert_eq!(
            sqlite_numbered(p, &text),
            format!("{before}:page {}{after}", id + 1)
        );
        proptest::prop_assume!(other != id);
        let text = format!("{before}:page {other}{after}");
        proptest::prop_assert_eq!(sqlite_numbered(p, &text), text.clone());
    }
}
