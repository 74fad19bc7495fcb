//! Where a replay's log comes from. A regular file is mapped and searched where it lies: on
//! this machine's kernel, copying a 1.2 GB log out of the page cache took 180 ms of CPU, and
//! touching every page of it mapped 7 ms (the page cache's large folios map whole).
//!
//! A mapped file that another program truncates while it is read would kill the process with
//! SIGBUS and no word of why: a handler says which log shrank, and exits with the code of bad
//! input.

use memmap2::Mmap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A replay's log.
pub enum Log<'a> {
    /// Read chunk by chunk (a pipe, a terminal, anything that reads).
    Stream(Box<dyn Read + Send + 'a>),
    /// Already in memory: searched where it lies.
    Bytes(&'a [u8]),
    /// A mapped file: searched where it lies, its pages given back behind the parser.
    Mapped(&'a MappedLog),
}

impl<'a> Log<'a> {
    pub fn stream(reader: impl Read + Send + 'a) -> Self {
        Log::Stream(Box::new(reader))
    }
}

impl<'a> From<&'a [u8]> for Log<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Log::Bytes(bytes)
    }
}

impl<'a> From<&'a str> for Log<'a> {
    fn from(text: &'a str) -> Self {
        Log::Bytes(text.as_bytes())
    }
}

impl<'a> From<&'a Vec<u8>> for Log<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Log::Bytes(bytes)
    }
}

impl<'a> From<&'a MappedLog> for Log<'a> {
    fn from(map: &'a MappedLog) -> Self {
        Log::Mapped(map)
    }
}

/// A log file mapped for reading, guarded against being truncated under the reader.
pub struct MappedLog {
    map: Mmap,
    slot: Option<usize>,
}

/// Pages are given back in whole units of this many bytes: the page cache maps a file's large
/// folios whole, and giving back part of one splits its mapping.
const RELEASE_UNIT: usize = 2 << 20;

impl MappedLog {
    /// Maps `file` (opened from `path`) when it is a regular file with bytes in it; `None`
    /// when it is anything else, to be read as a stream. The map holds the file as long as it
    /// was when mapped: lines appended later are not read.
    pub fn new(file: &File, path: &Path) -> std::io::Result<Option<MappedLog>> {
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() == 0 || usize::try_from(meta.len()).is_err() {
            return Ok(None);
        }
        // SAFETY: the map is only read. A program that changes the file's bytes meanwhile
        // changes what is read, as with `read`; one that truncates it raises SIGBUS on the
        // pages past the new end, which `guard` turns into a message and exit code 2.
        let map = unsafe { Mmap::map(file)? };
        let _ = map.advise(memmap2::Advice::Sequential);
        let slot = guard(map.as_ptr() as usize, map.len(), path);
        Ok(Some(MappedLog { map, slot }))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Everything before `done` has been parsed: its pages may go (else a replay of a 4 GiB
    /// file would count 4 GiB of page cache as its own memory). Call with `done` growing;
    /// `released` is where the previous call left off, and is moved on.
    pub(crate) fn release(&self, released: &mut usize, done: usize) {
        let upto = done.min(self.map.len()) / RELEASE_UNIT * RELEASE_UNIT;
        if upto <= *released {
            return;
        }
        // SAFETY: the map is read-only and file-backed: pages given back are read from the
        // file again if touched, and nothing before `done` is read again (the ingest copies
        // what it keeps).
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                *released,
                upto - *released,
            )
        };
        *released = upto;
    }
}

impl Drop for MappedLog {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            SLOTS[slot].len.store(0, Ordering::SeqCst);
            SLOTS[slot].start.store(0, Ordering::SeqCst);
        }
    }
}

/// Maps guarded at once; a map beyond these is read unguarded (SIGBUS's own default).
const GUARDED: usize = 8;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    message: AtomicUsize,
    message_len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    message: AtomicUsize::new(0),
    message_len: AtomicUsize::new(0),
};
static SLOTS: [Slot; GUARDED] = [EMPTY; GUARDED];

