//! IDSCP2 framing: a 4-byte big-endian length, then one protobuf `IdscpMessage`.
//!
//! idscp2-jvm reads the length as a signed int and sets no bound, so a peer could announce a frame of
//! any size. We bound it: a length above the configured limit (which includes every "negative" one,
//! since those have the top bit set) is an error that closes the connection. A frame that does not
//! decode as an `IdscpMessage`, or decodes with no message set, is an error too: unlike the JVM we do
//! not skip it silently, because a peer that sends garbage is out of sync and its next frames mean
//! nothing.
//!
//! The connection reads through [`FrameReader`] rather than the codec: it reserves a frame's bytes
//! in the memory budget before reading its body (waiting, and so not reading, while the budget is
//! spent), and bounds the time from a frame's length to its last byte.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::budget::{ConnectionBudget, Held};
use super::proto::{idscp_message, IdscpMessage};

/// The default upper bound of one frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// The default bound of one frame until the handshake is done: 64 KiB.
pub const DEFAULT_HANDSHAKE_MAX_FRAME: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes or more exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
    #[error("frame is not a valid IdscpMessage: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("frame is an IdscpMessage without a message")]
    Empty,
    #[error(
        "frame of {announced} bytes not complete {} s after its length arrived ({received} bytes received)",
        after.as_secs_f64()
    )]
    Incomplete {
        announced: usize,
        received: usize,
        after: Duration,
    },
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Length-delimited IDSCP2 frames in and out, decoded to the message that is set in the oneof.
pub struct IdscpCodec {
    inner: LengthDelimitedCodec,
    max_frame: usize,
}

impl IdscpCodec {
    pub fn new(max_frame: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(max_frame)
            .new_codec();
        IdscpCodec { inner, max_frame }
    }
}

impl Decoder for IdscpCodec {
    type Item = idscp_message::Message;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        let frame = match self.inner.decode(src) {
            Ok(Some(frame)) => frame.freeze(),
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let announced = src
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .unwrap_or(self.max_frame + 1);
                return Err(FrameError::TooLarge(announced, self.max_frame));
            }
            Err(e) => return Err(FrameError::Io(e)),
        };
        decode_message(frame).map(Some)
    }
}

/// Decodes one frame body; `Bytes` fields of the result share its buffer instead of copying.
pub fn decode_message(frame: Bytes) -> Result<idscp_message::Message, FrameError> {
    IdscpMessage::decode(frame)?
        .message
        .ok_or(FrameError::Empty)
}

/// Reads frames off a stream, one at a time, each reserved in the connection's budget before its
/// body is read. [`FrameReader::next`] is cancel-safe: what was read so far stays in the reader.
pub struct FrameReader<R> {
    stream: R,
    max_frame: usize,
    frame_timeout: Duration,
    budget: Arc<ConnectionBudget>,
    state: ReadState,
    /// Where skipped bytes go; allocated on the first skip.
    scratch: Vec<u8>,
}

enum ReadState {
    Header {
        buf: [u8; 4],
        read: usize,
    },
    /// A frame beyond the small size: its first byte says whether it is data, before bytes are
    /// reserved for it.
    Kind {
        announced: usize,
    },
    /// Waiting for a big frame's bytes in the budget, its first byte read.
    Reserve {
        announced: usize,
        first: u8,
    },
    Body(PartialBody),
    /// Data we will not take: read past without keeping it.
    Skip {
        announced: usize,
        remaining: usize,
        deadline: Instant,
    },
}

struct PartialBody {
    buf: BytesMut,
    announced: usize,
    /// `None` for a small frame: every connection may read one without a reservation.
    held: Option<Held>,
    deadline: Instant,
}

/// The first byte of an `IdscpMessage` that carries `IdscpData` (field 8, length-delimited).
const DATA_TAG: u8 = (8 << 3) | 2;

/// Skipped bytes are read in pieces of this size.
const SCRATCH: usize = 8 * 1024;

/// A decoded frame and the budget its bytes hold until it is dropped (none for a small frame).
pub struct ReadFrame {
    pub message: idscp_message::Message,
    pub held: Option<Held>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(
        stream: R,
        max_frame: usize,
        frame_timeout: Duration,
        budget: Arc<ConnectionBudget>,
    ) -> Self {
        FrameReader {
            stream,
            max_frame,
            frame_timeout,
            budget,
            state: header(),
            scratch: Vec::new(),
        }
    }

