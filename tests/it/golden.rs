//! Golden encodings: our generated protobuf types against bytes that protoc produced from the
//! idscp2-jvm .proto files (shared/spec/idscp2.md sections 3 and 8).
//!
//! The .proto files of this crate are written by hand, so a wrong field number, type or oneof
//! member would compile and pass every test that talks to itself, and fail only against a JVM
//! peer. These tests pin the wire format in both directions.

use bytes::Bytes;
use clearinghouse::idscp2::proto::app::{
    app_layer_message, AppLayerMessage, GenericMessage, HeaderEntry, IdsMessage,
};
use clearinghouse::idscp2::proto::idscp_close::CloseCause;
use clearinghouse::idscp2::proto::idscp_message::Message;
use clearinghouse::idscp2::proto::{
    IdscpAck, IdscpClose, IdscpDat, IdscpDatExpired, IdscpData, IdscpHello, IdscpMessage,
    IdscpRaProver, IdscpRaVerifier, IdscpReRa,
};
use prost::Message as _;

fn wire(hex: &str) -> Vec<u8> {
    hex::decode(hex.replace(' ', "")).unwrap()
}

fn idscp(message: Message) -> IdscpMessage {
    IdscpMessage {
        message: Some(message),
    }
}

/// Which oneof member is present: what a receiver dispatches on.
fn variant(message: &IdscpMessage) -> &'static str {
    match &message.message {
        None => "none",
        Some(Message::IdscpHello(_)) => "idscpHello",
        Some(Message::IdscpClose(_)) => "idscpClose",
        Some(Message::IdscpDatExpired(_)) => "idscpDatExpired",
        Some(Message::IdscpDat(_)) => "idscpDat",
        Some(Message::IdscpReRa(_)) => "idscpReRa",
        Some(Message::IdscpRaProver(_)) => "idscpRaProver",
        Some(Message::IdscpRaVerifier(_)) => "idscpRaVerifier",
        Some(Message::IdscpData(_)) => "idscpData",
        Some(Message::IdscpAck(_)) => "idscpAck",
    }
}

/// Encodes and decodes `message` against `hex`, comparing bytes, the present variant and all fields.
fn assert_golden(hex: &str, variant_name: &str, message: IdscpMessage) {
    let bytes = wire(hex);
    assert_eq!(
        hex::encode(message.encode_to_vec()),
        hex::encode(&bytes),
        "encoding of {message:?}"
    );
    let decoded = IdscpMessage::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        variant(&decoded),
        variant_name,
        "variant decoded from {hex}"
    );
    assert_eq!(decoded, message, "fields decoded from {hex}");
}

#[test]
fn ack_true() {
    assert_golden(
        "4a 02 08 01",
        "idscpAck",
        idscp(Message::IdscpAck(IdscpAck {
            alternating_bit: true,
        })),
    );
}

#[test]
fn ack_false() {
    assert_golden(
        "4a 00",
        "idscpAck",
        idscp(Message::IdscpAck(IdscpAck {
            alternating_bit: false,
        })),
    );
}

#[test]
fn dat_expired() {
    assert_golden(
        "1a 00",
        "idscpDatExpired",
        idscp(Message::IdscpDatExpired(IdscpDatExpired {})),
    );
}

#[test]
fn re_ra_with_empty_cause() {
    assert_golden(
        "2a 00",
        "idscpReRa",
        idscp(Message::IdscpReRa(IdscpReRa {
            cause: String::new(),
        })),
    );
}

#[test]
fn data_with_bit_false() {
    assert_golden(
        "42 04 0a 02 68 69",
        "idscpData",
        idscp(Message::IdscpData(IdscpData {
            data: Bytes::from_static(b"hi"),
            alternating_bit: false,
        })),
    );
}

#[test]
fn data_with_bit_true() {
    assert_golden(
        "42 06 0a 02 68 69 10 01",
        "idscpData",
        idscp(Message::IdscpData(IdscpData {
            data: Bytes::from_static(b"hi"),
            alternating_bit: true,
        })),
    );
}

#[test]
fn close_no_valid_dat() {
    let hex = "12 10 08 03 12 0c 4e 6f 20 76 61 6c 69 64 20 44 41 54";
    assert_golden(
        hex,
        "idscpClose",
        idscp(Message::IdscpClose(IdscpClose {
            cause_code: CloseCause::NoValidDat as i32,
            cause_msg: "No valid DAT".to_owned(),
        })),
    );
    let Some(Message::IdscpClose(close)) =
        IdscpMessage::decode(wire(hex).as_slice()).unwrap().message
    else {
        panic!("not an idscpClose");
    };
    assert_eq!(close.cause_code(), CloseCause::NoValidDat);
}

#[test]
fn hello() {
    assert_golden(
        "0a 17 08 02 12 03 0a 01 54 1a 06 44 75 6d 6d 79 32 22 06 44 75 6d 6d 79 32",
        "idscpHello",
        idscp(Message::IdscpHello(IdscpHello {
            version: 2,
            dynamic_attribute_token: Some(IdscpDat {
                token: Bytes::from_static(b"T"),
            }),
            supported_ra_suite: vec!["Dummy2".to_owned()],
            expected_ra_suite: vec!["Dummy2".to_owned()],
        })),
    );
}

/// Messages without a protoc golden, encoded by hand from the field table of section 3
/// (tag byte = field number << 3 | 2 for a length-delimited field).
#[test]
fn members_without_a_protoc_golden_follow_the_field_table() {
    assert_golden(
        "22 03 0a 01 54",
        "idscpDat",
        idscp(Message::IdscpDat(IdscpDat {
            token: Bytes::from_static(b"T"),
        })),
    );
    assert_golden(
        "32 06 0a 04 74 65 73 74",
        "idscpRaProver",
        idscp(Message::IdscpRaProver(IdscpRaProver {
            data: Bytes::from_static(b"test"),
        })),
    );
    assert_golden(
        "3a 06 0a 04 74 65 73 74",
        "idscpRaVerifier",
        idscp(Message::IdscpRaVerifier(IdscpRaVerifier {
            data: Bytes::from_static(b"test"),
        })),
    );
}

