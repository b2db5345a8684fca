//! Hybrid logical clock (Kulkarni et al., 2014): 64-bit stamps, physical milliseconds in the high 48 bits and
//! a logical counter in the low 16. Stamps are monotonic, stay close to wall time, and order events that the
//! wall clock cannot. A remote stamp further ahead than `max_offset_ms` is refused (CockroachDB's gate), so
//! one bad clock cannot win every register forever.
use crate::error::{Error, Result};

/// A hybrid logical clock stamp: `physical_ms << 16 | logical`.
pub type Stamp = u64;

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 16;
/// Largest physical time a stamp can carry (about the year 10889).
pub const MAX_PHYSICAL_MS: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

/// Physical milliseconds of a stamp.
pub const fn physical_ms(stamp: Stamp) -> u64 {
    stamp >> LOGICAL_BITS
}

/// The stamp at the start of a physical millisecond.
pub const fn stamp_at(ms: u64) -> Stamp {
    let ms = if ms > MAX_PHYSICAL_MS { MAX_PHYSICAL_MS } else { ms };
    ms << LOGICAL_BITS
}

/// The clock. It holds no time source: the host passes physical time in, so the core stays pure and tests
/// stay deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hlc {
    last: Stamp,
    max_offset_ms: u64,
}

impl Hlc {
    /// A clock that refuses remote stamps more than `max_offset_ms` ahead of physical time.
    pub fn new(max_offset_ms: u64) -> Self {
        Self { last: 0, max_offset_ms }
    }

    /// The configured gate.
    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// A new stamp, greater than every stamp this clock has issued or observed.
    pub fn now(&mut self, physical: u64) -> Stamp {
        let wall = stamp_at(physical);
        self.last = if wall > self.last { wall } else { self.last.saturating_add(1) };
        self.last
    }

    /// Refuses `remote` if it is too far ahead of `physical`; does not move the clock.
    pub fn check(&self, remote: Stamp, physical: u64) -> Result<()> {
        let remote_ms = physical_ms(remote);
        if remote_ms > physical.saturating_add(self.max_offset_ms) {
            return Err(Error::ClockSkew { remote_ms, local_ms: physical, max_offset_ms: self.max_offset_ms });
        }
        Ok(())
    }

    /// Observes a remote stamp: refuses it when too far ahead, otherwise moves the clock past it.
    pub fn update(&mut self, remote: Stamp, physical: u64) -> Result<Stamp> {
        self.check(remote, physical)?;
        self.last = self.last.max(remote);
        Ok(self.last)
    }

    /// The highest stamp issued or observed, for the host to persist.
    pub fn high_water(&self) -> Stamp {
        self.last
    }

    /// Restores a persisted high-water mark: after a reboot without a real-time clock, the clock never
    /// stamps below what it issued before.
    pub fn restore(&mut self, high_water: Stamp) {
        self.last = self.last.max(high_water);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_strictly_monotonic_even_when_wall_time_goes_back() {
        let mut c = Hlc::new(500);
        let a = c.now(1_000);
        let b = c.now(1_000);
        let d = c.now(900);
        assert!(a < b && b < d);
        assert_eq!(physical_ms(d), 1_000);
        assert!(c.now(2_000) == stamp_at(2_000));
    }

    #[test]
    fn update_refuses_stamps_beyond_the_offset_and_keeps_the_clock() {
        let mut c = Hlc::new(500);
        let before = c.now(10_000);
        let err = c.update(stamp_at(10_501), 10_000).unwrap_err();
        assert!(matches!(err, Error::ClockSkew { remote_ms: 10_501, local_ms: 10_000, max_offset_ms: 500 }));
        assert_eq!(c.high_water(), before);
        assert_eq!(c.update(stamp_at(10_500), 10_000).unwrap(), stamp_at(10_500));
        assert!(c.now(10_000) > stamp_at(10_500));
    }

    #[test]
    fn restore_never_moves_backwards() {
        let mut c = Hlc::new(500);
        c.restore(stamp_at(5_000));
        assert!(c.now(1_000) > stamp_at(5_000));
        c.restore(stamp_at(1));
        assert!(c.high_water() > stamp_at(5_000));
    }
}
