//! Reference uploads (C4, R2, S1): what a client may declare, and the server-side check of what
//! it actually sent. The storage emulator enforces neither POST policies nor signed headers, and
//! clients lie, so an upload is usable only once [`sanitize`] accepted it: its size, its magic
//! bytes against the declared type, nothing appended after the image (polyglots), a decode
//! within pixel and memory limits (a decompression bomb fails at its header), the first frame
//! only, the EXIF orientation applied. What is kept and passed on to a provider is a re-encoded
//! PNG without any metadata.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::Invalid;

/// Largest upload accepted, in bytes.
pub const MAX_UPLOAD_BYTES: u64 = 10 * 1024 * 1024;
/// Largest width or height decoded: anything bigger is refused from its header.
pub const MAX_SIDE: u32 = 4096;
/// Memory the decoder may allocate (a 4096x4096 RGBA image is 64 MiB).
pub const MAX_DECODE_ALLOC: u64 = 96 * 1024 * 1024;
/// The kept reference is scaled down to fit this (providers take at most this much detail).
pub const REFERENCE_MAX_SIDE: u32 = 2048;
/// References a generation may use.
pub const MAX_REFERENCES: usize = 4;

/// The types a reference may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadType {
    Png,
    Jpeg,
    Webp,
}

impl UploadType {
    pub fn parse(content_type: &str) -> Result<Self, Invalid> {
        match content_type {
            "image/png" => Ok(Self::Png),
            "image/jpeg" => Ok(Self::Jpeg),
            "image/webp" => Ok(Self::Webp),
            other => Err(Invalid::new(
                "unsupported_content_type",
                format!("{other:?} is not accepted: upload image/png, image/jpeg or image/webp"),
            )),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }

    fn format(self) -> ImageFormat {
        match self {
            Self::Png => ImageFormat::Png,
            Self::Jpeg => ImageFormat::Jpeg,
            Self::Webp => ImageFormat::WebP,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Png => "PNG",
            Self::Jpeg => "JPEG",
            Self::Webp => "WebP",
        }
    }
}

/// A declared size: 1 byte to [`MAX_UPLOAD_BYTES`].
pub fn parse_size(size: u64) -> Result<u64, Invalid> {
    if (1..=MAX_UPLOAD_BYTES).contains(&size) {
        Ok(size)
    } else {
        Err(Invalid::new(
            "invalid_size",
            format!("size must be 1 to {MAX_UPLOAD_BYTES} bytes"),
        ))
    }
}

/// An accepted upload: the re-encoded PNG and its dimensions.
#[derive(Debug)]
pub struct Sanitized {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

fn reject(reason: impl Into<String>) -> Invalid {
    Invalid::new("upload_rejected", reason)
}

/// Checks what was uploaded against what was declared and returns the re-encoded copy, or why
/// it was refused (a readable sentence).
pub fn sanitize(
    bytes: &[u8],
    declared: UploadType,
    declared_size: u64,
) -> Result<Sanitized, Invalid> {
    let len = bytes.len() as u64;
    if len == 0 {
        return Err(reject("the uploaded file is empty"));
    }
    if len > declared_size || len > MAX_UPLOAD_BYTES {
        return Err(reject(format!(
            "the file is {len} bytes, more than the {} declared",
            declared_size.min(MAX_UPLOAD_BYTES)
        )));
    }
    match image::guess_format(bytes) {
        Ok(f) if f == declared.format() => {}
        Ok(f) => {
            return Err(reject(format!(
                "the file is a {f:?} image, not the {} declared",
                declared.name()
            )))
        }
        Err(_) => {
            return Err(reject(format!(
                "the file is not a {} image (its first bytes are not a {} signature)",
                declared.name(),
                declared.name()
            )))
        }
    }
    check_end(bytes, declared)?;

    let mut reader = ImageReader::with_format(Cursor::new(bytes), declared.format());
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(&e))?;
    let orientation = decoder.orientation().map_err(|e| decode_error(&e))?;
    // The first frame only: an animation's other frames are never decoded.
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(&e))?;
    img.apply_orientation(orientation);
    if img.width().max(img.height()) > REFERENCE_MAX_SIDE {
        img = img.resize(
            REFERENCE_MAX_SIDE,
            REFERENCE_MAX_SIDE,
            image::imageops::FilterType::Triangle,
        );
    }
    let img = if img.color().has_alpha() {
        DynamicImage::ImageRgba8(img.to_rgba8())
    } else {
        DynamicImage::ImageRgb8(img.to_rgb8())
    };
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| reject(format!("the image could not be re-encoded: {e}")))?;
    Ok(Sanitized {
        png,
        width: img.width(),
        height: img.height(),
    })
}

