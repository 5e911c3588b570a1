//! Test DAPS: provided by the transport branch.
