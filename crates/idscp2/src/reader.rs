//! Reading IDSCP2 frames off a stream with the memory bound in mind: a frame's bytes are reserved
//! in the connection's budget before its body is read (waiting, and so not reading, while the
//! budget is spent), a big data frame the connection cannot take is read past without being
//! kept, and the time from a frame's length to its last byte is bounded.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{timeout_at, Instant};

use super::budget::{ConnectionBudget, Held};
use super::frame::{decode_message, FrameError};
use super::proto::idscp_message;

/// Reads frames off a stream, one at a time, each reserved in the connection's budget before its
/// body is read. [`FrameReader::next`] is cancel-safe: what was read so far stays in the reader.
pub(crate) struct FrameReader<R> {
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
pub(crate) struct ReadFrame {
    pub(crate) message: idscp_message::Message,
    pub(crate) held: Option<Held>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(
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
    pub(crate) fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// The next frame, or `None` when the peer closed the stream between frames. Unless
    /// `takes_data`, a big data frame is read past (nothing is reserved or kept for it), so that
    /// a peer's data we could not take anyway never blocks the ACKs it sends behind it.
    pub(crate) async fn next(&mut self, takes_data: bool) -> Result<Option<ReadFrame>, FrameError> {
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
