//! Compression plans: the two schemes as ordered lists of "replace these blocks by that one"
//! over the same VGG19 blocks (docs/method.md §3.1 and §4.1).

use serde::{Deserialize, Serialize};

use crate::blocks::BlockKind;
use crate::config::{ModelId, Scheme};

/// One pyramid step: the blocks of the teacher that the student replaces, and the new block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionStep {
    /// Teacher blocks removed, in forward order; the last one is "D", whose output the student's
    /// new block is matched to in stage 1 (§3.3, §4.3).
    pub replaces: Vec<BlockKind>,
    /// The new block "C".
    pub with: BlockKind,
}

impl CompressionStep {
    /// The teacher block whose output is the stage-1 target.
    pub fn matched_teacher_block(&self) -> BlockKind {
        *self
            .replaces
            .last()
            .expect("a step replaces at least one block")
    }
}

/// Role of a block inside one model (report §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Inherited from the teacher and placed before the compressed block: trained in both stages.
    Inherited,
    /// The new, randomly initialised block that replaced the teacher's block(s).
    Compressed,
    /// Inherited and placed after the compressed block: no gradient in stage 1; trained in stage 2
    /// unless `freeze_inherited` is set (§13 B1).
    Frozen,
    /// The classifier when it is not the compressed block (it always lies after it, so it is
    /// "frozen" in the same sense).
    Head,
}

impl Role {
    /// True for blocks that lie after the compressed block.
    pub fn is_after_compressed(self) -> bool {
        matches!(self, Role::Frozen | Role::Head)
    }
}

/// The five steps of a scheme, in level order (SVGG17 first).
pub fn compression_plan(scheme: Scheme) -> Vec<CompressionStep> {
    use BlockKind::*;
    let step = |replaces: &[BlockKind], with| CompressionStep {
        replaces: replaces.to_vec(),
        with,
    };
    match scheme {
        Scheme::Forward => vec![
            step(&[Fc3], Fc1),
            step(&[B5], K5),
            step(&[B4], K4),
            step(&[B3], K3),
            step(&[B1, B2], K12),
        ],
        Scheme::Backward => vec![
            step(&[B1, B2], K12),
            step(&[B3], K3),
            step(&[B4], K4),
            step(&[B5], K5),
            step(&[Fc3], Fc1),
        ],
    }
}

/// The compression step that produced `model` (None for VGG19).
pub fn step_of(model: ModelId) -> Option<CompressionStep> {
    (model.level > 0).then(|| compression_plan(model.scheme)[model.level - 1].clone())
}

/// The blocks of `model` in forward order, with their roles.
pub fn architecture(model: ModelId) -> Vec<(BlockKind, Role)> {
    let mut blocks: Vec<BlockKind> = BlockKind::VGG19.to_vec();
    let plan = compression_plan(model.scheme);
    for step in plan.iter().take(model.level) {
        let first = blocks
            .iter()
            .position(|b| *b == step.replaces[0])
            .expect("plans only replace blocks that are present");
        for b in &step.replaces {
            debug_assert!(blocks.contains(b));
        }
        blocks.retain(|b| !step.replaces.contains(b));
        blocks.insert(first, step.with);
    }
    let compressed = step_of(model).map(|s| s.with);
    let c_pos = compressed.and_then(|c| blocks.iter().position(|b| *b == c));
    blocks
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let role = match c_pos {
                Some(p) if i == p => Role::Compressed,
                _ if b.is_head() => Role::Head,
                Some(p) if i > p => Role::Frozen,
                _ => Role::Inherited,
            };
            (b, role)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use BlockKind::*;

    fn kinds(level: usize, scheme: Scheme) -> Vec<BlockKind> {
        architecture(ModelId { level, scheme })
            .into_iter()
            .map(|(b, _)| b)
            .collect()
    }

    #[test]
    fn forward_chain_matches_method_3_1() {
        let f = Scheme::Forward;
        assert_eq!(kinds(0, f), vec![C11, B1, B2, B3, B4, B5, Fc3]);
        assert_eq!(kinds(1, f), vec![C11, B1, B2, B3, B4, B5, Fc1]);
        assert_eq!(kinds(2, f), vec![C11, B1, B2, B3, B4, K5, Fc1]);
        assert_eq!(kinds(3, f), vec![C11, B1, B2, B3, K4, K5, Fc1]);
        assert_eq!(kinds(4, f), vec![C11, B1, B2, K3, K4, K5, Fc1]);
        assert_eq!(kinds(5, f), vec![C11, K12, K3, K4, K5, Fc1]);
    }

    #[test]
    fn backward_chain_matches_method_4_1() {
        let b = Scheme::Backward;
        assert_eq!(kinds(1, b), vec![C11, K12, B3, B4, B5, Fc3]);
        assert_eq!(kinds(2, b), vec![C11, K12, K3, B4, B5, Fc3]);
        assert_eq!(kinds(3, b), vec![C11, K12, K3, K4, B5, Fc3]);
        assert_eq!(kinds(4, b), vec![C11, K12, K3, K4, K5, Fc3]);
        assert_eq!(kinds(5, b), vec![C11, K12, K3, K4, K5, Fc1]);
    }

    #[test]
    fn roles() {
        let a = architecture(ModelId {
            level: 3,
            scheme: Scheme::Forward,
        });
        let roles: Vec<Role> = a.iter().map(|(_, r)| *r).collect();
        use Role::*;
        assert_eq!(
            roles,
            vec![Inherited, Inherited, Inherited, Inherited, Compressed, Frozen, Head]
        );
        let a = architecture(ModelId {
            level: 1,
            scheme: Scheme::Forward,
        });
        assert_eq!(a.last().unwrap(), &(Fc1, Compressed));
        let a = architecture(ModelId {
            level: 2,
            scheme: Scheme::Backward,
        });
        let roles: Vec<Role> = a.iter().map(|(_, r)| *r).collect();
        assert_eq!(
            roles,
            vec![Inherited, Inherited, Compressed, Frozen, Frozen, Head]
        );
    }
}
