//! The request path and what runs on it: authentication of a caller (`auth`), one
//! request's policy, quota and audit (`request`), and the operations themselves, the
//! Decision Gate tools (`tools`, one file per family) and the admin operations (`admin`,
//! `subjects` for the OIDC subject mapping, `browse` for runs, scenarios and audit
//! entries as the admin UI shows them).
//! Transports (`http`, `rpc`) only frame requests and answers and call into here.

pub mod admin;
pub mod auth;
pub mod browse;
pub mod request;
pub mod subjects;
pub mod tools;
