//! Image kernels: decode, region of interest, crop, area-averaging resize. Pure functions.
//!
//! - [`decode`]: JPEG → RGB or the file's own YCbCr (zune-jpeg)
//! - [`raster`]: the three-channel views the kernels read; the SSE2 luma threshold
//! - [`roi`]: connected components of the thresholded luma, the largest bounding box
//! - [`resize`]: the crop square and the area-averaging resize

pub mod decode;
pub mod raster;
pub mod resize;
pub mod roi;

pub use decode::*;
pub use raster::*;
pub use resize::*;
pub use roi::*;

#[cfg(test)]
mod tests {
    use super::raster::{y_bits, y_bits_scalar};
    use super::*;

    /// A black image with a bright filled ellipse centred at (cx, cy) with semi-axes (a, b).
    fn ellipse(w: usize, h: usize, cx: f64, cy: f64, a: f64, b: f64) -> Rgb {
        let mut data = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = ((x as f64 - cx) / a, (y as f64 - cy) / b);
                if dx * dx + dy * dy <= 1.0 {
                    data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[200, 180, 160]);
                }
            }
        }
        Rgb {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn truncated_and_non_jpeg_bytes_are_rejected() {
        let img = ellipse(424, 424, 200.0, 200.0, 30.0, 30.0);
        let mut jpeg = Vec::new();
        image::RgbImage::from_raw(424, 424, img.data.clone())
            .unwrap()
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        assert!(decode_jpeg_bytes(&jpeg, Some((424, 424))).is_ok());
        let cut = &jpeg[..jpeg.len() / 2];
        assert!(
            decode_jpeg_bytes(cut, Some((424, 424)))
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        assert!(decode_jpeg_bytes(b"hello", None).is_err());
        assert!(
            decode_jpeg_bytes(&jpeg, Some((100, 100)))
                .unwrap_err()
                .to_string()
                .contains("expected 100")
        );
    }

    #[test]
    fn roi_finds_the_ellipse_box() {
        let img = ellipse(424, 424, 200.0, 220.0, 40.0, 20.0);
        let b = roi_box(&img, 10).unwrap();
        assert_eq!((b.x, b.y, b.w, b.h), (160, 200, 81, 41));
    }

    /// Luma as OpenCV's RGB→gray: 0.299 R + 0.587 G + 0.114 B (fixed point, rounded).
    #[inline]
    fn luma(p: &[u8]) -> u8 {
        ((p[0] as u32 * 4899 + p[1] as u32 * 9617 + p[2] as u32 * 1868 + 8192) >> 14) as u8
    }

    /// The straightforward flood fill the run-based labelling replaced, as a reference.
    fn roi_reference(img: &Rgb, threshold: u8) -> Option<BoxPx> {
        let (w, h) = (img.width, img.height);
        let mask: Vec<bool> = img
            .data
            .chunks_exact(3)
            .map(|p| luma(p) > threshold)
            .collect();
        let mut seen = vec![false; w * h];
        let mut best: Option<(usize, BoxPx)> = None;
        for start in 0..w * h {
            if !mask[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            let mut stack = vec![start];
            let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
            while let Some(i) = stack.pop() {
                let (x, y) = (i % w, i / w);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                for (dx, dy) in [
                    (-1i64, -1i64),
                    (0, -1),
                    (1, -1),
                    (-1, 0),
                    (1, 0),
                    (-1, 1),
                    (0, 1),
                    (1, 1),
                ] {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx >= 0 && ny >= 0 && nx < w as i64 && ny < h as i64 {
                        let j = ny as usize * w + nx as usize;
                        if mask[j] && !seen[j] {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
            let b = BoxPx {
                x: x0,
                y: y0,
                w: x1 - x0 + 1,
                h: y1 - y0 + 1,
            };
            if best.as_ref().is_none_or(|(a, _)| b.w * b.h > *a) {
                best = Some((b.w * b.h, b));
            }
        }
        best.map(|(_, b)| b)
    }

    #[test]
    fn run_labelling_matches_a_flood_fill_on_random_masks() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for case in 0..300 {
            // Up to 200 wide: runs cross the 64-pixel words of the row masks.
            let (w, h) = (rng.random_range(1..200), rng.random_range(1..40));
            let density = rng.random_range(0.05..0.7);
            let data: Vec<u8> = (0..w * h)
                .flat_map(|_| {
                    if rng.random_bool(density) {
                        [200u8; 3]
                    } else {
                        [0u8; 3]
                    }
                })
                .collect();
            let img = Rgb {
                width: w,
                height: h,
                data,
            };
            assert_eq!(
                roi_box(&img, 10),
                roi_reference(&img, 10),
                "case {case}: {w}×{h}"
            );
        }
    }

    #[test]
    fn luma_threshold_on_ycbcr_matches_the_scalar_rule() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for case in 0..500 {
            let w: usize = rng.random_range(1..300);
            let t: u8 = rng.random();
            let row: Vec<u8> = (0..w * 3)
                .map(|_| t.saturating_add(rng.random_range(0..3)).saturating_sub(1))
                .collect();
            let (mut fast, mut slow) = (vec![!0u64; w.div_ceil(64)], vec![0u64; w.div_ceil(64)]);
            y_bits(&row, t, &mut fast);
            y_bits_scalar(&row, t, &mut slow);
            assert_eq!(fast, slow, "case {case}: width {w}, threshold {t}");
        }
    }

    /// The ellipse image written as a (YCbCr) JPEG and decoded both ways.
    fn ellipse_jpeg_both_ways() -> (YCbCr, Rgb) {
        let img = ellipse(424, 424, 200.0, 230.0, 60.0, 35.0);
        let mut jpeg = Vec::new();
        image::RgbImage::from_raw(424, 424, img.data)
            .unwrap()
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jpg");
        std::fs::write(&path, &jpeg).unwrap();
        let Decoded::YCbCr(ycc) = decode_jpeg_native(&path, Some((424, 424))).unwrap() else {
            panic!("a colour JPEG decodes to YCbCr")
        };
        (ycc, decode_jpeg(&path, Some((424, 424))).unwrap())
    }

    #[test]
    fn ycbcr_crop_matches_the_rgb_crop() {
        let (ycc, rgb) = ellipse_jpeg_both_ways();
        let b = roi_box(&ycc, 10).unwrap();
        assert_eq!(
            Some(b),
            roi_box(&rgb, 10),
            "same box from Y as from RGB luma"
        );
        let (sq, _) = square_around(Some(b), 0.2, 424, 424, false);
        let (a, c) = (crop_resize(&ycc, sq, 64), crop_resize(&rgb, sq, 64));
        let diffs: Vec<i32> = a
            .iter()
            .zip(&c)
            .map(|(x, y)| (*x as i32 - *y as i32).abs())
            .collect();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        assert!(mean < 0.5, "mean difference {mean}");
        // Larger differences only where the RGB path clamped out-of-gamut pixels (JPEG ringing
        // at the sharp edge) before averaging; the YCbCr path clamps once, after.
        let close = diffs.iter().filter(|&&d| d <= 2).count() as f64 / diffs.len() as f64;
        assert!(close > 0.99, "{close} of bytes within 2");
        assert!(
            diffs.iter().all(|&d| d <= 8),
            "max difference {:?}",
            diffs.iter().max()
        );
    }

    #[test]
    fn roi_prefers_the_largest_box_over_small_stars() {
        let mut img = ellipse(424, 424, 212.0, 212.0, 30.0, 30.0);
        for (x, y) in [(10usize, 10usize), (400, 30)] {
            img.data[(y * 424 + x) * 3] = 255;
        }
        let b = roi_box(&img, 10).unwrap();
        assert_eq!((b.x, b.y, b.w, b.h), (182, 182, 61, 61));
    }

    #[test]
    fn padded_square_is_centred_on_the_box() {
        let b = BoxPx {
            x: 160,
            y: 200,
            w: 81,
            h: 41,
        };
        let (sq, how) = square_around(Some(b), 0.2, 424, 424, false);
        assert_eq!(how, Placement::Roi);
        assert_eq!(sq.w, 81 + 2 * 16);
        assert_eq!(
            (2 * sq.x + sq.w, 2 * sq.y + sq.h),
            (2 * 160 + 81, 2 * 200 + 41),
            "same centre"
        );
    }

    #[test]
    fn square_leaving_the_frame_falls_back_or_clamps() {
        let b = BoxPx {
            x: 0,
            y: 100,
            w: 100,
            h: 100,
        };
        assert_eq!(
            square_around(Some(b), 0.2, 424, 424, false).1,
            Placement::Whole
        );
        let (sq, how) = square_around(Some(b), 0.2, 424, 424, true);
        assert_eq!(how, Placement::Clamped);
        assert_eq!((sq.x, sq.w), (0, 140));
        assert_eq!(square_around(None, 0.2, 424, 424, true).1, Placement::Whole);
    }

    #[test]
    fn area_resize_averages_blocks() {
        // 4×4 → 2×2: each output pixel is the mean of a 2×2 block.
        let data: Vec<u8> = (0..16u8).flat_map(|v| [v * 10, 0, 255]).collect();
        let img = Rgb {
            width: 4,
            height: 4,
            data,
        };
        let out = crop_resize(
            &img,
            BoxPx {
                x: 0,
                y: 0,
                w: 4,
                h: 4,
            },
            2,
        );
        // block (0,0): values 0,10,40,50 → 25
        assert_eq!(out[0], 25);
        assert_eq!(out[2], 255);
        // block (1,1): 100,110,140,150 → 125
        assert_eq!(out[(3) * 3], 125);
    }

    #[test]
    fn area_resize_handles_fractional_ratios() {
        let img = Rgb {
            width: 3,
            height: 3,
            data: vec![90; 27],
        };
        let out = crop_resize(
            &img,
            BoxPx {
                x: 0,
                y: 0,
                w: 3,
                h: 3,
            },
            2,
        );
        assert!(
            out.iter().all(|&v| v == 90),
            "a flat image stays flat: {out:?}"
        );
    }

    #[test]
    fn ellipse_crop_keeps_the_galaxy_centred() {
        let img = ellipse(424, 424, 150.0, 260.0, 30.0, 30.0);
        let b = roi_box(&img, 10).unwrap();
        let (sq, _) = square_around(Some(b), 0.2, 424, 424, false);
        let crop = crop_resize(&img, sq, 64);
        let at = |x: usize, y: usize| crop[(y * 64 + x) * 3];
        assert!(at(32, 32) > 150, "centre of the crop is the galaxy");
        assert_eq!(at(0, 0), 0, "corner is background");
    }
}
