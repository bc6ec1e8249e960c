//! The manager's [`PageSource`]: single pages from the head's chain, for
//! repair when no replica has a good copy, never a stale one (the rule is in
//! the [`snapshot`](super) module docs).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::inner::Inner;
use crate::error::{Error, Result};
use crate::host::PageSource;
use crate::types::{Lsn, PageId};

/// The [`PageSource`] of a manager: single pages from the head's chain,
/// never stale ones (see the module docs for the rule).
#[derive(Debug, Clone)]
pub struct SnapshotPageSource {
    pub(super) inner: Arc<Inner>,
}

impl PageSource for SnapshotPageSource {
    fn name(&self) -> String {
        match &*self.inner.head.read() {
            Some(h) => format!("snapshot {}", h.id),
            None => "snapshot (none taken)".into(),
        }
    }

    fn read_page(&self, page: PageId, not_older_than: Option<Lsn>, buf: &mut [u8]) -> Result<bool> {
        let inner = &self.inner;
        inner.check_alive()?;
        if buf.len() != inner.page_size {
            return Err(Error::BufferSize {
                expected: inner.page_size,
                actual: buf.len(),
            });
        }
        let Some(head) = inner.head.read().clone() else {
            return Ok(false);
        };
        if inner.head_unknown.load(Ordering::Acquire) {
            return Ok(false);
        }
        let trusted = inner.dirty.trusted();
        if trusted && inner.dirty.contains(page.0) {
            return Ok(false);
        }
        match not_older_than {
            Some(lsn) if head.lsn < lsn => return Ok(false),
            None if !trusted => return Ok(false),
            _ => {}
        }
        inner.read_from_chain(&head.chain, page, buf)
    }
}
