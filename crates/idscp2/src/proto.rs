//! The generated protobuf types of the IDSCP2 transport (`proto/idscp2.proto`).

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/idscp2.rs"));
