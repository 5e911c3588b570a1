//! Target `frame`: the IDSCP2 frame decoder (`IdscpCodec`, `decode_message`) and the application
//! messages inside `IdscpData`.
//!
//! A case is a byte stream of frames (valid messages, arbitrary or mutated bodies, oversized
//! length prefixes, a partial frame at the end) cut into arbitrary chunks, as TCP may deliver
//! it. The decoder must yield, whatever the cuts, exactly what a reference reading frame by
//! frame yields: each valid message back unchanged, the first bad frame as its error (too large,
//! malformed, empty), and nothing for a frame not yet complete.

use bytes::{Bytes, BytesMut};
use clearinghouse::idscp2::frame::{decode_message, FrameError, IdscpCodec};
use clearinghouse::idscp2::proto::app::{
    app_layer_message, AppLayerMessage, GenericMessage, HeaderEntry, IdsMessage,
};
use clearinghouse::idscp2::proto::idscp_message::Message;
use clearinghouse::idscp2::proto::{
    IdscpAck, IdscpClose, IdscpDat, IdscpDatExpired, IdscpData, IdscpHello, IdscpMessage,
    IdscpRaProver, IdscpRaVerifier, IdscpReRa,
};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message as _;
use tokio_util::codec::Decoder;

use crate::mutate::{mutated, Mutation};
use crate::runner::{fuzz, Budget, Outcome, Target};

pub const TARGET: Target = Target { name: "frame", run };

#[derive(Debug, Clone)]
enum Piece {
    /// A message the sender encodes with the codec (and that the decoder must return as is).
    Message(Message),
    /// A length prefix that fits, then these bytes as the body.
    Body(Vec<u8>),
    /// A valid message's body, damaged.
    Mutated(Message, Vec<Mutation>),
    /// Just a length prefix (the top bit set means "negative" to a JVM peer).
    Prefix(u32),
}

#[derive(Debug, Clone)]
struct Case {
    max_frame: usize,
    pieces: Vec<Piece>,
    /// Chunk sizes the stream arrives in; the rest comes in one last chunk.
    chunks: Vec<usize>,
    /// Cut the stream this many bytes short, leaving a partial frame in the buffer.
    cut_short: usize,
}

/// What reading one frame yields, comparable.
#[derive(Debug, Clone, PartialEq)]
enum Read {
    Message(Message),
    TooLarge(usize),
    Malformed,
    Empty,
}

fn read_of(result: Result<Message, FrameError>) -> Read {
    match result {
        Ok(message) => Read::Message(message),
        Err(FrameError::TooLarge(announced, _)) => Read::TooLarge(announced),
        Err(FrameError::Malformed(_)) => Read::Malformed,
        Err(FrameError::Empty) => Read::Empty,
        Err(FrameError::Io(e)) => panic!("I/O error from an in-memory decode: {e}"),
        Err(e @ FrameError::Incomplete { .. }) => panic!("the codec has no clock: {e}"),
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,12}", "[a-zA-Z0-9:-]{0,12}"]
}

fn app_layer_message() -> impl Strategy<Value = AppLayerMessage> {
    let headers = || {
        vec(
            (text(), text()).prop_map(|(name, value)| HeaderEntry { name, value }),
            0..4,
        )
    };
    let body = || (text(), bytes(32), headers());
    prop_oneof![
        body().prop_map(
            |(header, payload, extra_headers)| app_layer_message::Message::IdsMessage(IdsMessage {
                header,
                payload,
                extra_headers
            })
        ),
        body().prop_map(|(header, payload, extra_headers)| {
            app_layer_message::Message::GenericMessage(GenericMessage {
                header,
                payload,
                extra_headers,
            })
        }),
    ]
    .prop_map(|message| AppLayerMessage {
        message: Some(message),
    })
}

