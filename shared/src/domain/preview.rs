//! Copy protection (G2): the only form in which others see a protected image is this preview:
//! reduced to [`PREVIEW_MAX_SIDE`], darkened under a tiled "PREVIEW" watermark drawn across the
//! whole picture (so it cannot be cropped away), re-encoded as a JPEG without metadata.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{ImageReader, Limits, Rgb, RgbImage};

/// The longest side of a preview, in pixels.
pub const PREVIEW_MAX_SIDE: u32 = 512;
const JPEG_QUALITY: u8 = 70;

/// 5x7 glyphs of the watermark's letters, one row a byte (low 5 bits, left to right).
fn glyph(c: char) -> [u8; 7] {
    match c {
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        _ => [0; 7],
    }
}

const MARK: &str = "PREVIEW";

/// Whether pixel (x, y) of the preview lies on a watermark letter: the word tiled in rows that
/// shift with each row, at `scale` pixels per font pixel.
fn on_mark(x: u32, y: u32, scale: u32) -> bool {
    let cell_w = 6 * scale; // 5 columns and a gap
    let word_w = cell_w * MARK.len() as u32 + 4 * scale;
    let row_h = 12 * scale;
    let row = y / row_h;
    let y_in = (y % row_h) / scale;
    if y_in >= 7 {
        return false;
    }
    // Each row shifts by a third of a word: a diagonal pattern.
    let shifted = x + row * (word_w / 3);
    let in_word = shifted % word_w;
    let letter = (in_word / cell_w) as usize;
    let col = (in_word % cell_w) / scale;
    if letter >= MARK.len() || col >= 5 {
        return false;
    }
    let c = MARK.as_bytes()[letter] as char;
    glyph(c)[y_in as usize] & (0x10 >> col) != 0
}

/// A preview of `original` (an image this service generated): its bytes and dimensions.
pub fn render(original: &[u8]) -> anyhow::Result<(Vec<u8>, u32, u32)> {
    let mut reader = ImageReader::new(Cursor::new(original)).with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(super::upload::MAX_SIDE);
    limits.max_image_height = Some(super::upload::MAX_SIDE);
    reader.limits(limits);
    let img = reader.decode()?;
    let small = img
        .resize(
            PREVIEW_MAX_SIDE,
            PREVIEW_MAX_SIDE,
            image::imageops::FilterType::Triangle,
        )
        .to_rgb8();
    let (w, h) = small.dimensions();
    let scale = (w.min(h) / 96).max(2);
    let marked = RgbImage::from_fn(w, h, |x, y| {
        let p = small.get_pixel(x, y).0;
        if on_mark(x, y, scale) {
            // Light letters, half opaque.
            Rgb(p.map(|c| ((u16::from(c) + 255 * 3) / 4) as u8))
        } else {
            // Everything else slightly dimmed, so the letters read on any picture.
            Rgb(p.map(|c| (u16::from(c) * 4 / 5) as u8))
        }
    });
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY).encode_image(&marked)?;
    Ok((out, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_is_smaller_marked_and_a_jpeg() {
        let img = RgbImage::from_pixel(1024, 768, Rgb([20, 120, 200]));
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let (jpeg, w, h) = render(&png).unwrap();
        assert_eq!((w, h), (512, 384));
        assert_eq!(
            image::guess_format(&jpeg).unwrap(),
            image::ImageFormat::Jpeg
        );
        let decoded = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        let light = decoded.pixels().filter(|p| p.0[0] > 120).count();
        assert!(light > 1000, "the watermark shows: {light} light pixels");
    }
}
