//! `galaxy-pipe synth`: a synthetic Galaxy Zoo data set in the exact Kaggle layout.
//!
//! Each galaxy is rendered from morphology parameters (smooth ellipticals, edge-on disks with or
//! without a bulge, face-on disks with bars and spiral arms, stars/artifacts, odd features) with
//! random orientation, position jitter, sky noise and field stars. Its 37 labels come from the
//! same parameters: each question's true answer, blurred by vote-like noise, then multiplied by
//! the parent answer, so every row obeys the decision tree exactly.

use std::f64::consts::PI;
use std::io::Write;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::io_error::IoError;
use crate::labels::{CLASS_NAMES, N_CLASSES, QUESTIONS};

pub const SIZE: usize = 424;

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub count: usize,
    pub test_count: usize,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    #[error("encoding {}: {source}", .path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
}

/// Morphology of one synthetic galaxy: the ground truth both the image and the labels follow.
#[derive(Debug, Clone, PartialEq)]
pub enum Morphology {
    /// A smooth elliptical; `axis_ratio` decides round / in-between / cigar (Q7).
    Smooth { axis_ratio: f64 },
    /// An edge-on disk; `bulge` is 0 rounded, 1 boxy, 2 none (Q9).
    EdgeOn { bulge: usize },
    /// A disk seen face-on-ish (Q2 no) with optional bar (Q3) and arms (Q4, Q10, Q11), and a
    /// bulge prominence 0..=3 (Q5).
    FaceOn {
        bar: bool,
        arms: Option<(usize, usize)>,
        bulge: usize,
        inclination: f64,
    },
    /// A star or image artifact (Q1.3).
    Star,
}

#[derive(Debug, Clone)]
pub struct Galaxy {
    pub morphology: Morphology,
    /// Odd feature index 0..7 for Q8 (ring, lens/arc, disturbed, irregular, other, merger, dust lane).
    pub odd: Option<usize>,
}

/// Draw a random galaxy (types roughly in Galaxy Zoo proportions).
pub fn random_galaxy(rng: &mut impl Rng) -> Galaxy {
    let t: f64 = rng.random();
    let morphology = if t < 0.40 {
        Morphology::Smooth {
            axis_ratio: rng.random_range(0.25..1.0),
        }
    } else if t < 0.55 {
        Morphology::EdgeOn {
            bulge: rng.random_range(0..3),
        }
    } else if t < 0.96 {
        let spiral = rng.random_bool(0.7);
        let arms = spiral.then(|| {
            let winding = rng.random_range(0..3);
            let count = [0usize, 1, 1, 1, 2, 3, 4][rng.random_range(0..7)]; // 2 arms most common
            (winding, count)
        });
        Morphology::FaceOn {
            bar: rng.random_bool(0.35),
            arms,
            bulge: rng.random_range(0..4),
            inclination: rng.random_range(0.6..1.0),
        }
    } else {
        Morphology::Star
    };
    let odd = (!matches!(morphology, Morphology::Star) && rng.random_bool(0.2))
        .then(|| rng.random_range(0..7));
    Galaxy { morphology, odd }
}

/// The true answer index of each question (11 entries), for the labels.
fn true_answers(g: &Galaxy) -> [usize; 11] {
    // Defaults for questions whose parent answer is (near) zero for this galaxy.
    let mut a = [0usize, 1, 1, 1, 1, 1, 1, 0, 2, 1, 1];
    match &g.morphology {
        Morphology::Smooth { axis_ratio } => {
            a[0] = 0;
            a[6] = if *axis_ratio > 0.8 {
                0
            } else if *axis_ratio > 0.5 {
                1
            } else {
                2
            };
        }
        Morphology::EdgeOn { bulge } => {
            a[0] = 1;
            a[1] = 0;
            a[8] = *bulge;
        }
        Morphology::FaceOn {
            bar, arms, bulge, ..
        } => {
            a[0] = 1;
            a[1] = 1;
            a[2] = if *bar { 0 } else { 1 };
            a[3] = if arms.is_some() { 0 } else { 1 };
            a[4] = *bulge;
            if let Some((winding, count)) = arms {
                a[9] = *winding;
                a[10] = *count;
            }
        }
        Morphology::Star => a[0] = 2,
    }
    a[5] = if g.odd.is_some() { 0 } else { 1 };
    if let Some(o) = g.odd {
        a[7] = o;
    }
    a
}

