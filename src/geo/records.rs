//! The City database's records numbered 0, 1, 2, ... so that what is derived per
//! record (a ranking of POPs) can sit in a plain array indexed by the number
//! instead of a hash map keyed by the record's data offset.
//!
//! The numbers are handed out while the tables are compiled, in the order the
//! compilation meets the records, and the tables hold the numbers as their values.
//! The tree walk, which finds a record by its offset, looks the number up here.

use std::collections::HashMap;

/// A record the walk found that has no number: its database's tables could not be
/// compiled, so nothing numbered its records. Never a valid number (an array of
/// 2^32 - 1 records would not fit the data section it is drawn from).
pub const UNNUMBERED: u32 = u32::MAX;

/// Hands out record numbers during compilation.
#[derive(Debug, Default)]
pub struct Numbering {
    by_offset: HashMap<u32, u32>,
}

impl Numbering {
    /// The number of the record at `offset`, a new one the first time it is met;
    /// [`UNNUMBERED`] past 4 GiB of data, which no real database has.
    pub fn number(&mut self, offset: usize) -> u32 {
        let Ok(offset) = u32::try_from(offset) else {
            return UNNUMBERED;
        };
        let next = self.by_offset.len() as u32;
        *self.by_offset.entry(offset).or_insert(next)
    }

    /// The numbers handed out, for the walk to look up.
    pub fn finish(self) -> RecordNumbers {
        let mut by_offset: Vec<(u32, u32)> = self.by_offset.into_iter().collect();
        by_offset.sort_unstable();
        RecordNumbers {
            by_offset: by_offset.into_boxed_slice(),
        }
    }
}

/// Every numbered record's offset and number, in offset order: 8 bytes a record.
#[derive(Debug, Default)]
pub struct RecordNumbers {
    by_offset: Box<[(u32, u32)]>,
}

impl RecordNumbers {
    /// The number of the record at `offset`, or [`UNNUMBERED`].
    pub fn get(&self, offset: usize) -> u32 {
        let Ok(offset) = u32::try_from(offset) else {
            return UNNUMBERED;
        };
        match self.by_offset.binary_search_by_key(&offset, |&(o, _)| o) {
            Ok(i) => self.by_offset[i].1,
            Err(_) => UNNUMBERED,
        }
    }

    /// How many records are numbered: every number is below it.
    pub fn len(&self) -> usize {
        self.by_offset.len()
    }

    /// Whether no record is numbered.
    pub fn is_empty(&self) -> bool {
        self.by_offset.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_dense_stable_and_found_by_offset() {
        let mut numbering = Numbering::default();
        let offsets = [900, 40, 900, 7, 40, 12_345];
        let numbers: Vec<u32> = offsets.iter().map(|&o| numbering.number(o)).collect();
        assert_eq!(numbers, [0, 1, 0, 2, 1, 3]);
        let numbers = numbering.finish();
        assert_eq!(numbers.len(), 4);
        for (offset, number) in [(900, 0), (40, 1), (7, 2), (12_345, 3)] {
            assert_eq!(numbers.get(offset), number);
        }
        assert_eq!(numbers.get(41), UNNUMBERED);
    }
}
