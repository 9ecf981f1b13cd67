//! The challenge's score: RMSE over the 37 outputs, overall, per question and per class. The one
//! implementation every stage, the training loop and the report use.

use crate::labels::{N_CLASSES, QUESTIONS};

/// RMSE overall, per question (11) and per class (37).
#[derive(Debug, Clone)]
pub struct Scores {
    pub overall: f64,
    pub questions: Vec<f64>,
    pub classes: Vec<f64>,
}

pub fn score(pred: &[crate::labels::Labels], truth: &[crate::labels::Labels]) -> Scores {
    let n = pred.len().max(1) as f64;
    let mut sq = [0f64; N_CLASSES];
    for (p, t) in pred.iter().zip(truth) {
        for c in 0..N_CLASSES {
            sq[c] += (p[c] as f64 - t[c] as f64).powi(2);
        }
    }
    let classes: Vec<f64> = sq.iter().map(|s| (s / n).sqrt()).collect();
    let questions = QUESTIONS
        .iter()
        .map(|q| {
            (q.columns.clone().map(|c| sq[c]).sum::<f64>() / (n * q.columns.len() as f64)).sqrt()
        })
        .collect();
    Scores {
        overall: (sq.iter().sum::<f64>() / (n * N_CLASSES as f64)).sqrt(),
        questions,
        classes,
    }
}

/// Root mean squared error over all outputs of all rows, summed row by row (the order baselines
/// and the training loop's validation have always used: their artifacts stay byte-identical;
/// it agrees with `score(..).overall`, which sums class by class, to rounding).
pub fn rmse(pred: &[crate::labels::Labels], truth: &[crate::labels::Labels]) -> f64 {
    let mut sum = 0f64;
    for (p, t) in pred.iter().zip(truth) {
        for c in 0..N_CLASSES {
            let d = p[c] as f64 - t[c] as f64;
            sum += d * d;
        }
    }
    (sum / (pred.len() * N_CLASSES).max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmse_of_a_constant_offset_is_the_offset() {
        let truth = vec![[0.25f32; N_CLASSES]; 4];
        let pred = vec![[0.5f32; N_CLASSES]; 4];
        assert!((rmse(&pred, &truth) - 0.25).abs() < 1e-9);
        let s = score(&pred, &truth);
        assert!(
            s.questions
                .iter()
                .chain(&s.classes)
                .all(|v| (v - 0.25).abs() < 1e-9)
        );
        assert_eq!(rmse(&[], &[]), 0.0);
    }
}