fn decode_error(e: &image::ImageError) -> Invalid {
    match e {
        image::ImageError::Limits(_) => reject(format!(
            "the image is larger than {MAX_SIDE}x{MAX_SIDE} pixels or needs too much memory to decode"
        )),
        image::ImageError::Unsupported(u) => reject(format!("unsupported image: {u}")),
        other => reject(format!("the image is truncated or corrupt: {other}")),
    }
}

/// Nothing may follow the image's own end (a PNG's `IEND` chunk, a JPEG's end-of-image marker,
/// a WebP's RIFF length): a file that is also a ZIP, a script or an HTML page is refused.
fn check_end(bytes: &[u8], declared: UploadType) -> Result<(), Invalid> {
    let trailing = |n: usize| {
        reject(format!(
            "{n} bytes follow the end of the {} image (a file with something appended is refused)",
            declared.name()
        ))
    };
    match declared {
        UploadType::Png => {
            // Walk the chunks: length, type, data, CRC.
            let mut at = 8usize;
            loop {
                let Some(header) = bytes.get(at..at + 8) else {
                    return Err(reject("the PNG image is truncated (no IEND chunk)"));
                };
                let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
                let end = at
                    .checked_add(12)
                    .and_then(|x| x.checked_add(len))
                    .ok_or_else(|| reject("the PNG image is corrupt"))?;
                if end > bytes.len() {
                    return Err(reject("the PNG image is truncated"));
                }
                if &header[4..8] == b"IEND" {
                    return match bytes.len() - end {
                        0 => Ok(()),
                        n => Err(trailing(n)),
                    };
                }
                at = end;
            }
        }
        UploadType::Jpeg => {
            // Phones append more complete JPEGs after the first (MPF, Ultra HDR gain maps),
            // and some writers pad with zeros: both are accepted, anything else is not.
            let mut end = jpeg_end(bytes)?;
            loop {
                let rest = &bytes[end..];
                if rest.iter().all(|b| *b == 0) {
                    return Ok(());
                }
                match rest.starts_with(&[0xFF, 0xD8]).then(|| jpeg_end(rest)) {
                    Some(Ok(n)) => end += n,
                    _ => return Err(trailing(rest.len())),
                }
            }
        }
        UploadType::Webp => {
            let riff = bytes
                .get(4..8)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or_else(|| reject("the WebP image is truncated"))?;
            let total = riff + 8 + (riff & 1);
            match bytes.len().cmp(&total) {
                std::cmp::Ordering::Less => Err(reject("the WebP image is truncated")),
                std::cmp::Ordering::Equal => Ok(()),
                std::cmp::Ordering::Greater => Err(trailing(bytes.len() - total)),
            }
        }
    }
}

