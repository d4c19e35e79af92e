//! Resource names: the one rule every named primitive (locks, elections, queues, ...) shares.

use crate::limits::NAME_BYTES_MAX;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NameError {
    #[error("name is empty; it must be 1 to {NAME_BYTES_MAX} bytes of [A-Za-z0-9._/-]")]
    Empty,
    #[error("name is {bytes} bytes; the limit is {NAME_BYTES_MAX}")]
    TooLong { bytes: usize },
    #[error(
        "name has {found:?} at byte {at}; names are 1 to {NAME_BYTES_MAX} bytes of [A-Za-z0-9._/-]"
    )]
    BadByte { found: char, at: usize },
}

/// Checks a resource name: 1..=`NAME_BYTES_MAX` bytes of `[A-Za-z0-9._/-]`.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong { bytes: name.len() });
    }
    for (at, ch) in name.char_indices() {
        if !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '/' | '-')) {
            return Err(NameError::BadByte { found: ch, at });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_name("jobs/nightly-1.x_y"), Ok(()));
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name(&"a".repeat(NAME_BYTES_MAX)), Ok(()));
        assert_eq!(
            check_name(&"a".repeat(NAME_BYTES_MAX + 1)),
            Err(NameError::TooLong {
                bytes: NAME_BYTES_MAX + 1
            })
        );
        assert_eq!(
            check_name("a b"),
            Err(NameError::BadByte { found: ' ', at: 1 })
        );
    }
}
