//! The activation a kernel applies to its own output.

/// The activation fused into a convolution or a batch norm. Both keep the sign of their input,
/// so a backward pass reads the slope from the output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Identity,
    /// `max(x, slope·x)`: slope 0 is ReLU.
    Rectifier {
        slope: f32,
    },
}

impl Activation {
    pub fn apply(self, z: f32) -> f32 {
        match self {
            Activation::Identity => z,
            Activation::Rectifier { slope } => {
                if z > 0.0 {
                    z
                } else {
                    slope * z
                }
            }
        }
    }
    pub fn slope(self, y: f32) -> f32 {
        match self {
            Activation::Identity => 1.0,
            Activation::Rectifier { slope } => {
                if y > 0.0 {
                    1.0
                } else {
                    slope
                }
            }
        }
    }
}

/// `dz = dy · act'(z)`, read from the output `y = act(z)` (nothing to do for the identity).
pub fn pre_activation_grad(act: Activation, output: &[f32], out_grad: &[f32]) -> Option<Vec<f32>> {
    use rayon::prelude::*;
    if act == Activation::Identity {
        return None;
    }
    let mut dz = vec![0.0f32; out_grad.len()];
    dz.par_chunks_mut(1 << 14)
        .zip(output.par_chunks(1 << 14).zip(out_grad.par_chunks(1 << 14)))
        .for_each(|(dz, (y, dy))| {
            for ((d, &y), &g) in dz.iter_mut().zip(y).zip(dy) {
                *d = g * act.slope(y);
            }
        });
    Some(dz)
}
