//! The region of interest: threshold the luma, label 8-connected components by runs, keep the
//! one with the largest bounding box.

use super::raster::{Raster, View};

/// An axis-aligned box: top-left corner and size, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxPx {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// The bounding box of the 8-connected component of `luma > threshold` whose bounding box is
/// largest (the seed's "external contours, largest bounding rectangle"); None if nothing is
/// above the threshold.
pub fn roi_box<R: Raster>(img: &R, threshold: u8) -> Option<BoxPx> {
    let View { width, height, .. } = img.view();
    let mut bits = vec![0u64; width.div_ceil(64)];
    let mut labels = Labelling::new(width);
    for y in 0..height {
        img.bright_bits(y, threshold, &mut bits);
        labels.add_row(y as u16, &bits);
    }
    labels.largest_box()
}

/// Run-length connected-component labelling: each row's runs of foreground pixels are joined
/// to the runs of the previous row they touch (8-connectivity: overlapping once widened by one
/// pixel) in a union–find whose roots carry their set's bounding box. Much cheaper than a
/// per-pixel flood fill, and the noisy skies of the survey have thousands of tiny runs.
struct Labelling {
    width: usize,
    /// Union–find over sets, numbered in raster order of their first run.
    sets: Vec<Set>,
    /// The previous and the current row's runs: (first x, last x, set).
    prev: Vec<(u16, u16, u32)>,
    cur: Vec<(u16, u16, u32)>,
    /// Scratch: the current row's run starts and ends (`width` + 4 long, see `run_bounds`).
    starts: Vec<u16>,
    ends: Vec<u16>,
}

#[derive(Clone, Copy)]
struct Set {
    parent: u32,
    x0: u16,
    y0: u16,
    x1: u16,
    y1: u16,
}

/// The root of set `i` (halving the path on the way).
fn find(sets: &mut [Set], mut i: u32) -> u32 {
    while sets[i as usize].parent != i {
        let grand = sets[sets[i as usize].parent as usize].parent;
        sets[i as usize].parent = grand;
        i = grand;
    }
    i
}

/// Merge the sets rooted at `a` and `b`; the one created first stays the root (keeps ties in
/// raster order). Returns the root.
fn union(sets: &mut [Set], a: u32, b: u32) -> u32 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let h = sets[hi as usize];
    let l = &mut sets[lo as usize];
    (l.x0, l.y0, l.x1, l.y1) = (
        l.x0.min(h.x0),
        l.y0.min(h.y0),
        l.x1.max(h.x1),
        l.y1.max(h.y1),
    );
    sets[hi as usize].parent = lo;
    lo
}

/// The first and the last x of every run of set bits in `bits` (x < `width`): fills the front
/// of `starts` and `ends` (each at least `width` + 4 long) and returns how many runs.
fn run_bounds(bits: &[u64], width: usize, starts: &mut [u16], ends: &mut [u16]) -> usize {
    let (mut n_first, mut n_last) = (0, 0);
    let mut carry = 0u64; // the previous word's top bit
    for (i, &word) in bits.iter().enumerate() {
        let valid = if (i + 1) * 64 <= width {
            !0
        } else {
            (1u64 << (width - i * 64)) - 1
        };
        let b = word & valid;
        let next_low = bits.get(i + 1).map_or(0, |n| n & 1) & (valid >> 63);
        let base = (i * 64) as u16;
        unpack_positions(b & !(b << 1 | carry), base, starts, &mut n_first);
        unpack_positions(b & !(b >> 1 | next_low << 63), base, ends, &mut n_last);
        carry = b >> 63;
    }
    debug_assert_eq!(n_first, n_last);
    n_first
}

/// Writes `base` + the position of each set bit of `word` at `out[*n..]` and advances `*n`.
/// Four positions are written per step whatever the count (the extra ones are overwritten
/// later), so the loop almost always runs once: a noisy row has one or two runs per word, and
/// a data-dependent loop exit per word would cost a branch misprediction each time.
#[inline]
fn unpack_positions(mut word: u64, base: u16, out: &mut [u16], n: &mut usize) {
    let end = *n + word.count_ones() as usize;
    let mut k = *n;
    while k < end {
        for slot in &mut out[k..k + 4] {
            *slot = base.wrapping_add(word.trailing_zeros() as u16);
            word &= word.wrapping_sub(1);
        }
        k += 4;
    }
    *n = end;
}

impl Labelling {
    /// Sized for a noisy sky (~5,000 runs per 424×424 image) so the vectors rarely grow.
    fn new(width: usize) -> Self {
        Labelling {
            width,
            sets: Vec::with_capacity(8192),
            prev: Vec::with_capacity(width / 2 + 1),
            cur: Vec::with_capacity(width / 2 + 1),
            starts: vec![0; width + 4],
            ends: vec![0; width + 4],
        }
    }

    fn add_row(&mut self, y: u16, bits: &[u64]) {
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.cur.clear();
        let runs = run_bounds(bits, self.width, &mut self.starts, &mut self.ends);
        let (prev, sets) = (&self.prev, &mut self.sets);
        let mut j = 0; // first run of the previous row that may touch the current run
        for (&x0, &x1) in self.starts[..runs].iter().zip(&self.ends[..runs]) {
            while j < prev.len() && prev[j].1 + 1 < x0 {
                j += 1;
            }
            let mut root: Option<u32> = None;
            let mut k = j;
            while k < prev.len() && prev[k].0 <= x1 + 1 {
                let r = find(sets, prev[k].2);
                root = Some(match root {
                    Some(a) if a != r => union(sets, a, r),
                    _ => r,
                });
                k += 1;
            }
            let set = match root {
                Some(r) => {
                    let s = &mut sets[r as usize];
                    (s.x0, s.x1, s.y1) = (s.x0.min(x0), s.x1.max(x1), y);
                    r
                }
                None => {
                    let id = sets.len() as u32;
                    sets.push(Set {
                        parent: id,
                        x0,
                        y0: y,
                        x1,
                        y1: y,
                    });
                    id
                }
            };
            self.cur.push((x0, x1, set));
        }
    }

    /// The largest bounding box of any set (ties: the set seen first).
    fn largest_box(&self) -> Option<BoxPx> {
        let mut best: Option<(usize, BoxPx)> = None;
        for (i, s) in self.sets.iter().enumerate() {
            if s.parent as usize != i {
                continue;
            }
            let b = BoxPx {
                x: s.x0 as usize,
                y: s.y0 as usize,
                w: (s.x1 - s.x0) as usize + 1,
                h: (s.y1 - s.y0) as usize + 1,
            };
            let area = b.w * b.h;
            if best.as_ref().is_none_or(|(a, _)| area > *a) {
                best = Some((area, b));
            }
        }
        best.map(|(_, b)| b)
    }
}
