//! Serde helpers that encode byte strings as bytes (a length, then the bytes) rather than as a
//! sequence of numbers. In postcard both give the same bytes, so snapshots and log entries keep
//! their format; the difference is speed: a copy instead of a call per byte, which is what
//! encoding a large state for a snapshot spends its time on otherwise. And the postcard flavor
//! that hands a snapshot's encoding to its writer in chunks, so that it is never whole in memory.

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};
use std::collections::{BTreeMap, BTreeSet};

/// A map keyed by byte strings.
pub mod byte_keys {
    use super::*;

    pub fn serialize<V: Serialize, S: Serializer>(
        map: &BTreeMap<Vec<u8>, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (Bytes::new(k), v)))
    }

    pub fn deserialize<'de, V: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Vec<u8>, V>, D::Error> {
        let map = BTreeMap::<ByteBuf, V>::deserialize(d)?;
        Ok(map.into_iter().map(|(k, v)| (k.into_vec(), v)).collect())
    }
}

/// A map whose values are sets of byte strings.
pub mod byte_sets {
    use super::*;

    struct Set<'a>(&'a BTreeSet<Vec<u8>>);

    impl Serialize for Set<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(|k| Bytes::new(k)))
        }
    }

    pub fn serialize<K: Serialize, S: Serializer>(
        map: &BTreeMap<K, BTreeSet<Vec<u8>>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, Set(v))))
    }

    pub fn deserialize<'de, K: Deserialize<'de> + Ord, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<K, BTreeSet<Vec<u8>>>, D::Error> {
        let map = BTreeMap::<K, Vec<ByteBuf>>::deserialize(d)?;
        Ok(map
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().map(ByteBuf::into_vec).collect()))
            .collect())
    }
}

/// A postcard flavor that hands the encoding to a sink in chunks of about [`CHUNK_BYTES`]:
/// [`crate::State::write_snapshot`]'s way of encoding without holding the whole output. The
/// sink's first error is kept in `error` (outside the flavor, which postcard drops when it stops
/// early) and ends the encoding.
pub(crate) struct Chunks<'e, F, E> {
    sink: F,
    buffer: Vec<u8>,
    error: &'e mut Option<E>,
}

/// The size of the chunks handed to a snapshot's sink.
const CHUNK_BYTES: usize = 64 * 1024;

impl<'e, F: FnMut(&[u8]) -> Result<(), E>, E> Chunks<'e, F, E> {
    pub(crate) fn new(sink: F, error: &'e mut Option<E>) -> Self {
        Chunks {
            sink,
            buffer: Vec::with_capacity(CHUNK_BYTES),
            error,
        }
    }

    /// Adds `bytes`, handing full chunks (and a large slice whole) to the sink.
    pub(crate) fn take(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if self.buffer.len() + bytes.len() > CHUNK_BYTES {
            self.drain()?;
        }
        if bytes.len() >= CHUNK_BYTES {
            self.hand(bytes)
        } else {
            self.buffer.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn drain(&mut self) -> postcard::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let handed = self.hand(&buffer);
        self.buffer = buffer;
        self.buffer.clear();
        handed
    }

    fn hand(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        (self.sink)(bytes).map_err(|e| {
            *self.error = Some(e);
            postcard::Error::SerializeBufferFull
        })
    }
}

impl<F: FnMut(&[u8]) -> Result<(), E>, E> postcard::ser_flavors::Flavor for Chunks<'_, F, E> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.take(&[byte])
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.take(bytes)
    }

    fn finalize(mut self) -> postcard::Result<()> {
        self.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain {
        value: Vec<u8>,
        map: BTreeMap<Vec<u8>, u8>,
        sets: BTreeMap<u64, BTreeSet<Vec<u8>>>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Fast {
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        #[serde(with = "byte_keys")]
        map: BTreeMap<Vec<u8>, u8>,
        #[serde(with = "byte_sets")]
        sets: BTreeMap<u64, BTreeSet<Vec<u8>>>,
    }

    /// The helpers change speed, not format: snapshots and logs written before them still read.
    #[test]
    fn byte_strings_encode_to_the_same_postcard_bytes_either_way() {
        let value = vec![0u8, 1, 200, 255, 7];
        let map = BTreeMap::from([(vec![1u8, 2], 3u8), (vec![250u8; 300], 4)]);
        let sets = BTreeMap::from([(9u64, BTreeSet::from([vec![1u8], vec![2u8; 130]]))]);
        let plain = Plain {
            value: value.clone(),
            map: map.clone(),
            sets: sets.clone(),
        };
        let fast = Fast { value, map, sets };
        let bytes = postcard::to_allocvec(&plain).unwrap();
        assert_eq!(postcard::to_allocvec(&fast).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<Fast>(&bytes).unwrap(), fast);
    }
}
