//! The embedded renderer: draws a real picture from the prompt and seed, so the product runs
//! with no account anywhere. Deterministic for (prompt, seed); each word of the prompt adds its
//! own shape and colour, so different prompts give visibly different images.

use async_trait::async_trait;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};
use sha2::{Digest, Sha256};

use super::{ImageProvider, ProviderError, ProviderRequest};
use crate::domain::generation::OutputFormat;

pub struct LocalRenderer;

/// SplitMix64: small, fast, and stable across platforms and releases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    match (i as i32).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

enum Shape {
    Disc,
    Ring,
    Rect,
    Stripe,
}

/// Renders image `index` of a request.
pub fn render(prompt: &str, seed: u64, index: u8, width: u32, height: u32) -> RgbImage {
    let mut rng = Rng(hash64(&[prompt.as_bytes(), &seed.to_be_bytes(), &[index]]));
    let base_hue = rng.unit();
    let top = hsv(base_hue, 0.55, 0.95);
    let bottom = hsv((base_hue + 0.35 + rng.unit() * 0.3) % 1.0, 0.7, 0.35);
    let mut img = RgbImage::from_fn(width, height, |x, y| {
        let t = (y as f32 / height as f32) * 0.8 + (x as f32 / width as f32) * 0.2;
        let c: Vec<u8> = (0..3)
            .map(|i| ((top[i] * (1.0 - t) + bottom[i] * t) * 255.0) as u8)
            .collect();
        Rgb([c[0], c[1], c[2]])
    });

    let words: Vec<&str> = prompt.split_whitespace().take(32).collect();
    let (w, h) = (width as f32, height as f32);
    for (i, word) in words.iter().enumerate() {
        let mut wr =
            Rng(hash64(&[word.to_lowercase().as_bytes(), &seed.to_be_bytes()]) ^ rng.next());
        let colour = hsv(wr.unit(), 0.6 + wr.unit() * 0.4, 0.5 + wr.unit() * 0.5);
        let shape = match wr.next() % 4 {
            0 => Shape::Disc,
            1 => Shape::Ring,
            2 => Shape::Rect,
            _ => Shape::Stripe,
        };
        let cx = wr.unit() * w;
        let cy = wr.unit() * h;
        let r = (0.05 + wr.unit() * 0.22) * w.min(h) * (1.0 - i as f32 / 48.0);
        let alpha = 0.45 + wr.unit() * 0.4;
        let angle = wr.unit() * std::f32::consts::PI;
        let (x0, x1, y0, y1) = match shape {
            Shape::Stripe => (0.0, w, 0.0, h),
            _ => (cx - r * 1.5, cx + r * 1.5, cy - r * 1.5, cy + r * 1.5),
        };
        let (sin, cos) = angle.sin_cos();
        for y in (y0.max(0.0) as u32)..(y1.min(h) as u32) {
            for x in (x0.max(0.0) as u32)..(x1.min(w) as u32) {
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let inside = match shape {
                    Shape::Disc => dx * dx + dy * dy <= r * r,
                    Shape::Ring => {
                        let d = (dx * dx + dy * dy).sqrt();
                        d <= r && d >= r * 0.7
                    }
                    Shape::Rect => {
                        let (u, v) = (dx * cos + dy * sin, -dx * sin + dy * cos);
                        u.abs() <= r && v.abs() <= r * 0.6
                    }
                    Shape::Stripe => (dx * cos + dy * sin).abs() <= r * 0.25,
                };
                if inside {
                    let p = img.get_pixel_mut(x, y);
                    for (channel, target) in p.0.iter_mut().zip(colour) {
                        *channel = (*channel as f32 * (1.0 - alpha) + target * 255.0 * alpha) as u8;
                    }
                }
            }
        }
    }
    img
}

/// How much of the references shows through the rendered picture.
pub const REFERENCE_WEIGHT: f32 = 0.45;

