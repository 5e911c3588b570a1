//! The IDSCP2 transport as the clearing house uses it: the [`idscp2`] crate, carrying
//! the IDS application layer ([`proto::app`]) in its data messages.
//!
//! The crate is generic over the application message; this room fixes it to
//! [`AppLayerMessage`](proto::app::AppLayerMessage) and otherwise re-exports the crate as it is, so
//! that the clearing house, its tests and its benches name the transport in one way.

pub use ::idscp2::*;

/// The transport's protobuf messages, and the IDS application layer carried in their data.
pub mod proto {
    pub use ::idscp2::proto::*;

    /// The IDS application layer (`proto/idscp2_app.proto`), wire-compatible with idscp2-jvm's
    /// app layer: the clearing house's messages travel as `AppLayerMessage`s in IDSCP2 data.
    #[allow(clippy::all, missing_docs)]
    pub mod app {
        include!(concat!(env!("OUT_DIR"), "/idscp2.app.rs"));
    }
}

/// A connection carrying the IDS application layer.
pub mod connection {
    pub use ::idscp2::connection::*;

    use super::proto::app::AppLayerMessage;

    /// An IDSCP2 connection whose data messages are `AppLayerMessage`s.
    pub type Connection = ::idscp2::connection::Connection<AppLayerMessage>;
    /// A request from the peer, as the server loop hands it to the clearing house.
    pub type Request = ::idscp2::connection::Request<AppLayerMessage>;
}

/// Connecting to a clearing house (or any IDSCP2 peer speaking the IDS application layer).
pub mod client {
    pub use ::idscp2::client::*;

    use super::connection::Connection;

    /// [`idscp2::client::connect`] for the IDS application layer.
    pub async fn connect(
        addr: &str,
        server_name: &str,
        config: &ClientConfig,
    ) -> Result<Connection, ClientError> {
        ::idscp2::client::connect(addr, server_name, config).await
    }
}