    /// Changes the frame limit for frames whose length has not been read yet.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// The next frame, or `None` when the peer closed the stream between frames. Unless
    /// `takes_data`, a big data frame is read past (nothing is reserved or kept for it), so that
    /// a peer's data we could not take anyway never blocks the ACKs it sends behind it.
    pub async fn next(&mut self, takes_data: bool) -> Result<Option<ReadFrame>, FrameError> {
        loop {
            match &mut self.state {
                ReadState::Header { buf, read } => {
                    let n = self.stream.read(&mut buf[*read..]).await?;
                    if n == 0 && *read == 0 {
                        return Ok(None);
                    }
                    if n == 0 {
                        return Err(early_eof());
                    }
                    *read += n;
                    if *read < buf.len() {
                        continue;
                    }
                    let announced = u32::from_be_bytes(*buf) as usize;
                    if announced > self.max_frame {
                        return Err(FrameError::TooLarge(announced, self.max_frame));
                    }
                    self.state = if announced <= self.budget.small_frame() {
                        self.body(announced, BytesMut::with_capacity(announced), None)
                    } else {
                        ReadState::Kind { announced }
                    };
                }
                ReadState::Kind { announced } => {
                    let announced = *announced;
                    let mut kind = [0u8; 1];
                    if self.stream.read(&mut kind).await? == 0 {
                        return Err(early_eof());
                    }
                    if kind[0] == DATA_TAG && !takes_data {
                        self.state = ReadState::Skip {
                            announced,
                            remaining: announced - 1,
                            deadline: Instant::now() + self.frame_timeout,
                        };
                        continue;
                    }
                    self.state = ReadState::Reserve {
                        announced,
                        first: kind[0],
                    };
                }
                ReadState::Reserve { announced, first } => {
                    let (announced, first) = (*announced, *first);
                    // Waiting here is the backpressure: nothing more is read from this peer
                    // meanwhile.
                    let held = self.budget.reserve(announced).await;
                    let held = held.map_err(|_| FrameError::TooLarge(announced, self.max_frame))?;
                    let mut buf = BytesMut::with_capacity(announced);
                    buf.put_u8(first);
                    self.state = self.body(announced, buf, Some(held));
                }
                ReadState::Body(body) if body.buf.len() == body.announced => {
                    let ReadState::Body(body) = std::mem::replace(&mut self.state, header()) else {
                        continue;
                    };
                    let message = decode_message(body.buf.freeze())?;
                    return Ok(Some(ReadFrame {
                        message,
                        held: body.held,
                    }));
                }
                ReadState::Body(body) => {
                    let missing = body.announced - body.buf.len();
                    let mut limited = (&mut body.buf).limit(missing);
                    let read = self.stream.read_buf(&mut limited);
                    match timeout_at(body.deadline, read).await {
                        Ok(Ok(0)) => return Err(early_eof()),
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => {
                            let (announced, received) = (body.announced, body.buf.len());
                            return Err(self.incomplete(announced, received));
                        }
                    }
                }
                ReadState::Skip { remaining: 0, .. } => self.state = header(),
                ReadState::Skip {
                    announced,
                    remaining,
                    deadline,
                } => {
                    if self.scratch.is_empty() {
                        self.scratch = vec![0; SCRATCH];
                    }
                    let piece = (*remaining).min(SCRATCH);
                    let read = self.stream.read(&mut self.scratch[..piece]);
                    match timeout_at(*deadline, read).await {
                        Ok(Ok(0)) => return Err(early_eof()),
                        Ok(Ok(n)) => *remaining -= n,
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => {
                            let (announced, received) = (*announced, *announced - *remaining);
                            return Err(self.incomplete(announced, received));
                        }
                    }
                }
            }
        }
    }

    /// The body of a frame whose bytes are accounted for; its time starts now.
    fn body(&self, announced: usize, buf: BytesMut, held: Option<Held>) -> ReadState {
        ReadState::Body(PartialBody {
            buf,
            announced,
            held,
            deadline: Instant::now() + self.frame_timeout,
        })
    }

    fn incomplete(&self, announced: usize, received: usize) -> FrameError {
        FrameError::Incomplete {
            announced,
            received,
            after: self.frame_timeout,
        }
    }
}

fn header() -> ReadState {
    ReadState::Header {
        buf: [0; 4],
        read: 0,
    }
}

fn early_eof() -> FrameError {
    std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
}

impl Encoder<idscp_message::Message> for IdscpCodec {
    type Error = FrameError;

    fn encode(
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
        dst.reserve(4 + len);
        dst.extend_from_slice(&(len as u32).to_be_bytes());
        message
            .encode(dst)
            .map_err(|e| FrameError::Io(std::io::Error::other(e)))?;
        Ok(())
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