/// 37 vote fractions: each question's one-hot truth mixed with random "votes", scaled by its parent.
pub fn labels(g: &Galaxy, rng: &mut impl Rng) -> [f64; N_CLASSES] {
    let truth = true_answers(g);
    let mut out = [0f64; N_CLASSES];
    // QUESTIONS is ordered parents first, so parent values are final when used.
    for q in QUESTIONS.iter() {
        let n = q.columns.len();
        let noise: f64 = rng.random_range(0.05..0.35);
        let mut random: Vec<f64> = (0..n)
            .map(|_| -rng.random::<f64>().max(1e-12).ln())
            .collect();
        let total: f64 = random.iter().sum();
        random.iter_mut().for_each(|r| *r /= total);
        let answer = truth[q.number as usize - 1];
        let parent = q.parent.map(|p| out[p]).unwrap_or(1.0);
        for (k, col) in q.columns.clone().enumerate() {
            let p = (1.0 - noise) * if k == answer { 1.0 } else { 0.0 } + noise * random[k];
            out[col] = p * parent;
        }
    }
    out
}

/// An RGB float image being rendered.
struct Canvas {
    px: Vec<[f32; 3]>,
}

impl Canvas {
    fn new() -> Self {
        Canvas {
            px: vec![[0.0; 3]; SIZE * SIZE],
        }
    }

    /// Add `f(u, v, x, y)` × colour over a square region around (cx, cy), `u`/`v` rotated by `theta`.
    fn add(
        &mut self,
        cx: f64,
        cy: f64,
        theta: f64,
        radius: f64,
        color: [f32; 3],
        f: impl Fn(f64, f64) -> f64,
    ) {
        let (s, c) = theta.sin_cos();
        let x0 = ((cx - radius).floor().max(0.0)) as usize;
        let x1 = ((cx + radius).ceil().min(SIZE as f64 - 1.0)) as usize;
        let y0 = ((cy - radius).floor().max(0.0)) as usize;
        let y1 = ((cy + radius).ceil().min(SIZE as f64 - 1.0)) as usize;
        for y in y0..=y1 {
            for x in x0..=x1 {
                let dx = x as f64 - cx;
                let dy = y as f64 - cy;
                let u = dx * c + dy * s;
                let v = -dx * s + dy * c;
                let i = f(u, v) as f32;
                if i > 0.01 {
                    let p = &mut self.px[y * SIZE + x];
                    for k in 0..3 {
                        p[k] += i * color[k];
                    }
                }
            }
        }
    }

    fn multiply(&mut self, cx: f64, cy: f64, theta: f64, f: impl Fn(f64, f64) -> f64) {
        let (s, c) = theta.sin_cos();
        for y in 0..SIZE {
            for x in 0..SIZE {
                let dx = x as f64 - cx;
                let dy = y as f64 - cy;
                let m = f(dx * c + dy * s, -dx * s + dy * c) as f32;
                for k in 0..3 {
                    self.px[y * SIZE + x][k] *= m;
                }
            }
        }
    }
}

const YELLOW: [f32; 3] = [1.0, 0.86, 0.68];
const BLUE: [f32; 3] = [0.75, 0.85, 1.0];
const WHITE: [f32; 3] = [1.0, 1.0, 1.0];

/// Render a galaxy to 424×424 RGB bytes.
/// Where and how big a galaxy is drawn: centre, angle, scale, peak brightness, reach.
#[derive(Clone, Copy)]
struct Pose {
    cx: f64,
    cy: f64,
    theta: f64,
    scale: f64,
    bright: f64,
    reach: f64,
}

