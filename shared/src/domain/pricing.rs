//! The one price table: credits per image by quality and size.

use super::credits::Credits;
use super::generation::{ImageSize, Quality};

/// Credits for one image.
pub fn credits_per_image(size: ImageSize, quality: Quality) -> u64 {
    let square = matches!(size, ImageSize::Square);
    match (quality, square) {
        (Quality::Low, true) => 1,
        (Quality::Low, false) => 2,
        (Quality::Medium, true) => 2,
        (Quality::Medium, false) => 3,
        (Quality::High, true) => 4,
        (Quality::High, false) => 6,
    }
}

/// Credits reserved for a request of `n` images.
pub fn cost(size: ImageSize, quality: Quality, n: u8) -> Credits {
    Credits::new(credits_per_image(size, quality) * u64::from(n))
}

/// The table as published (for clients to show prices).
pub fn table() -> Vec<(ImageSize, Quality, u64)> {
    let mut rows = Vec::new();
    for &size in ImageSize::ALL {
        for &quality in Quality::ALL {
            rows.push((size, quality, credits_per_image(size, quality)));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_scales_with_n_and_every_setting_has_a_price() {
        assert_eq!(cost(ImageSize::Square, Quality::Medium, 3).get(), 6);
        assert_eq!(table().len(), ImageSize::ALL.len() * Quality::ALL.len());
        assert!(table().iter().all(|(_, _, c)| *c > 0));
    }
}