fn message() -> impl Strategy<Value = Message> {
    let data = prop_oneof![
        bytes(48),
        app_layer_message().prop_map(|m| Bytes::from(m.encode_to_vec())),
    ];
    prop_oneof![
        (
            any::<i32>(),
            proptest::option::of(bytes(32)),
            vec(text(), 0..3),
            vec(text(), 0..3)
        )
            .prop_map(|(version, token, supported, expected)| {
                Message::IdscpHello(IdscpHello {
                    version,
                    dynamic_attribute_token: token.map(|token| IdscpDat { token }),
                    supported_ra_suite: supported,
                    expected_ra_suite: expected,
                })
            }),
        (any::<i32>(), text()).prop_map(|(cause_code, cause_msg)| {
            Message::IdscpClose(IdscpClose {
                cause_code,
                cause_msg,
            })
        }),
        Just(Message::IdscpDatExpired(IdscpDatExpired {})),
        bytes(32).prop_map(|token| Message::IdscpDat(IdscpDat { token })),
        text().prop_map(|cause| Message::IdscpReRa(IdscpReRa { cause })),
        bytes(32).prop_map(|data| Message::IdscpRaProver(IdscpRaProver { data })),
        bytes(32).prop_map(|data| Message::IdscpRaVerifier(IdscpRaVerifier { data })),
        (data, any::<bool>()).prop_map(|(data, alternating_bit)| {
            Message::IdscpData(IdscpData {
                data,
                alternating_bit,
            })
        }),
        any::<bool>().prop_map(|alternating_bit| Message::IdscpAck(IdscpAck { alternating_bit })),
    ]
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => message().prop_map(Piece::Message),
        1 => vec(any::<u8>(), 0..40).prop_map(Piece::Body),
        2 => (message(), vec(any::<Mutation>(), 1..4)).prop_map(|(m, ms)| Piece::Mutated(m, ms)),
        1 => prop_oneof![any::<u32>(), 0u32..5000, Just(u32::MAX), Just(1 << 31)].prop_map(Piece::Prefix),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![0usize..16, 16usize..400, Just(4096)],
        vec(piece(), 0..8),
        vec(1usize..24, 0..12),
        0usize..6,
    )
        .prop_map(|(max_frame, pieces, chunks, cut_short)| Case {
            max_frame,
            pieces,
            chunks,
            cut_short,
        })
}

fn run(budget: &Budget) -> Outcome {
    fuzz(TARGET.name, budget, case(), check)
}

