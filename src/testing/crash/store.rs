//! [`CrashStore`]: an in-memory page store with a live and a durable image,
//! which works like redb's `CrashBackend`, for tests that crash at any
//! write or sync of the pages.
//!
//! # Contract
//! - `write_page` changes the live image, `sync` copies live to durable,
//!   and [`CrashStore::crash`] gives the image a restarted process would
//!   see — the durable one, optionally with some unsynced page writes
//!   applied whole or torn.
//! - A `resize` is live at once and durable at the next sync; a crash
//!   before it keeps the durable image's size.
//! - With a [`CrashSwitch`], every write, sync and resize goes through it.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

use super::{tick, CrashSwitch};
use crate::error::{Error, Result};
use crate::host::{check_page_args, PageStore};
use crate::types::PageId;

#[derive(Debug, Clone)]
struct Images {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: BTreeSet<u64>,
}

/// A page store with a live and a durable image (see the module docs).
#[derive(Debug)]
pub struct CrashStore {
    page_size: usize,
    images: Mutex<Images>,
    switch: Option<Arc<CrashSwitch>>,
}

impl CrashStore {
    /// `page_count` zeroed pages of `page_size` bytes, all durable.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero page size.
    pub fn new(page_size: usize, page_count: u64) -> Result<Self> {
        let len = usize::try_from(page_count)
            .ok()
            .and_then(|n| n.checked_mul(page_size))
            .ok_or_else(|| Error::config("page_count", "does not fit in memory"))?;
        Self::from_bytes(page_size, vec![0u8; len])
    }

    /// A store whose live and durable image are `bytes`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero page size or a length that is not
    /// a whole number of pages.
    pub fn from_bytes(page_size: usize, bytes: Vec<u8>) -> Result<Self> {
        if page_size == 0 || !bytes.len().is_multiple_of(page_size) {
            return Err(Error::config(
                "page_size",
                format!("{} bytes are not whole pages of {page_size}", bytes.len()),
            ));
        }
        Ok(CrashStore {
            page_size,
            images: Mutex::new(Images {
                durable: bytes.clone(),
                live: bytes,
                unsynced: BTreeSet::new(),
            }),
            switch: None,
        })
    }

    /// Makes writes and syncs go through `switch`.
    #[must_use]
    pub fn with_switch(mut self, switch: Arc<CrashSwitch>) -> Self {
        self.switch = Some(switch);
        self
    }

    /// The live image (what a read sees now).
    #[must_use]
    pub fn live_bytes(&self) -> Vec<u8> {
        self.images.lock().live.clone()
    }

    /// The durable image.
    #[must_use]
    pub fn durable_bytes(&self) -> Vec<u8> {
        self.images.lock().durable.clone()
    }

    /// Pages written since the last sync.
    #[must_use]
    pub fn unsynced_pages(&self) -> Vec<PageId> {
        self.images
            .lock()
            .unsynced
            .iter()
            .map(|p| PageId(*p))
            .collect()
    }

    /// The store a restarted process sees: the durable image. With `seed`,
    /// each page written since the last sync independently keeps its old
    /// contents, gets the new ones, or gets a torn mix (a prefix of the new
    /// bytes over the old ones), as a disk's write cache may leave it.
    #[must_use]
    pub fn crash(&self, seed: Option<u64>) -> CrashStore {
        let im = self.images.lock();
        let mut image = im.durable.clone();
        if let Some(seed) = seed {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for &p in &im.unsynced {
                let off = p as usize * self.page_size;
                if off + self.page_size > image.len() {
                    // Written after a resize that never became durable.
                    continue;
                }
                let new = &im.live[off..off + self.page_size];
                match rng.random_range(0..3u8) {
                    0 => {}
                    1 => image[off..off + self.page_size].copy_from_slice(new),
                    _ => {
                        let n = rng.random_range(0..=self.page_size);
                        image[off..off + n].copy_from_slice(&new[..n]);
                    }
                }
            }
        }
        CrashStore::from_bytes(self.page_size, image).expect("same geometry")
    }
}

impl PageStore for CrashStore {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn page_count(&self) -> u64 {
        (self.images.lock().live.len() / self.page_size) as u64
    }

    fn read_page(&self, page: PageId, buf: &mut [u8]) -> Result<()> {
        let im = self.images.lock();
        check_page_args(
            page,
            (im.live.len() / self.page_size) as u64,
            buf.len(),
            self.page_size,
        )?;
        let off = page.0 as usize * self.page_size;
        buf.copy_from_slice(&im.live[off..off + self.page_size]);
        Ok(())
    }

    fn write_page(&self, page: PageId, data: &[u8]) -> Result<()> {
        let mut im = self.images.lock();
        check_page_args(
            page,
            (im.live.len() / self.page_size) as u64,
            data.len(),
            self.page_size,
        )?;
        tick(self.switch.as_ref(), "writing a page")?;
        let off = page.0 as usize * self.page_size;
        im.live[off..off + self.page_size].copy_from_slice(data);
        im.unsynced.insert(page.0);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut im = self.images.lock();
        tick(self.switch.as_ref(), "syncing the store")?;
        im.durable = im.live.clone();
        im.unsynced.clear();
        Ok(())
    }

    /// The new size is live at once and durable at the next sync; a crash
    /// before it keeps the durable image's size.
    fn resize(&self, page_count: u64) -> Result<()> {
        let mut im = self.images.lock();
        let len = usize::try_from(page_count)
            .ok()
            .and_then(|n| n.checked_mul(self.page_size))
            .ok_or_else(|| Error::InvalidArgument {
                what: "page_count",
                reason: format!("{page_count} pages do not fit in memory"),
            })?;
        tick(self.switch.as_ref(), "resizing the store")?;
        im.live.resize(len, 0);
        im.unsynced.retain(|&p| p < page_count);
        Ok(())
    }
}
