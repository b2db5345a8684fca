//! A simulated disk for crash tests of the write-ahead log: it keeps, per file, what is durable and what
//! was written since the last fsync, and per directory the names created, renamed and removed since the
//! last directory fsync. [`SimDisk::crash`] turns that into what a power cut could leave behind: unsynced
//! writes dropped, the last one torn at an arbitrary byte, persisted in another order or only some of their
//! sectors (the rest zeros), and any prefix of the unsynced directory operations. [`SimDisk::fail_next_sync`]
//! makes the next fsync return EIO and lose that file's unsynced writes, while later fsyncs report success
//! (as Linux does after a writeback error).
#![allow(dead_code)]
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};

use crdt_core::Storage;

#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Unsynced appends, in order: (offset, bytes).
    unsynced: Vec<(usize, Vec<u8>)>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, usize),
    Rename(String, String),
    Unlink(String),
}

impl DirOp {
    fn dir(&self) -> &str {
        let name = match self {
            DirOp::Link(n, _) | DirOp::Rename(n, _) | DirOp::Unlink(n) => n,
        };
        name.rsplit_once('/').map_or("", |(d, _)| d)
    }

    fn apply(&self, names: &mut BTreeMap<String, usize>) {
        match self {
            DirOp::Link(n, i) => {
                names.insert(n.clone(), *i);
            }
            DirOp::Rename(from, to) => {
                if let Some(i) = names.remove(from) {
                    names.insert(to.clone(), i);
                }
            }
            DirOp::Unlink(n) => {
                names.remove(n);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Disk {
    inodes: Vec<Inode>,
    names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
    dir_ops: Vec<DirOp>,
    dirs: BTreeSet<String>,
    fail_syncs: u32,
    /// The process dies at this many more fsyncs (the fsync does not happen; every later call fails).
    die_in: Option<u32>,
    dead: bool,
    syncs: u64,
    failed_syncs: u64,
}

/// A shared handle: the log owns one clone, the test keeps another to crash the disk.
#[derive(Debug, Clone, Default)]
pub struct SimDisk(Arc<Mutex<Disk>>);

/// A small deterministic generator (the crash is a function of the seed the property test draws).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// How unsynced data survives a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Everything unsynced is lost.
    DropAll,
    /// A prefix of the unsynced writes survives, the next one torn at an arbitrary byte.
    Torn,
    /// Each sector of unsynced data survives or not, independently (reordered writeback); the file keeps
    /// either its durable or its current length, unsurvived bytes read as zeros. Sectors of 16, 64 or 512
    /// bytes: small ones put holes between the small records of a test.
    Sectors,
    /// Everything unsynced survives (writeback finished just before the cut).
    KeepAll,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` fsyncs (file or directory) fail with EIO.
    pub fn fail_next_sync(&self, n: u32) {
        self.disk().fail_syncs = n;
    }

    /// The process dies at the `n`-th fsync from now (0: the next one): that fsync never happens and every
    /// later call fails, leaving the disk as a kill during a commit, snapshot or segment switch would.
    pub fn die_at_sync(&self, n: u32) {
        self.disk().die_in = Some(n);
    }

    /// Whether the armed death happened.
    pub fn died(&self) -> bool {
        self.disk().dead
    }

    /// fsyncs so far, and how many failed.
    pub fn syncs(&self) -> (u64, u64) {
        let d = self.disk();
        (d.syncs, d.failed_syncs)
    }

    /// A power cut: what survives is chosen by `mode` and `rng`; afterwards everything left is durable.
    pub fn crash(&self, mode: CrashMode, rng: &mut Rng) {
        let mut d = self.disk();
        let keep_ops = match mode {
            CrashMode::DropAll => 0,
            CrashMode::KeepAll => d.dir_ops.len(),
            _ => rng.below(d.dir_ops.len() + 1),
        };
        let mut names = d.durable_names.clone();
        for op in &d.dir_ops[..keep_ops] {
            op.apply(&mut names);
        }
        for inode in &mut d.inodes {
            let survived = survive(inode, mode, rng);
            *inode = Inode { durable: survived.clone(), current: survived, unsynced: Vec::new() };
        }
        d.names = names.clone();
        d.durable_names = names;
        d.dir_ops.clear();
        d.fail_syncs = 0;
        d.die_in = None;
        d.dead = false;
    }

    /// Every durable name and its content (for assertions).
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let d = self.disk();
        d.names.iter().map(|(n, &i)| (n.clone(), d.inodes[i].current.clone())).collect()
    }

    /// Overwrites a file's content, durably (bit rot, a careless operator).
    pub fn poke(&self, name: &str, content: Vec<u8>) {
        let mut d = self.disk();
        let i = d.names[name];
        d.inodes[i] = Inode { durable: content.clone(), current: content, unsynced: Vec::new() };
    }
}

fn survive(inode: &Inode, mode: CrashMode, rng: &mut Rng) -> Vec<u8> {
    if inode.unsynced.is_empty() {
        return inode.durable.clone();
    }
    match mode {
        CrashMode::DropAll => inode.durable.clone(),
        CrashMode::KeepAll => inode.current.clone(),
        CrashMode::Torn => {
            let mut out = inode.durable.clone();
            let k = rng.below(inode.unsynced.len());
            for (at, data) in &inode.unsynced[..k] {
                write_at(&mut out, *at, data);
            }
            let (at, data) = &inode.unsynced[k];
            write_at(&mut out, *at, &data[..rng.below(data.len() + 1)]);
            out
        }
        CrashMode::Sectors => {
            let len = if rng.below(2) == 0 { inode.durable.len() } else { inode.current.len() };
            let mut out: Vec<u8> = (0..len).map(|i| inode.durable.get(i).copied().unwrap_or(0)).collect();
            let size = [16, 64, 512][rng.below(3)];
            let first_dirty = inode.unsynced.iter().map(|(at, _)| *at).min().unwrap_or(len);
            let mut sector = first_dirty / size * size;
            while sector < len {
                let end = (sector + size).min(len);
                if rng.below(2) == 0 {
                    out[sector..end].copy_from_slice(&inode.current[sector..end]);
                }
                sector = end;
            }
            out
        }
    }
}

fn write_at(out: &mut Vec<u8>, at: usize, data: &[u8]) {
    if out.len() < at + data.len() {
        out.resize(at + data.len(), 0);
    }
    out[at..at + data.len()].copy_from_slice(data);
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

fn killed() -> io::Error {
    io::Error::other("the process was killed")
}

impl Disk {
    fn alive(&self) -> io::Result<()> {
        if self.dead {
            return Err(killed());
        }
        Ok(())
    }

    fn take_sync(&mut self) -> io::Result<()> {
        self.alive()?;
        match self.die_in {
            Some(0) => {
                self.dead = true;
                return Err(killed());
            }
            Some(n) => self.die_in = Some(n - 1),
            None => {}
        }
        self.syncs += 1;
        if self.fail_syncs > 0 {
            self.fail_syncs -= 1;
            self.failed_syncs += 1;
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(())
    }
}

impl Storage for SimDisk {
    fn list(&mut self, dir: &str) -> io::Result<Vec<String>> {
        let d = self.disk();
        d.alive()?;
        if !dir.is_empty() && !d.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let mut out: BTreeSet<String> = BTreeSet::new();
        for n in d.names.keys().chain(d.dirs.iter()) {
            let rest = if dir.is_empty() { Some(n.as_str()) } else { n.strip_prefix(&format!("{dir}/")) };
            if let Some(rest) = rest {
                if !rest.is_empty() {
                    out.insert(rest.split('/').next().unwrap_or(rest).to_owned());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        let d = self.disk();
        d.alive()?;
        let &i = d.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(d.inodes[i].current.clone())
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        let mut d = self.disk();
        d.alive()?;
        d.inodes.push(Inode::default());
        let i = d.inodes.len() - 1;
        d.names.insert(name.to_owned(), i);
        d.dir_ops.push(DirOp::Link(name.to_owned(), i));
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut d = self.disk();
        d.alive()?;
        let &i = d.names.get(name).ok_or_else(|| not_found(name))?;
        let inode = &mut d.inodes[i];
        let at = inode.current.len();
        inode.current.extend_from_slice(data);
        inode.unsynced.push((at, data.to_vec()));
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        let mut d = self.disk();
        let &i = d.names.get(name).ok_or_else(|| not_found(name))?;
        if let Err(e) = d.take_sync() {
            if d.dead {
                return Err(e);
            }
            // The kernel drops the dirty pages it failed to write: they will never reach the disk.
            let inode = &mut d.inodes[i];
            inode.unsynced.clear();
            return Err(e);
        }
        let inode = &mut d.inodes[i];
        // Pages dropped by an earlier failure stay lost: only what was unsynced becomes durable.
        let mut durable = std::mem::take(&mut inode.durable);
        for (at, data) in &inode.unsynced {
            write_at(&mut durable, *at, data);
        }
        inode.durable = durable;
        inode.unsynced.clear();
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let mut d = self.disk();
        let &i = d.names.get(name).ok_or_else(|| not_found(name))?;
        d.take_sync()?;
        // ftruncate + fsync: the size is durable, and so is what was unsynced below it; pages an earlier
        // failed fsync dropped are not (they read as what the disk holds: zeros here).
        let inode = &mut d.inodes[i];
        let len = len as usize;
        let mut durable = std::mem::take(&mut inode.durable);
        for (at, data) in &inode.unsynced {
            write_at(&mut durable, *at, data);
        }
        durable.resize(len, 0);
        inode.durable = durable;
        inode.current.truncate(len);
        inode.unsynced.clear();
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let mut d = self.disk();
        d.alive()?;
        let i = d.names.remove(from).ok_or_else(|| not_found(from))?;
        d.names.insert(to.to_owned(), i);
        d.dir_ops.push(DirOp::Rename(from.to_owned(), to.to_owned()));
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let mut d = self.disk();
        d.alive()?;
        d.names.remove(name).ok_or_else(|| not_found(name))?;
        d.dir_ops.push(DirOp::Unlink(name.to_owned()));
        Ok(())
    }

    fn create_dir(&mut self, dir: &str) -> io::Result<()> {
        let mut d = self.disk();
        d.alive()?;
        let mut path = String::new();
        for part in dir.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            d.dirs.insert(path.clone());
        }
        Ok(())
    }

    fn remove_dir(&mut self, dir: &str) -> io::Result<()> {
        let mut d = self.disk();
        d.alive()?;
        let prefix = format!("{dir}/");
        let gone: Vec<String> = d.names.keys().filter(|n| n.starts_with(&prefix)).cloned().collect();
        for n in gone {
            d.names.remove(&n);
            d.dir_ops.push(DirOp::Unlink(n));
        }
        d.dirs.retain(|x| x != dir && !x.starts_with(&prefix));
        Ok(())
    }

    fn sync_dir(&mut self, dir: &str) -> io::Result<()> {
        let mut d = self.disk();
        d.take_sync()?;
        let (mine, rest): (Vec<DirOp>, Vec<DirOp>) = d.dir_ops.drain(..).partition(|op| op.dir() == dir);
        for op in &mine {
            op.apply(&mut d.durable_names);
        }
        d.dir_ops = rest;
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("sim:/{name}")
    }
}
