//! The request path and what runs on it: authentication of a caller (`auth`), one
//! request's policy, quota and audit (`request`), and the operations themselves, the
//! Decision Gate tools (`tools`, one file per family) and the admin operations (`admin`,
//! and `subjects` for the OIDC subject mapping).
//! Transports (`http`, `rpc`) only frame requests and answers and call into here.

pub mod admin;
pub mod auth;
pub mod request;
pub mod subjects;
pub mod tools;