fn check(case: Case) -> Result<(), TestCaseError> {
    let mut encoder = IdscpCodec::new(case.max_frame);
    let mut stream = BytesMut::new();
    // What a reader taking one whole frame at a time sees; it stops at the first error, and so
    // does the stream: the connection closes there.
    let mut expected = Vec::new();
    for piece in &case.pieces {
        let before = stream.len();
        let read = match piece {
            Piece::Message(message) => {
                let len = encoded_len(message);
                let encoded = encoder.encode(message.clone(), &mut stream);
                prop_assert_eq!(
                    encoded.is_ok(),
                    len <= case.max_frame,
                    "the encoder must refuse exactly the frames above the limit"
                );
                if encoded.is_err() {
                    prop_assert_eq!(stream.len(), before, "a refused frame must write nothing");
                    continue;
                }
                prop_assert_eq!(&stream[before..before + 4], &(len as u32).to_be_bytes()[..]);
                Read::Message(message.clone())
            }
            Piece::Body(body) => body_read(&mut stream, body, case.max_frame),
            Piece::Mutated(message, mutations) => {
                let body = mutated(IdscpMessage::encode_to_vec(&wrap(message)), mutations);
                body_read(&mut stream, &body, case.max_frame)
            }
            Piece::Prefix(announced) => {
                stream.extend_from_slice(&announced.to_be_bytes());
                let announced = *announced as usize;
                if announced > case.max_frame {
                    Read::TooLarge(announced)
                } else if announced == 0 {
                    // Complete already: a frame with no message in it.
                    Read::Empty
                } else {
                    // A prefix that fits announces a body still to come: the stream ends here.
                    expected.push(None);
                    break;
                }
            }
        };
        let stop = !matches!(read, Read::Message(_));
        expected.push(Some(read));
        if stop {
            break;
        }
    }
    // A frame cut short is not there yet: it must be waited for, not misread.
    let cut_short = case.cut_short.min(stream.len());
    let complete = stream.len() - cut_short;
    let mut reference = Vec::new();
    let mut end = 0;
    let mut offset = 0;
    for read in expected {
        let frame_end = match &read {
            Some(Read::TooLarge(_)) => offset + 4,
            Some(_) => {
                let len = u32::from_be_bytes(stream[offset..offset + 4].try_into().unwrap());
                offset + 4 + len as usize
            }
            None => usize::MAX,
        };
        if frame_end > complete {
            break;
        }
        let stop = !matches!(read, Some(Read::Message(_)));
        reference.push(read.expect("a complete frame is read"));
        offset = frame_end;
        end = frame_end;
        if stop {
            break;
        }
    }

    // Feed the stream in the case's chunks.
    let input = stream.freeze().slice(..complete);
    let mut decoder = IdscpCodec::new(case.max_frame);
    let mut buffer = BytesMut::new();
    let mut got = Vec::new();
    let mut position = 0;
    let mut sizes = case.chunks.iter().copied();
    'feed: while position < input.len() {
        let size = sizes.next().unwrap_or(input.len() - position);
        let next = (position + size).min(input.len());
        buffer.extend_from_slice(&input[position..next]);
        position = next;
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(message)) => got.push(Read::Message(message)),
                Ok(None) => break,
                Err(error) => {
                    got.push(read_of(Err(error)));
                    break 'feed;
                }
            }
        }
    }
    prop_assert_eq!(&got, &reference);
    if !matches!(got.last(), Some(Read::Message(_)) | None) {
        return Ok(());
    }
    // Everything after the last whole frame stays buffered for the next read (less the length
    // prefix, once the decoder has taken it).
    let rest = &input[end..];
    let kept = &buffer[..] == rest || (rest.len() >= 4 && buffer[..] == rest[4..]);
    prop_assert!(
        kept,
        "buffer {:?} is not what follows the last frame: {:?}",
        &buffer[..],
        rest
    );
    // At the end of the stream a partial frame yields no message. (Whether it is an error
    // depends on whether the decoder had taken its length prefix yet: tokio-util's default
    // `decode_eof` only sees the bytes still buffered.)
    match decoder.decode_eof(&mut buffer) {
        Ok(Some(message)) => {
            return Err(TestCaseError::fail(format!(
                "a message from a partial frame: {message:?}"
            )))
        }
        Ok(None) | Err(FrameError::Io(_)) => {}
        Err(error) => {
            return Err(TestCaseError::fail(format!(
                "unexpected error at end of stream: {error}"
            )))
        }
    }
    if end == input.len() {
        prop_assert!(buffer.is_empty());
    }

    for read in got {
        if let Read::Message(message) = read {
            check_message(&message, case.max_frame)?;
        }
    }
    Ok(())
}

/// Appends a length-prefixed body and says what reading it must give.
fn body_read(stream: &mut BytesMut, body: &[u8], max_frame: usize) -> Read {
    stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
    stream.extend_from_slice(body);
    if body.len() > max_frame {
        Read::TooLarge(body.len())
    } else {
        read_of(decode_message(Bytes::copy_from_slice(body)))
    }
}

/// A decoded message re-encodes to one that decodes the same (unknown fields dropped), and the
/// application message inside IdscpData decodes without a panic, round-tripping when valid.
fn check_message(message: &Message, max_frame: usize) -> Result<(), TestCaseError> {
    let mut encoder = IdscpCodec::new(max_frame.max(encoded_len(message)));
    let mut again = BytesMut::new();
    encoder
        .encode(message.clone(), &mut again)
        .map_err(|e| TestCaseError::fail(format!("cannot re-encode a decoded message: {e}")))?;
    let reread = decode_message(again.freeze().slice(4..))
        .map_err(|e| TestCaseError::fail(format!("a re-encoded message does not decode: {e}")))?;
    prop_assert_eq!(&reread, message);
    if let Message::IdscpData(IdscpData { data, .. }) = message {
        if let Ok(app) = AppLayerMessage::decode(data.clone()) {
            let again = AppLayerMessage::decode(Bytes::from(app.encode_to_vec()));
            prop_assert_eq!(again.ok(), Some(app));
        }
    }
    Ok(())
}

fn wrap(message: &Message) -> IdscpMessage {
    IdscpMessage {
        message: Some(message.clone()),
    }
}

fn encoded_len(message: &Message) -> usize {
    wrap(message).encoded_len()
}
