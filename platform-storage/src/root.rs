//! A directory that paths from outside (URLs, uploads, API input) can only reach into.
//!
//! Relative paths are checked before use (no `..`, no absolute paths, no NUL bytes, no
//! backslashes, no hidden components), and then opened by the kernel relative to the root's
//! directory handle with `RESOLVE_BENEATH`: a symlink that leads out of the root, even one
//! created after the check, fails to open. On kernels without `openat2` (before Linux 5.6) the
//! resolved path is compared with the root's instead.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// The error returned for a relative path that may not be used, or a file that cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The path is not a plain relative path inside the root.
    #[error("refused path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given (lossy).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Nothing usable is at the path (missing, a directory, or reached through a symlink that
    /// leaves the root).
    #[error("{path:?} not found under {root}")]
    NotFound {
        /// The relative path.
        path: String,
        /// The root.
        root: String,
    },
    /// A directory that would be served holds repositories, or lies inside them.
    #[error(
        "{served} would be served and overlaps the repositories at {repositories}: repository data is never served as static files"
    )]
    ServesRepositories {
        /// The directory that would be served.
        served: String,
        /// Where the repositories are.
        repositories: String,
    },
    /// The file system failed.
    #[error("{operation} {path:?} under {root}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The relative path.
        path: String,
        /// The root.
        root: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// Returns whether the error means "no such file here", as opposed to a refused path or a
    /// failing disk.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// One version of one file or directory: the same device, inode, size, modification and change
/// times mean the same file, unchanged (any write or `chmod` moves the change time; adding,
/// removing or renaming an entry moves a directory's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileVersion {
    device: (u32, u32),
    inode: u64,
    /// The size in bytes.
    pub len: u64,
    /// Seconds and nanoseconds since the Unix epoch of the last modification.
    pub modified: (i64, u32),
    changed: (i64, u32),
}

impl FileVersion {
    const MASK: rustix::fs::StatxFlags = rustix::fs::StatxFlags::TYPE
        .union(rustix::fs::StatxFlags::INO)
        .union(rustix::fs::StatxFlags::SIZE)
        .union(rustix::fs::StatxFlags::MTIME)
        .union(rustix::fs::StatxFlags::CTIME);

    fn of_regular_file(stat: &rustix::fs::Statx) -> Option<Self> {
        Self::of(stat, rustix::fs::FileType::RegularFile)
    }

    fn of(stat: &rustix::fs::Statx, expected: rustix::fs::FileType) -> Option<Self> {
        let kind = rustix::fs::FileType::from_raw_mode(u32::from(stat.stx_mode));
        (kind == expected).then_some(Self {
            device: (stat.stx_dev_major, stat.stx_dev_minor),
            inode: stat.stx_ino,
            len: stat.stx_size,
            modified: (stat.stx_mtime.tv_sec, stat.stx_mtime.tv_nsec),
            changed: (stat.stx_ctime.tv_sec, stat.stx_ctime.tv_nsec),
        })
    }

    /// The time of the last modification.
    pub fn modified_time(&self) -> std::time::SystemTime {
        Self::time(self.modified)
    }

    /// The time of the last change (of content, metadata or, for a directory, entries).
    pub fn changed_time(&self) -> std::time::SystemTime {
        Self::time(self.changed)
    }

    fn time((seconds, nanoseconds): (i64, u32)) -> std::time::SystemTime {
        u64::try_from(seconds)
            .ok()
            .and_then(|seconds| {
                std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(seconds, nanoseconds))
            })
            .unwrap_or(std::time::UNIX_EPOCH)
    }
}

