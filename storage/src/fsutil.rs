//! Small filesystem helpers shared by the key store and the daemon's data directory.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes a file atomically with the given permissions: a temporary file beside it is
/// written and fsynced, renamed over the target, and the directory is fsynced, so a crash
/// leaves either the old or the new content, never a torn file.
///
/// # Errors
/// The underlying I/O error.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Whether [`open_regular`] follows a symbolic link in the last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// A link to a regular file is read (an operator's config file may be one).
    Follow,
    /// A link is refused (files inside a backup or a runpack are never links).
    Refuse,
}

/// Opens a file for reading only if it is a regular file, checked on the opened
/// descriptor (so a swap after a path check cannot matter). The open itself never blocks
/// (a FIFO with no writer would block a plain open forever); devices, FIFOs, sockets and
/// directories are refused with a message that says what was found.
///
/// # Errors
/// The open error, or `InvalidInput` naming the kind of file found.
pub fn open_regular(path: &Path, links: Links) -> std::io::Result<fs::File> {
    use rustix::fs::{FileType, Mode, OFlags};
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    if links == Links::Refuse {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|errno| {
        if errno == rustix::io::Errno::LOOP && links == Links::Refuse {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "is a symbolic link (not allowed here)")
        } else {
            std::io::Error::from(errno)
        }
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(std::io::Error::from)?;
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some("a directory"),
        FileType::Fifo => Some("a FIFO"),
        FileType::CharacterDevice => Some("a character device"),
        FileType::BlockDevice => Some("a block device"),
        FileType::Socket => Some("a socket"),
        _ => Some("not a regular file"),
    };
    if let Some(kind) = kind {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("is {kind}, not a regular file")));
    }
    // Reads of a regular file never block anyway; clear the flag for clarity.
    rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::empty()).map_err(std::io::Error::from)?;
    Ok(fs::File::from(fd))
}

/// Reads a whole regular file of at most `max` bytes ([`open_regular`], then a bounded
/// read: a file that grows while it is read is refused too).
///
/// # Errors
/// As [`open_regular`], or `InvalidData` when the file is larger than `max`.
pub fn read_bounded(path: &Path, max: u64, links: Links) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular(path, links)?;
    let size = file.metadata()?.len();
    let too_large = |size: u64| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("is {size} bytes; at most {max} are read"))
    };
    if size > max {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
///
/// # Errors
/// As [`read_bounded`], or `InvalidData` for text that is not UTF-8.
pub fn read_text_bounded(path: &Path, max: u64, links: Links) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, max, links)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "is not UTF-8 text"))
}