pub fn render(g: &Galaxy, rng: &mut impl Rng) -> Vec<u8> {
    let mut canvas = Canvas::new();
    let cx = SIZE as f64 / 2.0 + rng.random_range(-8.0..8.0);
    let cy = SIZE as f64 / 2.0 + rng.random_range(-8.0..8.0);
    let theta = rng.random_range(0.0..PI);
    let scale: f64 = rng.random_range(18.0..40.0);
    let bright: f64 = rng.random_range(140.0..240.0);
    let pose = Pose {
        cx,
        cy,
        theta,
        scale,
        bright,
        reach: scale * 7.0,
    };
    draw_morphology(&mut canvas, &g.morphology, pose, rng);
    if let Some(odd) = g.odd {
        draw_odd(&mut canvas, odd, pose, rng);
    }
    // A few field stars.
    for _ in 0..rng.random_range(0..5) {
        let (sx, sy) = (
            rng.random_range(0.0..SIZE as f64),
            rng.random_range(0.0..SIZE as f64),
        );
        let b = rng.random_range(40.0..255.0);
        let w = rng.random_range(0.8..1.8);
        canvas.add(sx, sy, 0.0, 6.0 * w, WHITE, move |u, v| {
            b * (-(u * u + v * v) / (2.0 * w * w)).exp()
        });
    }
    // Sky background and noise.
    let sky: f32 = rng.random_range(1.0..6.0);
    let mut bytes = Vec::with_capacity(SIZE * SIZE * 3);
    for p in &canvas.px {
        let n = gaussian(rng) as f32 * 1.5;
        for c in p {
            bytes.push((c + sky + n + 0.7 * gaussian(rng) as f32).clamp(0.0, 255.0) as u8);
        }
    }
    bytes
}

/// The galaxy itself: a smooth profile, an edge-on disk, a face-on disk (bar, arms, bulge), or a
/// star.
fn draw_morphology(canvas: &mut Canvas, morphology: &Morphology, pose: Pose, rng: &mut impl Rng) {
    let Pose {
        cx,
        cy,
        theta,
        scale,
        bright,
        reach,
    } = pose;
    match morphology {
        Morphology::Smooth { axis_ratio } => {
            let q = *axis_ratio;
            canvas.add(cx, cy, theta, reach, YELLOW, |u, v| {
                bright * (-((u * u + (v / q).powi(2)).sqrt() / (0.55 * scale)).powf(0.8)).exp()
            });
        }
        Morphology::EdgeOn { bulge } => {
            let len = scale * 1.6;
            canvas.add(cx, cy, theta, reach, BLUE, |u, v| {
                0.8 * bright * (-u.abs() / len - v.abs() / (0.07 * len)).exp()
            });
            match bulge {
                0 => canvas.add(cx, cy, theta, reach, YELLOW, |u, v| {
                    bright * (-(u * u + v * v).sqrt() / (0.22 * len)).exp()
                }),
                1 => canvas.add(cx, cy, theta, reach, YELLOW, |u, v| {
                    bright * (-(u.abs().max(v.abs() * 1.1)) / (0.2 * len)).exp()
                }),
                _ => {}
            }
        }
        Morphology::FaceOn {
            bar,
            arms,
            bulge,
            inclination,
        } => {
            let h = scale * 1.1;
            let q = *inclination;
            let disk = move |u: f64, v: f64| {
                let r = (u * u + (v / q).powi(2)).sqrt();
                (r, (v / q).atan2(u))
            };
            match arms {
                Some((winding, count)) => {
                    let m = [1.0, 2.0, 3.0, 4.0, 6.0][*count];
                    let pitch: f64 = [12f64, 22.0, 38.0][*winding].to_radians();
                    canvas.add(cx, cy, theta, reach, BLUE, move |u, v| {
                        let (r, phi) = disk(u, v);
                        let arm = (m * (phi - (r.max(1.0) / h).ln() / pitch.tan()))
                            .cos()
                            .max(0.0)
                            .powi(3);
                        0.55 * bright * (-r / h).exp() * (0.25 + 1.6 * arm)
                    });
                }
                None => canvas.add(cx, cy, theta, reach, BLUE, move |u, v| {
                    0.55 * bright * (-disk(u, v).0 / h).exp()
                }),
            }
            if *bar {
                let bl = 1.3 * h;
                canvas.add(cx, cy, theta + 0.7, reach, YELLOW, move |u, v| {
                    0.6 * bright
                        * (-((u / bl).powi(2) + (v / (0.22 * bl)).powi(2)).sqrt() * 2.5).exp()
                });
            }
            let k = [0.0, 0.45, 0.9, 1.6][*bulge];
            if k > 0.0 {
                canvas.add(cx, cy, theta, reach, YELLOW, move |u, v| {
                    k * bright * (-disk(u, v).0 / (0.25 * h)).exp()
                });
            }
        }
        Morphology::Star => {
            if rng.random_bool(0.7) {
                let w = rng.random_range(1.2..2.5);
                canvas.add(cx, cy, 0.0, reach, WHITE, |u, v| {
                    1.3 * bright * (-(u * u + v * v) / (2.0 * w * w)).exp()
                });
                canvas.add(cx, cy, 0.0, reach, WHITE, |u, v| {
                    0.5 * bright
                        * ((-u.abs() / 1.0).exp() * (-v.abs() / 30.0).exp()
                            + (-v.abs() / 1.0).exp() * (-u.abs() / 30.0).exp())
                });
            } else {
                canvas.add(cx, cy, theta, SIZE as f64, WHITE, |_, v| {
                    0.6 * bright * (-v.abs() / 1.5).exp()
                });
            }
        }
    }
}

