//! Identity and policy for the appliance, kept pure (no storage, no network) so that it
//! can be unit-tested exhaustively and fuzzed: the API key format ([`keys`]), roles and
//! principals ([`principal`]), and the policy table with the single authorization
//! decision every request goes through ([`policy`]).

pub mod keys;
pub mod policy;
pub mod principal;

pub use policy::{decide, Decision, Operation, OperationKind, PolicyRow, ScopeKind, Target, UsageCounter, POLICY};
pub use principal::{Principal, Role};
