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