/// The "odd feature" of question 8: ring, lens/arc, disturbed, irregular, other, merger, dust lane.
fn draw_odd(canvas: &mut Canvas, odd: usize, pose: Pose, rng: &mut impl Rng) {
    let Pose {
        cx,
        cy,
        theta,
        scale,
        bright,
        reach,
    } = pose;
    let s = scale;
    match odd {
        0 => canvas.add(cx, cy, theta, reach, BLUE, |u, v| {
            0.45 * bright * (-(((u * u + v * v).sqrt() - 2.2 * s) / (0.18 * s)).powi(2)).exp()
        }),
        1 => canvas.add(cx, cy, theta, reach, BLUE, |u, v| {
            let r = (u * u + v * v).sqrt();
            let on_arc = v.atan2(u).abs() < 0.9;
            if on_arc {
                0.5 * bright * (-((r - 3.0 * s) / (0.12 * s)).powi(2)).exp()
            } else {
                0.0
            }
        }),
        2 => canvas.add(cx + 1.2 * s, cy - 0.6 * s, theta, reach, BLUE, |u, v| {
            0.35 * bright * (-((u / 2.0).powi(2) + v * v).sqrt() / (0.6 * s)).exp()
        }),
        3 => {
            for _ in 0..5 {
                let (bx, by) = (
                    cx + rng.random_range(-2.0..2.0) * s,
                    cy + rng.random_range(-2.0..2.0) * s,
                );
                let w = rng.random_range(0.2..0.5) * s;
                canvas.add(bx, by, 0.0, 5.0 * w, BLUE, move |u, v| {
                    0.4 * bright * (-(u * u + v * v) / (2.0 * w * w)).exp()
                });
            }
        }
        4 => canvas.add(cx, cy, theta, reach, WHITE, |u, v| {
            0.12 * bright * (-(u * u + v * v).sqrt() / (2.5 * s)).exp()
        }),
        5 => {
            let (ox, oy) = (cx + 2.2 * s * theta.cos(), cy + 2.2 * s * theta.sin());
            canvas.add(ox, oy, theta * 2.0, reach, YELLOW, |u, v| {
                0.8 * bright * (-(u * u + (v / 0.7).powi(2)).sqrt() / (0.45 * s)).exp()
            });
        }
        _ => canvas.multiply(cx, cy, theta, |_, v| {
            1.0 - 0.75 * (-(v / (0.09 * s)).powi(2)).exp()
        }),
    }
}

