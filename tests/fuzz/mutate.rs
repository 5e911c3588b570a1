//! Byte-level damage to valid inputs (tokens, frames, export lines): coverage-free fuzzing gets
//! past the first parse only when it starts from something that parses, so most garbage here is
//! a genuine input with a few of these applied.

use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
    /// Copies a run of the input to another place: repeated fields, doubled separators.
    Duplicate(Index, usize, Index),
}

/// Bytes that mean something to the formats under test: JSON, base64url, JWT separators, line ends.
const SPECIAL: &[u8] = b".\"\\{}[]:,0-_=+/ \n\r\tA\x00\x7f\xff";

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![any::<u8>(), proptest::sample::select(SPECIAL)]
}

impl Arbitrary for Mutation {
    type Parameters = ();
    type Strategy = BoxedStrategy<Mutation>;

    fn arbitrary_with(_: ()) -> Self::Strategy {
        prop_oneof![
            (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
            (any::<Index>(), byte()).prop_map(|(at, value)| Mutation::SetByte(at, value)),
            (any::<Index>(), proptest::collection::vec(byte(), 1..4))
                .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
            (any::<Index>(), 1usize..8).prop_map(|(at, len)| Mutation::Remove(at, len)),
            any::<Index>().prop_map(Mutation::Truncate),
            (any::<Index>(), 1usize..16, any::<Index>())
                .prop_map(|(from, len, to)| Mutation::Duplicate(from, len, to)),
        ]
        .boxed()
    }
}

/// `input` with `mutations` applied in order; positions scale to the length at each step.
pub fn mutated(mut input: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = input.len();
        // Positions in 0..=len, so that appending is possible too.
        let at = |index: &Index| index.index(len + 1);
        match mutation {
            Mutation::FlipBit(index, bit) if len > 0 => input[index.index(len)] ^= 1 << bit,
            Mutation::SetByte(index, value) if len > 0 => input[index.index(len)] = *value,
            Mutation::FlipBit(..) | Mutation::SetByte(..) => {}
            Mutation::Insert(index, bytes) => {
                let at = at(index);
                input.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove(index, count) => {
                let from = at(index);
                input.drain(from..(from + count).min(len));
            }
            Mutation::Truncate(index) => input.truncate(at(index)),
            Mutation::Duplicate(from, count, to) => {
                let from = at(from);
                let run = input[from..(from + count).min(len)].to_vec();
                let to = at(to);
                input.splice(to..to, run);
            }
        }
    }
    input
}
