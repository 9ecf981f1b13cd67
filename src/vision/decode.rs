//! Decoding JPEGs with zune-jpeg: RGB, or the file's own YCbCr for the crop kernels.

use std::path::Path;

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

/// An 8-bit RGB image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// A JPEG's own full-range (JFIF) luma and chroma, interleaved Y, Cb, Cr, row-major: what the
/// decoder has before its colour conversion. Y is the image's luma (0.299 R + 0.587 G + 0.114 B).
#[derive(Debug, Clone, PartialEq)]
pub struct YCbCr {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// A decoded JPEG as the crop kernels read it: YCbCr when the file is YCbCr (nearly every
/// JPEG), RGB otherwise (grayscale, CMYK, Adobe RGB).
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    YCbCr(YCbCr),
    Rgb(Rgb),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a decodable JPEG: {0}")]
    Decode(String),
    #[error("is {0}×{1}, expected {2}×{3}")]
    WrongSize(usize, usize, usize, usize),
}

/// Decode a JPEG (grayscale and CMYK are converted to RGB) and check its size.
pub fn decode_jpeg(path: &Path, expect: Option<(usize, usize)>) -> Result<Rgb, DecodeError> {
    let bytes = std::fs::read(path)?;
    decode_jpeg_bytes(&bytes, expect)
}

pub fn decode_jpeg_bytes(bytes: &[u8], expect: Option<(usize, usize)>) -> Result<Rgb, DecodeError> {
    let (width, height, data) = decode_as(bytes, expect, |_| ColorSpace::RGB)?;
    Ok(Rgb {
        width,
        height,
        data,
    })
}

/// Decode a JPEG for cropping: its YCbCr samples without colour conversion when it has them
/// (the crop converts only its 64×64 result), else RGB.
pub fn decode_jpeg_native(
    path: &Path,
    expect: Option<(usize, usize)>,
) -> Result<Decoded, DecodeError> {
    let bytes = std::fs::read(path)?;
    let mut native = false;
    let (width, height, data) = decode_as(&bytes, expect, |input| {
        native = input == ColorSpace::YCbCr;
        if native { input } else { ColorSpace::RGB }
    })?;
    Ok(if native {
        Decoded::YCbCr(YCbCr {
            width,
            height,
            data,
        })
    } else {
        Decoded::Rgb(Rgb {
            width,
            height,
            data,
        })
    })
}

/// Decode with zune-jpeg into the colour space `out` picks from the file's own.
fn decode_as(
    bytes: &[u8],
    expect: Option<(usize, usize)>,
    out: impl FnOnce(ColorSpace) -> ColorSpace,
) -> Result<(usize, usize, Vec<u8>), DecodeError> {
    // The decoder pads a truncated scan with grey instead of failing; a complete JPEG ends with
    // the end-of-image marker (allowing a little trailing padding).
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    if bytes.len() >= 4 && bytes[..2] == [0xFF, 0xD8] && !tail.windows(2).any(|w| w == [0xFF, 0xD9])
    {
        return Err(DecodeError::Decode(
            "truncated JPEG (no end-of-image marker)".into(),
        ));
    }
    let bad = |e: zune_jpeg::errors::DecodeErrors| DecodeError::Decode(e.to_string());
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(bad)?;
    let (w, h) = decoder.dimensions().expect("headers were decoded");
    if let Some((ew, eh)) = expect
        && (w, h) != (ew, eh)
    {
        return Err(DecodeError::WrongSize(w, h, ew, eh));
    }
    let input = decoder.input_colorspace().expect("headers were decoded");
    decoder.set_options(options.jpeg_set_out_colorspace(out(input)));
    let data = decoder.decode().map_err(bad)?;
    Ok((w, h, data))
}