/// Several messages encode to a present-but-empty submessage; a receiver that looked at the body
/// instead of the oneof member would take them for nothing. An empty frame, by contrast, carries none.
#[test]
fn present_but_empty_submessages_decode_to_their_variant() {
    let cases: [(&str, &str, Message); 7] = [
        (
            "1a 00",
            "idscpDatExpired",
            Message::IdscpDatExpired(IdscpDatExpired {}),
        ),
        ("4a 00", "idscpAck", Message::IdscpAck(IdscpAck::default())),
        (
            "2a 00",
            "idscpReRa",
            Message::IdscpReRa(IdscpReRa::default()),
        ),
        ("22 00", "idscpDat", Message::IdscpDat(IdscpDat::default())),
        (
            "32 00",
            "idscpRaProver",
            Message::IdscpRaProver(IdscpRaProver::default()),
        ),
        (
            "3a 00",
            "idscpRaVerifier",
            Message::IdscpRaVerifier(IdscpRaVerifier::default()),
        ),
        (
            "12 00",
            "idscpClose",
            Message::IdscpClose(IdscpClose::default()),
        ),
    ];
    for (hex, name, expected) in cases {
        let decoded = IdscpMessage::decode(wire(hex).as_slice()).unwrap();
        assert_eq!(variant(&decoded), name, "{hex}");
        assert_eq!(decoded.message, Some(expected), "{hex}");
    }
    // An empty IdscpClose is USER_SHUTDOWN, the enum's zero value.
    let Some(Message::IdscpClose(close)) = IdscpMessage::decode(wire("12 00").as_slice())
        .unwrap()
        .message
    else {
        panic!("not an idscpClose");
    };
    assert_eq!(close.cause_code(), CloseCause::UserShutdown);

    let nothing = IdscpMessage::decode(&[][..]).unwrap();
    assert_eq!(variant(&nothing), "none");
    assert!(IdscpMessage { message: None }.encode_to_vec().is_empty());
}

#[test]
fn close_causes_have_the_jvm_numbers() {
    let expected = [
        (CloseCause::UserShutdown, 0, "USER_SHUTDOWN"),
        (CloseCause::Timeout, 1, "TIMEOUT"),
        (CloseCause::Error, 2, "ERROR"),
        (CloseCause::NoValidDat, 3, "NO_VALID_DAT"),
        (
            CloseCause::NoRaMechanismMatchProver,
            4,
            "NO_RA_MECHANISM_MATCH_PROVER",
        ),
        (
            CloseCause::NoRaMechanismMatchVerifier,
            5,
            "NO_RA_MECHANISM_MATCH_VERIFIER",
        ),
        (CloseCause::RaProverFailed, 6, "RA_PROVER_FAILED"),
        (CloseCause::RaVerifierFailed, 7, "RA_VERIFIER_FAILED"),
    ];
    for (cause, number, name) in expected {
        assert_eq!(cause as i32, number, "{name}");
        assert_eq!(cause.as_str_name(), name);
        assert_eq!(CloseCause::try_from(number), Ok(cause));
    }
    assert!(CloseCause::try_from(8).is_err());
}

#[test]
fn app_layer_ids_message() {
    let bytes =
        wire("12 18 0a 02 7b 7d 12 01 70 1a 0f 0a 0a 63 68 2d 69 64 73 2d 70 69 64 12 01 78");
    let message = AppLayerMessage {
        message: Some(app_layer_message::Message::IdsMessage(IdsMessage {
            header: "{}".to_owned(),
            payload: Bytes::from_static(b"p"),
            extra_headers: vec![HeaderEntry {
                name: "ch-ids-pid".to_owned(),
                value: "x".to_owned(),
            }],
        })),
    };
    assert_eq!(hex::encode(message.encode_to_vec()), hex::encode(&bytes));

    let decoded = AppLayerMessage::decode(bytes.as_slice()).unwrap();
    let Some(app_layer_message::Message::IdsMessage(ids)) = &decoded.message else {
        panic!("expected idsMessage, got {decoded:?}");
    };
    assert_eq!(ids.header, "{}");
    assert_eq!(ids.payload, Bytes::from_static(b"p"));
    assert_eq!(ids.extra_headers.len(), 1);
    assert_eq!(ids.extra_headers[0].name, "ch-ids-pid");
    assert_eq!(ids.extra_headers[0].value, "x");
    assert_eq!(decoded, message);
}

/// genericMessage is field 1 with the same body layout as idsMessage (section 8), so the same
/// bytes under tag 0a must decode as a GenericMessage, not an IdsMessage.
#[test]
fn app_layer_generic_message_is_field_one() {
    let bytes =
        wire("0a 18 0a 02 7b 7d 12 01 70 1a 0f 0a 0a 63 68 2d 69 64 73 2d 70 69 64 12 01 78");
    let message = AppLayerMessage {
        message: Some(app_layer_message::Message::GenericMessage(GenericMessage {
            header: "{}".to_owned(),
            payload: Bytes::from_static(b"p"),
            extra_headers: vec![HeaderEntry {
                name: "ch-ids-pid".to_owned(),
                value: "x".to_owned(),
            }],
        })),
    };
    assert_eq!(hex::encode(message.encode_to_vec()), hex::encode(&bytes));
    assert_eq!(AppLayerMessage::decode(bytes.as_slice()).unwrap(), message);
}