/// The references scaled to the output size and averaged: the layer a referenced generation is
/// blended with, so it visibly carries their colours and shapes.
fn reference_layer(
    references: &[Vec<u8>],
    width: u32,
    height: u32,
) -> Result<Option<RgbImage>, ProviderError> {
    if references.is_empty() {
        return Ok(None);
    }
    let mut sum = vec![0f32; (width * height * 3) as usize];
    for bytes in references {
        let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
            .map_err(|e| ProviderError::Permanent(format!("unreadable reference image: {e}")))?
            .resize_exact(width, height, image::imageops::FilterType::Triangle)
            .to_rgb8();
        for (acc, v) in sum.iter_mut().zip(img.as_raw()) {
            *acc += f32::from(*v);
        }
    }
    let n = references.len() as f32;
    let raw = sum.into_iter().map(|v| (v / n) as u8).collect();
    Ok(RgbImage::from_raw(width, height, raw))
}

fn mix(img: &mut RgbImage, layer: &RgbImage, weight: f32) {
    for (p, q) in img.pixels_mut().zip(layer.pixels()) {
        for (a, b) in p.0.iter_mut().zip(q.0) {
            *a = (f32::from(*a) * (1.0 - weight) + f32::from(b) * weight) as u8;
        }
    }
}

/// Encodes an RGB image in the requested format.
pub fn encode(img: &RgbImage, format: OutputFormat) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    let (w, h) = img.dimensions();
    match format {
        OutputFormat::Png => {
            PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
                .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)?
        }
        OutputFormat::Jpeg => JpegEncoder::new_with_quality(&mut out, 88).write_image(
            img.as_raw(),
            w,
            h,
            ExtendedColorType::Rgb8,
        )?,
        OutputFormat::Webp => WebPEncoder::new_lossless(&mut out).write_image(
            img.as_raw(),
            w,
            h,
            ExtendedColorType::Rgb8,
        )?,
    }
    Ok(out)
}

#[async_trait]
impl ImageProvider for LocalRenderer {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn generate(&self, req: &ProviderRequest<'_>) -> Result<Vec<Vec<u8>>, ProviderError> {
        let (width, height) = req.size.dimensions();
        let prompt = req.prompt.to_string();
        let (seed, n, format) = (req.seed, req.n, req.output_format);
        let references = req.references.to_vec();
        // CPU-bound: keep it off the async worker threads.
        tokio::task::spawn_blocking(move || {
            let blend = reference_layer(&references, width, height)?;
            (0..n)
                .map(|i| {
                    let mut img = render(&prompt, seed, i, width, height);
                    if let Some(layer) = &blend {
                        mix(&mut img, layer, REFERENCE_WEIGHT);
                    }
                    encode(&img, format)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ProviderError::Permanent(format!("encoding failed: {e}")))
        })
        .await
        .map_err(|e| ProviderError::Transient(format!("renderer task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_prompt_dependent() {
        let a = render("a red fox in snow", 1, 0, 64, 48);
        assert_eq!(a, render("a red fox in snow", 1, 0, 64, 48));
        let b = render("a blue whale at night", 1, 0, 64, 48);
        let differing = a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count();
        assert!(differing > (64 * 48) / 4, "only {differing} pixels differ");
        let c = render("a red fox in snow", 2, 0, 64, 48);
        assert_ne!(a, c);
        let distinct: std::collections::HashSet<_> = a.pixels().collect();
        assert!(distinct.len() > 16, "not a flat picture");
    }

    #[test]
    fn encodes_each_format_at_the_requested_size() {
        let img = render("harbour", 3, 0, 40, 30);
        for (format, expected) in [
            (OutputFormat::Png, image::ImageFormat::Png),
            (OutputFormat::Jpeg, image::ImageFormat::Jpeg),
            (OutputFormat::Webp, image::ImageFormat::WebP),
        ] {
            let bytes = encode(&img, format).unwrap();
            assert_eq!(image::guess_format(&bytes).unwrap(), expected);
            let decoded = image::load_from_memory(&bytes).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (40, 30));
        }
    }
}
