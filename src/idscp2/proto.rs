//! The generated protobuf types of the IDSCP2 transport and application layers.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/idscp2.rs"));

pub mod app {
    include!(concat!(env!("OUT_DIR"), "/idscp2.app.rs"));
}