fn gaussian(rng: &mut impl Rng) -> f64 {
    // Box–Muller; one value per call is plenty here.
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

fn rng_for(seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&stream.to_le_bytes());
    h.update(&index.to_le_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

fn write_jpeg(path: &Path, rgb: &[u8]) -> Result<(), SynthError> {
    let file = std::fs::File::create(path).map_err(IoError::at("creating", path))?;
    let mut writer = std::io::BufWriter::new(file);
    JpegEncoder::new_with_quality(&mut writer, 90)
        .encode(
            rgb,
            SIZE as u32,
            SIZE as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| SynthError::Encode {
            path: path.into(),
            source: e,
        })?;
    writer.flush().map_err(IoError::at("writing", path))?;
    Ok(())
}

/// First GalaxyID of the training and test images.
pub const TRAIN_ID0: u64 = 100_000;
pub const TEST_ID0: u64 = 600_000;

/// Write the data set; calls `tick` after each image.
pub fn generate(opts: &SynthOptions, tick: &(dyn Fn() + Sync)) -> Result<(), SynthError> {
    let train_dir = opts.out.join("images_training_rev1");
    let test_dir = opts.out.join("images_test_rev1");
    for d in [&train_dir, &test_dir] {
        std::fs::create_dir_all(d).map_err(IoError::at("creating", d.clone()))?;
    }
    let rows: Vec<String> = (0..opts.count as u64)
        .into_par_iter()
        .map(|i| {
            let mut rng = rng_for(opts.seed, 0, i);
            let g = random_galaxy(&mut rng);
            let labels = labels(&g, &mut rng);
            let id = TRAIN_ID0 + i;
            write_jpeg(&train_dir.join(format!("{id}.jpg")), &render(&g, &mut rng))?;
            tick();
            let mut row = id.to_string();
            for v in labels {
                row.push(',');
                row.push_str(&format!("{v:.9}"));
            }
            Ok(row)
        })
        .collect::<Result<_, SynthError>>()?;
    (0..opts.test_count as u64)
        .into_par_iter()
        .try_for_each(|i| {
            let mut rng = rng_for(opts.seed, 1, i);
            let g = random_galaxy(&mut rng);
            write_jpeg(
                &test_dir.join(format!("{}.jpg", TEST_ID0 + i)),
                &render(&g, &mut rng),
            )?;
            tick();
            Ok::<(), SynthError>(())
        })?;
    let csv_path = opts.out.join("training_solutions_rev1.csv");
    let mut csv = format!("GalaxyID,{}\n", CLASS_NAMES.join(","));
    for r in rows {
        csv.push_str(&r);
        csv.push('\n');
    }
    let written = crate::cache::write_atomic(&csv_path, csv.as_bytes());
    written.map_err(IoError::at("writing", csv_path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::tree_deviation;

    #[test]
    fn labels_obey_the_decision_tree_exactly() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..2_000 {
            let g = random_galaxy(&mut rng);
            let l = labels(&g, &mut rng);
            let as_f32: Vec<f32> = l.iter().map(|v| *v as f32).collect();
            assert!(tree_deviation(&as_f32) < 1e-5, "{g:?}: {l:?}");
            assert!(l.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn the_true_answer_dominates_each_question() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let g = Galaxy {
            morphology: Morphology::Smooth { axis_ratio: 0.3 },
            odd: None,
        };
        let l = labels(&g, &mut rng);
        assert!(l[0] > l[1] && l[0] > l[2], "smooth wins Q1");
        assert!(l[17] > l[15] && l[17] > l[16], "cigar-shaped wins Q7");
        assert!(l[14] > l[13], "no odd feature wins Q6");
    }

    #[test]
    fn rendering_is_deterministic_and_bright_in_the_middle() {
        let g = Galaxy {
            morphology: Morphology::Smooth { axis_ratio: 0.9 },
            odd: None,
        };
        let a = render(&g, &mut rng_for(3, 0, 0));
        let b = render(&g, &mut rng_for(3, 0, 0));
        assert_eq!(a, b);
        let at = |x: usize, y: usize| a[(y * SIZE + x) * 3] as u32;
        assert!(at(212, 212) > 100, "centre is bright");
        assert!(at(5, 5) < 40, "corner is sky");
    }
}
