//! The RET requirement algebra: a tree of And/Or/Not/RequireGroup over condition leaves,
//! evaluated in strong Kleene three-valued logic, with no short-circuit so the trace
//! lists every leaf visited.

use serde::{Deserialize, Serialize};

/// Deepest nesting evaluated; anything deeper makes the whole gate Unknown.
pub const MAX_EVAL_DEPTH: usize = 32;

/// A three-valued truth value. Spelled in PascalCase on the wire (`"True"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TriState {
    /// Definitely satisfied.
    True,
    /// Definitely not satisfied.
    False,
    /// Not decidable from the evidence at hand.
    Unknown,
}

impl TriState {
    /// Kleene conjunction.
    #[must_use]
    pub fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::False, _) | (_, Self::False) => Self::False,
            (Self::True, Self::True) => Self::True,
            _ => Self::Unknown,
        }
    }

    /// Kleene disjunction.
    #[must_use]
    pub fn or(self, other: Self) -> Self {
        match (self, other) {
            (Self::True, _) | (_, Self::True) => Self::True,
            (Self::False, Self::False) => Self::False,
            _ => Self::Unknown,
        }
    }

    /// Kleene negation: Unknown stays Unknown.
    #[must_use]
    pub fn negate(self) -> Self {
        match self {
            Self::True => Self::False,
            Self::False => Self::True,
            Self::Unknown => Self::Unknown,
        }
    }
}

/// A requirement tree, externally tagged on the wire (`{"And":[...]}`, `{"Condition":"id"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Requirement {
    /// All children must hold; empty is True.
    And(Vec<Requirement>),
    /// Any child must hold; empty is False.
    Or(Vec<Requirement>),
    /// Negation of one child.
    Not(Box<Requirement>),
    /// At least `min` of `reqs` must hold.
    RequireGroup {
        /// Minimum number of true children.
        min: u8,
        /// The children.
        reqs: Vec<Requirement>,
    },
    /// A leaf naming a condition of the scenario.
    Condition(String),
}

impl Requirement {
    /// Every condition leaf, depth-first left to right, duplicates included.
    #[must_use]
    pub fn condition_leaves(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_leaves(&mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Self::And(children) | Self::Or(children) | Self::RequireGroup { reqs: children, .. } => {
                for child in children {
                    child.collect_leaves(out);
                }
            }
            Self::Not(child) => child.collect_leaves(out),
            Self::Condition(id) => out.push(id),
        }
    }

    /// Evaluates the tree; `leaf` answers each condition and sees every visit in order.
    /// A tree deeper than [`MAX_EVAL_DEPTH`] evaluates to Unknown as a whole.
    pub fn evaluate(&self, leaf: &mut dyn FnMut(&str) -> TriState) -> TriState {
        match self.evaluate_at(0, leaf) {
            Some(status) => status,
            None => TriState::Unknown,
        }
    }

    fn evaluate_at(&self, depth: usize, leaf: &mut dyn FnMut(&str) -> TriState) -> Option<TriState> {
        if depth > MAX_EVAL_DEPTH {
            return None;
        }
        let next = depth + 1;
        Some(match self {
            Self::Condition(id) => leaf(id),
            Self::And(children) => {
                let mut acc = TriState::True;
                for child in children {
                    acc = acc.and(child.evaluate_at(next, leaf)?);
                }
                acc
            }
            Self::Or(children) => {
                let mut acc = TriState::False;
                for child in children {
                    acc = acc.or(child.evaluate_at(next, leaf)?);
                }
                acc
            }
            Self::Not(child) => child.evaluate_at(next, leaf)?.negate(),
            Self::RequireGroup { min, reqs } => {
                let mut true_count = 0usize;
                let mut unknown_count = 0usize;
                for child in reqs {
                    match child.evaluate_at(next, leaf)? {
                        TriState::True => true_count += 1,
                        TriState::Unknown => unknown_count += 1,
                        TriState::False => {}
                    }
                }
                let min = usize::from(*min);
                if min == 0 || true_count >= min {
                    TriState::True
                } else if true_count + unknown_count < min {
                    TriState::False
                } else {
                    TriState::Unknown
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(id: &str) -> Requirement {
        Requirement::Condition(id.to_string())
    }

    #[test]
    fn empty_and_is_true_empty_or_is_false() {
        assert_eq!(Requirement::And(vec![]).evaluate(&mut |_| TriState::False), TriState::True);
        assert_eq!(Requirement::Or(vec![]).evaluate(&mut |_| TriState::True), TriState::False);
    }

    #[test]
    fn require_group_counts_unknowns() {
        let group = Requirement::RequireGroup { min: 2, reqs: vec![leaf("a"), leaf("b"), leaf("c")] };
        let status = group.evaluate(&mut |id| match id {
            "a" => TriState::True,
            "b" => TriState::Unknown,
            _ => TriState::False,
        });
        assert_eq!(status, TriState::Unknown);
        let over = Requirement::RequireGroup { min: 4, reqs: vec![leaf("a")] };
        assert_eq!(over.evaluate(&mut |_| TriState::True), TriState::False);
    }

    #[test]
    fn every_leaf_is_visited_without_short_circuit() {
        let tree = Requirement::And(vec![leaf("a"), Requirement::Or(vec![leaf("b"), leaf("a")])]);
        let mut seen = Vec::new();
        let _ = tree.evaluate(&mut |id| {
            seen.push(id.to_string());
            TriState::False
        });
        assert_eq!(seen, ["a", "b", "a"]);
    }

    #[test]
    fn deeper_than_limit_is_unknown() {
        let mut tree = leaf("a");
        for _ in 0..=MAX_EVAL_DEPTH {
            tree = Requirement::Not(Box::new(tree));
        }
        assert_eq!(tree.evaluate(&mut |_| TriState::True), TriState::Unknown);
    }

    #[test]
    fn wire_spelling_is_externally_tagged() {
        let tree: Requirement = serde_json::from_str(
            r#"{"And":[{"Condition":"x"},{"Not":{"Condition":"y"}},{"RequireGroup":{"min":1,"reqs":[]}}]}"#,
        )
        .unwrap();
        assert_eq!(tree.condition_leaves(), ["x", "y"]);
    }
}
