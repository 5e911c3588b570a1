//! IDSCP2 framing: a 4-byte big-endian length, then one protobuf `IdscpMessage`.
//!
//! idscp2-jvm reads the length as a signed int and sets no bound, so a peer could announce a frame of
//! any size. We bound it: a length above the configured limit (which includes every "negative" one,
//! since those have the top bit set) is an error that closes the connection. A frame that does not
//! decode as an `IdscpMessage`, or decodes with no message set, is an error too: unlike the JVM we do
//! not skip it silently, because a peer that sends garbage is out of sync and its next frames mean
//! nothing.
//!
//! The codec works over byte buffers and is part of the sans-IO core. The tokio driver's
//! connection reads through its own frame reader instead (`reader`, feature `tokio`), which
//! reserves a frame's bytes in the memory budget before reading its body and bounds the time from
//! a frame's length to its last byte.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use prost::Message as _;

use super::proto::{idscp_message, IdscpMessage};

/// The default upper bound of one frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// The default bound of one frame until the handshake is done: 64 KiB.
pub const DEFAULT_HANDSHAKE_MAX_FRAME: usize = 64 * 1024;

/// Why a frame could not be read or written; every one of them ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced (or encoded) length, and the limit it exceeds.
    #[error("frame of {0} bytes or more exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
    /// The body is not a valid `IdscpMessage`.
    #[error("frame is not a valid IdscpMessage: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The body is an `IdscpMessage` without a message set.
    #[error("frame is an IdscpMessage without a message")]
    Empty,
    #[error(
        "frame of {announced} bytes not complete {} s after its length arrived ({received} bytes received)",
        after.as_secs_f64()
    )]
    /// A frame did not complete within the frame timeout.
    Incomplete {
        /// The length the frame announced.
        announced: usize,
        /// The bytes of it that arrived.
        received: usize,
        /// The frame timeout.
        after: Duration,
    },
    /// Reading or writing the stream failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Length-delimited IDSCP2 frames in and out over byte buffers, decoded to the message that is
/// set in the oneof. With feature `tokio` it is also a `tokio_util` codec for `Framed`.
pub struct IdscpCodec {
    max_frame: usize,
}

/// The length prefix of every frame.
const HEADER: usize = 4;

impl IdscpCodec {
    /// A codec that refuses frames (in and out) of more than `max_frame` bytes after the prefix.
    pub fn new(max_frame: usize) -> Self {
        IdscpCodec { max_frame }
    }

    /// The next message in `src`, taking its frame out of the buffer; `None` (and nothing taken)
    /// until the whole frame is there. An announced length beyond the limit is an error before
    /// any of the frame's body is waited for.
    pub fn decode(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<idscp_message::Message>, FrameError> {
        let Some(&[a, b, c, d]) = src.get(..HEADER) else {
            return Ok(None);
        };
        let announced = u32::from_be_bytes([a, b, c, d]) as usize;
        if announced > self.max_frame {
            return Err(FrameError::TooLarge(announced, self.max_frame));
        }
        if src.len() < HEADER + announced {
            src.reserve(HEADER + announced - src.len());
            return Ok(None);
        }
        src.advance(HEADER);
        decode_message(src.split_to(announced).freeze()).map(Some)
    }

    /// Appends `item` as one frame (prefix and body) to `dst`.
    pub fn encode(
        &mut self,
        item: idscp_message::Message,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let message = IdscpMessage {
            message: Some(item),
        };
        let len = message.encoded_len();
        if len > self.max_frame {
            return Err(FrameError::TooLarge(len, self.max_frame));
        }
        // Header and body go into one buffer so that the frame is flushed in one write.
        dst.reserve(HEADER + len);
        dst.extend_from_slice(&(len as u32).to_be_bytes());
        message
            .encode(dst)
            .map_err(|e| FrameError::Io(std::io::Error::other(e)))?;
        Ok(())
    }
}

/// Decodes one frame body; `Bytes` fields of the result share its buffer instead of copying.
pub fn decode_message(frame: Bytes) -> Result<idscp_message::Message, FrameError> {
    IdscpMessage::decode(frame)?
        .message
        .ok_or(FrameError::Empty)
}

#[cfg(feature = "tokio")]
impl tokio_util::codec::Decoder for IdscpCodec {
    type Item = idscp_message::Message;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        IdscpCodec::decode(self, src)
    }
}

#[cfg(feature = "tokio")]
impl tokio_util::codec::Encoder<idscp_message::Message> for IdscpCodec {
    type Error = FrameError;

    fn encode(
        &mut self,
        item: idscp_message::Message,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        IdscpCodec::encode(self, item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{IdscpAck, IdscpData};

    fn codec() -> IdscpCodec {
        IdscpCodec::new(64)
    }

    #[test]
    fn encodes_length_prefix_and_golden_body() {
        let mut buf = BytesMut::new();
        codec()
            .encode(
                idscp_message::Message::IdscpAck(IdscpAck {
                    alternating_bit: true,
                }),
                &mut buf,
            )
            .unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 4, 0x4a, 0x02, 0x08, 0x01]);
    }

    #[test]
    fn decodes_split_frames_and_waits_for_the_rest() {
        let mut c = codec();
        let mut buf = BytesMut::from(&[0u8, 0, 0, 6, 0x42, 0x04][..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&[0x0a, 0x02, 0x68, 0x69]);
        match c.decode(&mut buf).unwrap() {
            Some(idscp_message::Message::IdscpData(IdscpData {
                data,
                alternating_bit,
            })) => {
                assert_eq!(&data[..], b"hi");
                assert!(!alternating_bit);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_oversized_and_negative_lengths() {
        for header in [[0u8, 0, 0, 65], [0xff, 0xff, 0xff, 0xfe]] {
            let mut buf = BytesMut::from(&header[..]);
            match codec().decode(&mut buf) {
                Err(FrameError::TooLarge(_, 64)) => {}
                other => panic!("expected TooLarge, got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_garbage_and_empty_messages() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            codec().decode(&mut buf),
            Err(FrameError::Malformed(_))
        ));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(codec().decode(&mut buf), Err(FrameError::Empty)));
    }

    #[test]
    fn refuses_to_encode_beyond_the_limit() {
        let mut buf = BytesMut::new();
        let big = idscp_message::Message::IdscpData(IdscpData {
            data: Bytes::from(vec![0u8; 100]),
            alternating_bit: false,
        });
        assert!(matches!(
            codec().encode(big, &mut buf),
            Err(FrameError::TooLarge(_, 64))
        ));
    }
}