/// Checks that `path` is a plain relative path: components separated by `/`, none empty, `.`,
/// `..` or starting with `.`, no NUL bytes or backslashes.
///
/// # Errors
///
/// Returns [`StorageError::InvalidPath`] naming what is wrong.
pub fn check_relative(path: &str) -> Result<(), StorageError> {
    let invalid = |reason| StorageError::InvalidPath { path: path.to_owned(), reason };
    if path.is_empty() {
        return Err(invalid("empty"));
    }
    if path.starts_with('/') {
        return Err(invalid("absolute paths are not accepted"));
    }
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if path.contains('\\') {
        return Err(invalid("contains a backslash"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(invalid("contains an empty component")),
            "." | ".." => return Err(invalid("contains a . or .. component")),
            hidden if hidden.starts_with('.') => {
                return Err(invalid("hidden names (starting with '.') are not accepted"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A directory of the storage, opened once; every access goes through it.
#[derive(Clone, Debug)]
pub struct Root {
    path: Arc<Path>,
    dir: Arc<OwnedFd>,
}

impl Root {
    /// Opens (creating it if needed) the directory at `path`, which must be absolute.
    ///
    /// # Errors
    ///
    /// Fails when the directory cannot be created or opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref();
        let failed = |operation, source| StorageError::Io {
            operation,
            path: String::new(),
            root: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(path).map_err(|e| failed("cannot create", e))?;
        let canonical = path.canonicalize().map_err(|e| failed("cannot resolve", e))?;
        let dir = rustix::fs::open(
            &canonical,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failed("cannot open", e.into()))?;
        Ok(Self { path: canonical.into(), dir: Arc::new(dir) })
    }

    /// Returns the root's absolute, canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the absolute path of `relative`, after checking it (the file need not exist).
    ///
    /// # Errors
    ///
    /// Fails when `relative` is not a plain relative path.
    pub fn join(&self, relative: &str) -> Result<PathBuf, StorageError> {
        check_relative(relative)?;
        Ok(self.path.join(relative))
    }

    fn error(&self, operation: &'static str, relative: &str, source: io::Error) -> StorageError {
        let root = self.path.display().to_string();
        // EXDEV: the path would leave the root; ELOOP: a symlink where none may be; ENOTDIR: a
        // file where a directory was expected.
        let outside = [rustix::io::Errno::XDEV, rustix::io::Errno::LOOP, rustix::io::Errno::NOTDIR]
            .iter()
            .any(|errno| source.raw_os_error() == Some(errno.raw_os_error()));
        if source.kind() == io::ErrorKind::NotFound || outside {
            StorageError::NotFound { path: relative.to_owned(), root }
        } else {
            StorageError::Io { operation, path: relative.to_owned(), root, source }
        }
    }

    /// Opens `relative` beneath the root with `flags`.
    fn open_beneath(
        &self,
        relative: &str,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, StorageError> {
        check_relative(relative)?;
        // openat2 refuses O_PATH with flags that do not apply to it, such as O_NOCTTY.
        let flags = if flags.contains(OFlags::PATH) {
            flags | OFlags::CLOEXEC
        } else {
            flags | OFlags::CLOEXEC | OFlags::NOCTTY
        };
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(self.dir.as_fd(), relative, flags, mode, resolve) {
            Ok(fd) => Ok(fd),
            Err(rustix::io::Errno::NOSYS) => self.open_checked(relative, flags, mode),
            Err(errno) => Err(self.error("cannot open", relative, errno.into())),
        }
    }

    /// The fallback without `openat2`: open, then check where the descriptor really points.
    fn open_checked(
        &self,
        relative: &str,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, StorageError> {
        let fd = rustix::fs::openat(self.dir.as_fd(), relative, flags, mode)
            .map_err(|errno| self.error("cannot open", relative, errno.into()))?;
        let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        let real =
            std::fs::read_link(link).map_err(|e| self.error("cannot resolve", relative, e))?;
        if real.starts_with(&*self.path) {
            Ok(fd)
        } else {
            Err(StorageError::NotFound {
                path: relative.to_owned(),
                root: self.path.display().to_string(),
            })
        }
    }

    /// Opens the regular file at `relative` for reading.
    ///
    /// # Errors
    ///
    /// [`StorageError::NotFound`] when nothing, a directory or something else than a regular
    /// file is there, or the path leads out of the root; [`StorageError::InvalidPath`] for a
    /// refused path.
    pub fn open_file(&self, relative: &str) -> Result<(File, std::fs::Metadata), StorageError> {
        let fd = self.open_beneath(relative, OFlags::RDONLY, Mode::empty())?;
        let file = File::from(fd);
        let metadata = file.metadata().map_err(|e| self.error("cannot stat", relative, e))?;
        if !metadata.is_file() {
            return Err(StorageError::NotFound {
                path: relative.to_owned(),
                root: self.path.display().to_string(),
            });
        }
        Ok((file, metadata))
    }

    /// Returns the metadata of what is at `relative` (file or directory), resolved like
    /// [`Root::open_file`].
    ///
    /// # Errors
    ///
    /// As [`Root::open_file`], but a directory is not an error.
    pub fn metadata(&self, relative: &str) -> Result<std::fs::Metadata, StorageError> {
        // fstat works on an O_PATH descriptor, which needs no read permission.
        let fd = self.open_beneath(relative, OFlags::PATH, Mode::empty())?;
        File::from(fd).metadata().map_err(|e| self.error("cannot stat", relative, e))
    }

    /// Opens the regular file at `relative` for reading, like [`Root::open_file`], and returns
    /// its [`FileVersion`].
    ///
    /// # Errors
    ///
    /// As [`Root::open_file`].
    pub fn open_file_version(&self, relative: &str) -> Result<(File, FileVersion), StorageError> {
        let fd = self.open_beneath(relative, OFlags::RDONLY, Mode::empty())?;
        let stat = rustix::fs::statx(&fd, "", rustix::fs::AtFlags::EMPTY_PATH, FileVersion::MASK)
            .map_err(|errno| self.error("cannot stat", relative, errno.into()))?;
        match FileVersion::of_regular_file(&stat) {
            Some(version) => Ok((File::from(fd), version)),
            None => Err(StorageError::NotFound {
                path: relative.to_owned(),
                root: self.path.display().to_string(),
            }),
        }
    }

    /// Returns the [`FileVersion`] of the regular file `relative` names now, or `None`.
    ///
    /// This follows symlinks wherever they lead, so it must only serve to recognise a file
    /// opened before with [`Root::open_file_version`] (same device, inode and times), never to
    /// decide what to open. It costs one `statx`, against `openat2`, `statx` and `close` for
    /// opening the file again.
    pub fn current_version(&self, relative: &str) -> Option<FileVersion> {
        check_relative(relative).ok()?;
        let stat = rustix::fs::statx(
            self.dir.as_fd(),
            relative,
            rustix::fs::AtFlags::empty(),
            FileVersion::MASK,
        )
        .ok()?;
        FileVersion::of_regular_file(&stat)
    }

    /// Returns the [`FileVersion`] of the directory `relative` names now (`""`: the root), or
    /// `None`. Its modification and change times move when an entry is added, removed or
    /// renamed. Like [`Root::current_version`], it follows symlinks anywhere: only for
    /// recognising, never for opening.
    pub fn directory_version(&self, relative: &str) -> Option<FileVersion> {
        let stat = if relative.is_empty() {
            rustix::fs::statx(
                self.dir.as_fd(),
                "",
                rustix::fs::AtFlags::EMPTY_PATH,
                FileVersion::MASK,
            )
        } else {
            check_relative(relative).ok()?;
            rustix::fs::statx(
                self.dir.as_fd(),
                relative,
                rustix::fs::AtFlags::empty(),
                FileVersion::MASK,
            )
        };
        FileVersion::of(&stat.ok()?, rustix::fs::FileType::Directory)
    }

    /// Returns whether a regular file exists at `relative`.
    pub fn contains_file(&self, relative: &str) -> bool {
        self.open_file(relative).is_ok()
    }

    /// Writes `bytes` to `relative` atomically: into a new temporary file in the same
    /// directory, flushed to disk, then renamed over the target, and the directory flushed.
    /// Readers see the old content or the new, never a part. Missing directories are created.
    ///
    /// # Errors
    ///
    /// Fails when the path is refused or the file system fails; the target is then unchanged
    /// and no temporary file is left.
    pub fn write_atomic(&self, relative: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let (dir, name) = self.parent_of(relative)?;
        let temporary = format!(".tmp-{}-{name}", uuid::Uuid::new_v4().simple());
        let written = (|| {
            let fd = rustix::fs::openat(
                dir.as_fd(),
                temporary.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
            let mut file = File::from(fd);
            file.write_all(bytes)?;
            file.sync_all()?;
            rustix::fs::renameat(dir.as_fd(), temporary.as_str(), dir.as_fd(), name)?;
            rustix::fs::fsync(dir.as_fd())?;
            Ok::<_, io::Error>(())
        })();
        written.map_err(|source| {
            let _ =
                rustix::fs::unlinkat(dir.as_fd(), temporary.as_str(), rustix::fs::AtFlags::empty());
            self.error("cannot write", relative, source)
        })
    }

    /// Moves the file at the absolute `source` (on the same file system) to `relative`,
    /// replacing what is there, and flushes the directory.
    ///
    /// # Errors
    ///
    /// Fails when the path is refused or the rename fails.
    pub fn persist(&self, source: &Path, relative: &str) -> Result<(), StorageError> {
        let (dir, name) = self.parent_of(relative)?;
        rustix::fs::renameat(rustix::fs::CWD, source, dir.as_fd(), name)
            .and_then(|()| rustix::fs::fsync(dir.as_fd()))
            .map_err(|e| self.error("cannot move into place", relative, e.into()))
    }

    /// Opens (creating as needed) the directory that holds `relative`; returns it and the
    /// file name.
    fn parent_of<'a>(&self, relative: &'a str) -> Result<(OwnedFd, &'a str), StorageError> {
        check_relative(relative)?;
        let (parent, name) = match relative.rsplit_once('/') {
            Some((parent, name)) => (Some(parent), name),
            None => (None, relative),
        };
        let dir = match parent {
            None => rustix::io::dup(self.dir.as_fd())
                .map_err(|e| self.error("cannot open", relative, e.into()))?,
            Some(parent) => {
                let mut built = String::new();
                for component in parent.split('/') {
                    if !built.is_empty() {
                        built.push('/');
                    }
                    built.push_str(component);
                    match rustix::fs::mkdirat(
                        self.dir.as_fd(),
                        built.as_str(),
                        Mode::from_raw_mode(0o755),
                    ) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(errno) => {
                            return Err(self.error("cannot create", &built, errno.into()));
                        }
                    }
                }
                self.open_beneath(parent, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?
            }
        };
        Ok((dir, name))
    }

    /// Returns the temporary directory for files on their way into this root: on the same
    /// file system, so [`Root::persist`] is a rename.
    ///
    /// # Errors
    ///
    /// Fails when it cannot be created.
    pub fn staging_dir(&self) -> Result<PathBuf, StorageError> {
        let dir = self.path.join(".staging");
        std::fs::create_dir_all(&dir).map_err(|e| self.error("cannot create", ".staging", e))?;
        Ok(dir)
    }
}
