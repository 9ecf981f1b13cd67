//! The 37 Galaxy Zoo outputs and the decision tree that ties them together (DESIGN.md).

/// Label columns, in the Kaggle CSV's order.
pub const CLASS_NAMES: [&str; 37] = [
    "Class1.1",
    "Class1.2",
    "Class1.3",
    "Class2.1",
    "Class2.2",
    "Class3.1",
    "Class3.2",
    "Class4.1",
    "Class4.2",
    "Class5.1",
    "Class5.2",
    "Class5.3",
    "Class5.4",
    "Class6.1",
    "Class6.2",
    "Class7.1",
    "Class7.2",
    "Class7.3",
    "Class8.1",
    "Class8.2",
    "Class8.3",
    "Class8.4",
    "Class8.5",
    "Class8.6",
    "Class8.7",
    "Class9.1",
    "Class9.2",
    "Class9.3",
    "Class10.1",
    "Class10.2",
    "Class10.3",
    "Class11.1",
    "Class11.2",
    "Class11.3",
    "Class11.4",
    "Class11.5",
    "Class11.6",
];

pub const N_CLASSES: usize = 37;

/// One galaxy's 37 vote fractions (or predictions), in `CLASS_NAMES` order.
pub type Labels = [f32; N_CLASSES];

/// One question of the tree: its answer columns and the column its answers sum to (None = 1).
#[derive(Debug, Clone)]
pub struct Question {
    pub number: u8,
    pub columns: std::ops::Range<usize>,
    pub parent: Option<usize>,
}

/// The questions in the order a tree output layer evaluates them (parents first).
pub const QUESTIONS: [Question; 11] = [
    Question {
        number: 1,
        columns: 0..3,
        parent: None,
    },
    Question {
        number: 2,
        columns: 3..5,
        parent: Some(1),
    }, // Class1.2
    Question {
        number: 3,
        columns: 5..7,
        parent: Some(4),
    }, // Class2.2
    Question {
        number: 4,
        columns: 7..9,
        parent: Some(4),
    }, // Class2.2
    Question {
        number: 5,
        columns: 9..13,
        parent: Some(4),
    }, // Class2.2
    Question {
        number: 6,
        columns: 13..15,
        parent: None,
    },
    Question {
        number: 7,
        columns: 15..18,
        parent: Some(0),
    }, // Class1.1
    Question {
        number: 8,
        columns: 18..25,
        parent: Some(13),
    }, // Class6.1
    Question {
        number: 9,
        columns: 25..28,
        parent: Some(3),
    }, // Class2.1
    Question {
        number: 10,
        columns: 28..31,
        parent: Some(7),
    }, // Class4.1
    Question {
        number: 11,
        columns: 31..37,
        parent: Some(7),
    }, // Class4.1
];

/// The question each `QUESTIONS` entry asks, by question number − 1 (Willett et al. 2013).
pub const QUESTION_TEXT: [&str; 11] = [
    "smooth, features or disk, star or artifact?",
    "edge-on disk?",
    "bar?",
    "spiral arms?",
    "central bulge?",
    "anything odd?",
    "how rounded?",
    "odd feature",
    "bulge shape (edge-on)",
    "arm winding",
    "number of arms",
];

#[rustfmt::skip]
/// A short name for the answer of each of the 37 classes, in `CLASS_NAMES` order.
pub const ANSWER_NAMES: [&str; 37] = [
    "smooth", "features/disk", "star/artifact",
    "edge-on", "not edge-on",
    "bar", "no bar",
    "spiral", "no spiral",
    "no bulge", "just noticeable", "obvious", "dominant",
    "odd", "not odd",
    "completely round", "in between", "cigar-shaped",
    "ring", "lens/arc", "disturbed", "irregular", "other", "merger", "dust lane",
    "rounded", "boxy", "no bulge",
    "tight", "medium", "loose",
    "1 arm", "2 arms", "3 arms", "4 arms", "more than four", "can't tell",
];

/// The largest absolute deviation of any question's sum from its parent value.
pub fn tree_deviation(labels: &[f32]) -> f32 {
    QUESTIONS
        .iter()
        .map(|q| {
            let sum: f32 = labels[q.columns.clone()].iter().sum();
            let target = q.parent.map(|p| labels[p]).unwrap_or(1.0);
            (sum - target).abs()
        })
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_cover_every_column_once() {
        let mut seen = [0u8; N_CLASSES];
        for q in QUESTIONS {
            for c in q.columns {
                seen[c] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn parents_are_the_columns_design_md_names() {
        let parent = |n: u8| {
            QUESTIONS
                .iter()
                .find(|q| q.number == n)
                .and_then(|q| q.parent)
                .map(|p| CLASS_NAMES[p])
        };
        assert_eq!(parent(2), Some("Class1.2"));
        assert_eq!(parent(5), Some("Class2.2"));
        assert_eq!(parent(7), Some("Class1.1"));
        assert_eq!(parent(8), Some("Class6.1"));
        assert_eq!(parent(9), Some("Class2.1"));
        assert_eq!(parent(11), Some("Class4.1"));
        assert_eq!(parent(6), None);
    }
}