/// The handler that was in place before ours (wasmtime's, or the default), called for a
/// SIGBUS that is not on a guarded map.
static PREVIOUS: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();

fn guard(start: usize, len: usize, path: &Path) -> Option<usize> {
    install();
    PREVIOUS.get()?;
    let slot = SLOTS.iter().position(|s| {
        s.start
            .compare_exchange(0, usize::MAX, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    })?;
    // Leaked on purpose: the handler may read it at any time, and there is one per map.
    let message: &'static [u8] = Box::leak(
        format!(
            "nixtest: the log {} shrank while it was being read (another program truncated or \
             rewrote it); replay it again once nothing writes to it\n",
            path.display()
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let s = &SLOTS[slot];
    s.message.store(message.as_ptr() as usize, Ordering::SeqCst);
    s.message_len.store(message.len(), Ordering::SeqCst);
    s.len.store(len, Ordering::SeqCst);
    s.start.store(start, Ordering::SeqCst);
    Some(slot)
}

fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid value to fill in; the handler only reads
        // atomics, writes to stderr and exits, or hands over to the previous handler.
        unsafe {
            let mut ours: libc::sigaction = std::mem::zeroed();
            ours.sa_sigaction = on_sigbus as *const () as usize;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut ours.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &ours, &mut previous) == 0 {
                let _ = PREVIOUS.set(previous);
            }
        }
    });
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in &SLOTS {
        let start = s.start.load(Ordering::SeqCst);
        let len = s.len.load(Ordering::SeqCst);
        if start != 0 && start != usize::MAX && addr >= start && addr - start < len {
            let message = s.message.load(Ordering::SeqCst) as *const libc::c_void;
            let message_len = s.message_len.load(Ordering::SeqCst);
            // SAFETY: write(2) and _exit(2) are async-signal-safe; the message is leaked.
            unsafe {
                libc::write(2, message, message_len);
                libc::_exit(2);
            }
        }
    }
    let Some(previous) = PREVIOUS.get() else {
        return;
    };
    // SAFETY: calling the handler that was installed before, as it expects to be called.
    unsafe {
        match previous.sa_sigaction {
            libc::SIG_IGN => {}
            libc::SIG_DFL => {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
            }
            f if previous.sa_flags & libc::SA_SIGINFO != 0 => {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(f);
                f(signal, info, context);
            }
            f => {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(f);
                f(signal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_mapped_log_truncated_while_read_says_so_and_exits_as_bad_input() {
        const CHILD: &str = "NIXTEST_TEST_TRUNCATED_CHILD";
        if let Some(dir) = std::env::var_os(CHILD) {
            let path = Path::new(&dir).join("run.log");
            let mut file = File::create(&path).unwrap();
            file.write_all(&vec![b'x'; 1 << 20]).unwrap();
            let file = File::open(&path).unwrap();
            let map = MappedLog::new(&file, &path).unwrap().unwrap();
            File::create(&path).unwrap();
            // Past the new end: SIGBUS.
            let byte = unsafe { std::ptr::read_volatile(&map.bytes()[1 << 19]) };
            panic!("read {byte} from a truncated map");
        }
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "replay::input::tests::a_mapped_log_truncated_while_read_says_so_and_exits_as_bad_input",
                "--nocapture",
            ])
            .env(CHILD, dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("run.log shrank while it was being read"),
            "{stderr}"
        );
    }

    #[test]
    fn only_regular_files_with_bytes_are_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.log");
        File::create(&empty).unwrap();
        let file = File::open(&empty).unwrap();
        assert!(MappedLog::new(&file, &empty).unwrap().is_none());
        let full = dir.path().join("full.log");
        std::fs::write(&full, "a\nb\n").unwrap();
        let file = File::open(&full).unwrap();
        let map = MappedLog::new(&file, &full).unwrap().unwrap();
        assert_eq!(map.bytes(), b"a\nb\n");
        let null = File::open("/dev/null").unwrap();
        assert!(
            MappedLog::new(&null, Path::new("/dev/null"))
                .unwrap()
                .is_none()
        );
    }
}
