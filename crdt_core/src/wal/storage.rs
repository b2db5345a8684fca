//! The few file operations the log needs, behind a trait: the real filesystem by default, and in tests a
//! simulated disk that can lose, tear and reorder unsynced writes or fail an fsync on cue.
//!
//! Names are relative to the log's directory and use `/` for the one level of subdirectories the log has
//! (the quarantine). Durability follows POSIX: data is durable after [`Storage::sync`] of the file; a
//! created, renamed or removed name only after [`Storage::sync_dir`] of its directory.
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::frame;

/// File operations of the write-ahead log.
pub trait Storage: Send + fmt::Debug {
    /// Names of the entries (files and directories) in `dir` (`""`: the log directory itself).
    fn list(&mut self, dir: &str) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>>;
    /// Up to `len` bytes of a file from `offset` (fewer at its end): how big files are read piece by piece.
    /// The default reads the whole file (simulated disks in tests); the filesystem reads only the piece.
    fn read_at(&mut self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let whole = self.read(name)?;
        let from = usize::try_from(offset).unwrap_or(usize::MAX).min(whole.len());
        Ok(whole[from..from + len.min(whole.len() - from)].to_vec())
    }
    /// Creates an empty file, replacing any file of that name.
    fn create(&mut self, name: &str) -> io::Result<()>;
    /// Appends to a file (which must exist).
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Makes a file's data durable (fdatasync).
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Cuts a file to `len` bytes.
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Creates a directory and its parents (the log directory exists once storage is opened).
    fn create_dir(&mut self, dir: &str) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir(&mut self, dir: &str) -> io::Result<()>;
    /// Makes the names created, renamed or removed in `dir` durable.
    fn sync_dir(&mut self, dir: &str) -> io::Result<()>;
    /// The name as a user would find it (for error messages and reports).
    fn describe(&self, name: &str) -> String;
}

/// The real filesystem under one directory. Keeps the files it appends to open.
#[derive(Debug)]
pub struct FsStorage {
    root: PathBuf,
    open: HashMap<String, File>,
}

impl FsStorage {
    /// Storage under `root`, created if missing.
    pub fn new(root: &Path) -> io::Result<FsStorage> {
        fs::create_dir_all(root)?;
        Ok(FsStorage { root: root.to_owned(), open: HashMap::new() })
    }

    fn path(&self, name: &str) -> PathBuf {
        if name.is_empty() {
            self.root.clone()
        } else {
            self.root.join(name)
        }
    }

    fn handle(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.open.contains_key(name) {
            let file = OpenOptions::new().append(true).open(self.path(name))?;
            self.open.insert(name.to_owned(), file);
        }
        Ok(self.open.get_mut(name).expect("inserted above"))
    }
}

impl Storage for FsStorage {
    fn list(&mut self, dir: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.path(dir))? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name))
    }

    fn read_at(&mut self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = File::open(self.path(name))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut out = Vec::with_capacity(len.min(frame::MAX_RECORD_BYTES));
        file.take(len as u64).read_to_end(&mut out)?;
        Ok(out)
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        self.open.remove(name);
        let file = File::create(self.path(name))?;
        drop(file);
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.handle(name)?.write_all(data)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.handle(name)?.sync_data()
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.open.remove(name);
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.open.remove(from);
        self.open.remove(to);
        fs::rename(self.path(from), self.path(to))
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.open.remove(name);
        fs::remove_file(self.path(name))
    }

    fn create_dir(&mut self, dir: &str) -> io::Result<()> {
        fs::create_dir_all(self.path(dir))
    }

    fn remove_dir(&mut self, dir: &str) -> io::Result<()> {
        let prefix = format!("{dir}/");
        self.open.retain(|name, _| !name.starts_with(&prefix));
        fs::remove_dir_all(self.path(dir))
    }

    fn sync_dir(&mut self, dir: &str) -> io::Result<()> {
        File::open(self.path(dir))?.sync_all()
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}
