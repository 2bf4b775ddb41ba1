//! Avatars: any accepted image in, a fixed-size square PNG out; and a default for everyone.
//!
//! An upload is decoded (PNG, JPEG, GIF or WebP, told by its bytes, not its name or declared
//! type), cropped to its centre square, resized and encoded afresh as PNG. Nothing of the upload
//! survives but its pixels: no EXIF (location, camera), no comments, no trailing bytes, so a file
//! that is also an HTML page or a script (a polyglot) comes out as a plain image.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Limits, Rgba, RgbaImage};
use sha2::{Digest as _, Sha256};

/// How avatars are made.
#[derive(Clone, Debug)]
pub struct AvatarOptions {
    /// The largest upload accepted, in bytes. Default 5 MiB.
    pub max_upload_bytes: usize,
    /// The side of the square PNG, in pixels. Default 256.
    pub size: u32,
    /// The largest width or height an upload may declare, in pixels (decompression bombs
    /// declare huge ones). Default 8192.
    pub max_dimension: u32,
}

impl Default for AvatarOptions {
    fn default() -> Self {
        Self { max_upload_bytes: 5 << 20, size: 256, max_dimension: 8192 }
    }
}

/// Why an upload cannot become an avatar.
#[derive(Debug, thiserror::Error)]
pub enum AvatarError {
    /// The upload is larger than [`AvatarOptions::max_upload_bytes`].
    #[error("the image is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a PNG, JPEG, GIF or WebP image.
    #[error("not a PNG, JPEG, GIF or WebP image{}", found.map(|f| format!(" (found {f})")).unwrap_or_default())]
    UnsupportedFormat {
        /// What the bytes look like, when they look like another image format.
        found: Option<&'static str>,
    },
    /// The image could not be decoded, or is larger than allowed.
    #[error("cannot decode the image: {0}")]
    Decode(String),
    /// The PNG could not be written.
    #[error("cannot encode the avatar")]
    Encode(#[source] image::ImageError),
}

/// Turns an uploaded image into the avatar PNG.
///
/// # Errors
///
/// See [`AvatarError`]: too large, not an accepted format, undecodable, or too many pixels.
pub fn process(upload: &[u8], options: &AvatarOptions) -> Result<Vec<u8>, AvatarError> {
    if upload.len() > options.max_upload_bytes {
        return Err(AvatarError::TooLarge { limit: options.max_upload_bytes });
    }
    let format =
        image::guess_format(upload).map_err(|_| AvatarError::UnsupportedFormat { found: None })?;
    if !matches!(
        format,
        ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP
    ) {
        return Err(AvatarError::UnsupportedFormat { found: Some(format_name(format)) });
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(upload), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(options.max_dimension);
    limits.max_image_height = Some(options.max_dimension);
    limits.max_alloc = Some(256 << 20);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| AvatarError::Decode(e.to_string()))?;
    let square = crop_to_square(decoded);
    let resized =
        square.resize_exact(options.size, options.size, image::imageops::FilterType::Lanczos3);
    encode_png(&DynamicImage::ImageRgba8(resized.to_rgba8()))
}

fn format_name(format: ImageFormat) -> &'static str {
    format.extensions_str().first().copied().unwrap_or("another format")
}

fn crop_to_square(image: DynamicImage) -> DynamicImage {
    let (width, height) = (image.width(), image.height());
    let side = width.min(height);
    image.crop_imm((width - side) / 2, (height - side) / 2, side, side)
}

fn encode_png(image: &DynamicImage) -> Result<Vec<u8>, AvatarError> {
    let mut png = Vec::new();
    image.write_to(&mut Cursor::new(&mut png), ImageFormat::Png).map_err(AvatarError::Encode)?;
    Ok(png)
}

/// Returns the generated avatar of `seed` (a user name, say): a symmetric 5 × 5 pattern in a
/// colour of its own on a light background, the same for the same seed, as a `size`-pixel PNG.
///
/// # Errors
///
/// Fails only if PNG encoding fails.
pub fn default_avatar(seed: &str, size: u32) -> Result<Vec<u8>, AvatarError> {
    let hash = Sha256::digest(seed.as_bytes());
    let color = Rgba([hash[0] / 2 + 64, hash[1] / 2 + 64, hash[2] / 2 + 64, 255]);
    let background = Rgba([240, 240, 240, 255]);
    let margin = size / 10;
    let cell = ((size - 2 * margin) / 5).max(1);
    let mut image = RgbaImage::from_pixel(size, size, background);
    for row in 0..5u32 {
        for column in 0..3u32 {
            // 15 bits of the hash decide the left three columns; the right two mirror them.
            let bit = row * 3 + column;
            let on = hash[3 + (bit / 8) as usize] >> (bit % 8) & 1 == 1;
            if !on {
                continue;
            }
            for mirrored in [column, 4 - column] {
                let (x0, y0) = (margin + mirrored * cell, margin + row * cell);
                for y in y0..(y0 + cell).min(size) {
                    for x in x0..(x0 + cell).min(size) {
                        image.put_pixel(x, y, color);
                    }
                }
            }
        }
    }
    encode_png(&DynamicImage::ImageRgba8(image))
}

/// Returns the file name an avatar PNG is stored and served under: its SHA-256, so that its URL
/// changes with it and can be cached for good.
pub fn file_name(png: &[u8]) -> String {
    format!("{}.png", hex::encode(Sha256::digest(png)))
}