/// Where a JPEG's end-of-image marker ends: its segments walked from the start (each marker's
/// length, the entropy-coded data after each start-of-scan up to the next marker), so an `FFD9`
/// hidden after appended data is not mistaken for the end.
fn jpeg_end(bytes: &[u8]) -> Result<usize, Invalid> {
    let truncated = || reject("the JPEG image is truncated (no end-of-image marker)");
    let mut i = 2;
    loop {
        if bytes.get(i) != Some(&0xFF) {
            return Err(if i >= bytes.len() {
                truncated()
            } else {
                reject("the JPEG image is corrupt")
            });
        }
        while bytes.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *bytes.get(i).ok_or_else(truncated)?;
        i += 1;
        match marker {
            0xD9 => return Ok(i),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let len = bytes
                    .get(i..i + 2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    .ok_or_else(truncated)?;
                i += len;
                if marker == 0xDA {
                    // Entropy-coded data: up to the next marker (FF00 is a data byte, FFD0-D7
                    // restart markers stay inside the scan).
                    loop {
                        match (bytes.get(i), bytes.get(i + 1)) {
                            (Some(0xFF), Some(0x00)) => i += 2,
                            (Some(0xFF), Some(0xD0..=0xD7)) => i += 2,
                            (Some(0xFF), Some(_)) => break,
                            (Some(_), _) => i += 1,
                            (None, _) => return Err(truncated()),
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 90]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn accepts_a_real_image_and_reencodes_it() {
        let bytes = png(40, 30);
        let s = sanitize(&bytes, UploadType::Png, bytes.len() as u64).unwrap();
        assert_eq!((s.width, s.height), (40, 30));
        assert_eq!(image::guess_format(&s.png).unwrap(), ImageFormat::Png);
    }

    /// A JPEG saying (in EXIF) that it must be turned 90 degrees: the kept copy is upright.
    #[test]
    fn applies_the_exif_orientation() {
        let img = RgbImage::from_fn(20, 10, |x, _| Rgb([(x * 12) as u8, 0, 0]));
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let tiff: &[u8] = &[
            b'M', b'M', 0, 0x2A, 0, 0, 0, 8, // big-endian TIFF, first IFD at 8
            0, 1, // one entry
            0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, // Orientation (SHORT) = 6: rotate 90
            0, 0, 0, 0, // no next IFD
        ];
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(tiff);
        let mut with_exif = jpeg[..2].to_vec();
        with_exif.extend_from_slice(&app1);
        with_exif.extend_from_slice(&jpeg[2..]);
        let s = sanitize(&with_exif, UploadType::Jpeg, 1 << 20).unwrap();
        assert_eq!((s.width, s.height), (10, 20));
        assert_eq!(image::guess_format(&s.png).unwrap(), ImageFormat::Png);
    }

    #[test]
    fn refuses_lies_and_appended_data() {
        let bytes = png(8, 8);
        let n = bytes.len() as u64;
        assert!(sanitize(&bytes, UploadType::Jpeg, n)
            .unwrap_err()
            .detail
            .contains("not the JPEG"));
        assert!(sanitize(&bytes, UploadType::Png, n - 1)
            .unwrap_err()
            .detail
            .contains("more than"));
        let mut zip = bytes.clone();
        zip.extend_from_slice(b"PK\x03\x04 hidden archive");
        assert!(sanitize(&zip, UploadType::Png, 1 << 20)
            .unwrap_err()
            .detail
            .contains("follow the end"));
        // A JPEG with an archive appended that itself ends in an end-of-image marker.
        let mut jpeg = Vec::new();
        RgbImage::from_pixel(16, 16, Rgb([9, 9, 9]))
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        assert!(sanitize(&jpeg, UploadType::Jpeg, 1 << 20).is_ok());
        // Another complete JPEG appended (as phones do), and zero padding: accepted.
        let mut mpf = jpeg.clone();
        mpf.extend_from_slice(&jpeg);
        mpf.extend_from_slice(&[0; 16]);
        assert!(sanitize(&mpf, UploadType::Jpeg, 1 << 20).is_ok());
        let mut sly = jpeg.clone();
        sly.extend_from_slice(b"PK\x03\x04 archive \xFF\xD9");
        assert!(sanitize(&sly, UploadType::Jpeg, 1 << 20)
            .unwrap_err()
            .detail
            .contains("follow the end"));
        let cut = &bytes[..bytes.len() - 20];
        assert!(sanitize(cut, UploadType::Png, n)
            .unwrap_err()
            .detail
            .contains("truncated"));
    }
}
