//! Chunk-sized buffers reused, and chunk reads and writes that bypass the page cache.
//!
//! Why: a chunk is 64 MiB. A fresh buffer that size is fresh memory, its pages faulted in and
//! zeroed for every chunk; and reading or writing a model's gigabytes through the page cache
//! makes the kernel allocate and fill as many pages. On the VM fleet measures on, memory touched
//! for the first time is dear (a 5th GiB took 6.8 s to touch where the first took 0.4 s), and
//! eight writers of 1 GiB each took 13 s and 21 CPU-seconds through the page cache, 2.6 s and
//! 0.8 with direct I/O. A node fetching a model from its peers is bound by that CPU, so chunk
//! buffers are kept and reused (anonymous maps: page-aligned, as `O_DIRECT` needs), and whole
//! chunks are written and served with `O_DIRECT` where the file system takes it (else through the
//! page cache, as before).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// Direct I/O needs the buffer, the file offset and the length aligned to the device's logical
/// block; 4 KiB covers every disk fleet runs on.
pub const ALIGN: usize = 4096;
/// Buffers kept for reuse, per process, by default: enough for what an agent has out at once
/// (2–4 chunks in flight, the 4 recent ones, a few being served; ~8 in the peers bench) with
/// room to spare: 12 × 64 MiB is 768 MiB at most, on machines rented for their hundreds of GB.
const KEEP: usize = 12;
static KEPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(KEEP);

/// Sets how many buffers the process keeps (a bench running several agents in one
/// process gives each its own share).
pub fn keep(n: usize) {
    KEPT.store(n, std::sync::atomic::Ordering::Relaxed);
}

fn kept() -> usize {
    KEPT.load(std::sync::atomic::Ordering::Relaxed)
}

static POOL: Mutex<Vec<memmap2::MmapMut>> = Mutex::new(Vec::new());

/// A chunk's bytes in a buffer from the pool (an anonymous map: page-aligned, as direct I/O
/// needs); back to the pool when dropped. Derefs to the bytes.
pub struct ChunkBytes {
    buf: Backing,
    len: usize,
}

enum Backing {
    Map(memmap2::MmapMut),
    Vec(Vec<u8>),
}

impl ChunkBytes {
    /// Room for `len` bytes, aligned, from the pool; the contents are unspecified (a reused
    /// buffer keeps old bytes): the caller overwrites all of it ([`ChunkBytes::bytes_mut`]).
    pub fn take(len: usize) -> ChunkBytes {
        let reused = {
            let mut pool = POOL.lock().expect("buffer pool");
            pool.iter().position(|b| b.len() >= len).map(|i| pool.swap_remove(i))
        };
        let buf = match reused {
            Some(m) => Backing::Map(m),
            None => match memmap2::MmapMut::map_anon(len.max(1)) {
                Ok(m) => Backing::Map(m),
                // No map to be had (address space): a plain buffer, written buffered.
                Err(_) => Backing::Vec(vec![0u8; len]),
            },
        };
        ChunkBytes { buf, len }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.buf {
            Backing::Map(m) => &mut m[..self.len],
            Backing::Vec(v) => &mut v[..self.len],
        }
    }

    /// Keeps the first `n` bytes.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    /// Whether a direct write can take these bytes as they lie.
    fn direct_ok(&self) -> bool {
        !self.is_empty() && self.as_ptr().align_offset(ALIGN) == 0 && self.len.is_multiple_of(ALIGN)
    }
}

impl std::ops::Deref for ChunkBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.buf {
            Backing::Map(m) => &m[..self.len],
            Backing::Vec(v) => &v[..self.len],
        }
    }
}

impl AsRef<[u8]> for ChunkBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for ChunkBytes {
    fn from(v: Vec<u8>) -> ChunkBytes {
        let len = v.len();
        ChunkBytes { buf: Backing::Vec(v), len }
    }
}

impl std::fmt::Debug for ChunkBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkBytes({} bytes)", self.len)
    }
}

impl Drop for ChunkBytes {
    fn drop(&mut self) {
        if let Backing::Map(m) = std::mem::replace(&mut self.buf, Backing::Vec(Vec::new())) {
            let mut pool = POOL.lock().expect("buffer pool");
            if pool.len() < kept() {
                pool.push(m);
            }
        }
    }
}

/// Writes `bytes` at `offset` of `direct` (a file opened with `O_DIRECT`), as they lie.
/// `Ok(false)`: not written, it cannot be direct (unaligned address, offset or length, or the
/// file system refused it); the caller writes it buffered.
pub fn write_direct(direct: &File, bytes: &ChunkBytes, offset: u64) -> std::io::Result<bool> {
    if !offset.is_multiple_of(ALIGN as u64) || !bytes.direct_ok() {
        return Ok(false);
    }
    match direct.write_all_at(bytes, offset) {
        Ok(()) => Ok(true),
        // EINVAL: this file system or device takes no direct I/O of this shape.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Fills `buf` from `offset` of `path` around the page cache (`O_DIRECT`), where the shape and
/// the file system allow. `Ok(false)`: not read; the caller reads it buffered. (A chunk served to
/// a peer is read once; through the page cache it would cost fresh pages and a second copy.)
pub fn read_direct(path: &std::path::Path, buf: &mut ChunkBytes, offset: u64) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    if !offset.is_multiple_of(ALIGN as u64) || !buf.direct_ok() {
        return Ok(false);
    }
    let Ok(f) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path) else {
        return Ok(false);
    };
    match f.read_exact_at(buf.bytes_mut(), offset) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `path` opened for direct writes, when the file system allows it (tmpfs, for one, does not).
pub fn open_direct(path: &std::path::Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_bytes_have_the_length_asked_an_aligned_start_and_are_reused() {
        let mut c = ChunkBytes::take(10_000);
        assert_eq!(c.len(), 10_000);
        assert_eq!(c.as_ptr().align_offset(ALIGN), 0);
        c.bytes_mut().fill(7);
        c.truncate(9_000);
        assert_eq!(c.len(), 9_000);
        assert!(c.iter().all(|b| *b == 7));
        drop(c);
        let d = ChunkBytes::take(5_000);
        assert_eq!((d.len(), d.as_ptr().align_offset(ALIGN)), (5_000, 0));
    }

    #[test]
    fn direct_writes_land_the_bytes_and_unaligned_ones_are_left_to_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![0u8; 3 * ALIGN]).unwrap();
        let mut bytes = ChunkBytes::take(2 * ALIGN);
        for (i, b) in bytes.bytes_mut().iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        if let Some(d) = open_direct(&p) {
            // A file system without direct I/O refuses at open (skipped) or at write (Ok(false)).
            if write_direct(&d, &bytes, ALIGN as u64).unwrap() {
                let back = std::fs::read(&p).unwrap();
                assert_eq!(&back[ALIGN..3 * ALIGN], &bytes[..]);
                assert!(back[..ALIGN].iter().all(|b| *b == 0));
            }
            assert!(!write_direct(&d, &bytes, 100).unwrap(), "unaligned offset");
            let short: ChunkBytes = vec![1u8; 100].into();
            assert!(!write_direct(&d, &short, 0).unwrap(), "unaligned length");
        }
    }
}
