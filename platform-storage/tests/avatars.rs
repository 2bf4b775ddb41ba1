//! Avatar processing on real images made by the test.

use std::io::Cursor;

use image::{ImageFormat, Rgba, RgbaImage};
use platform_storage::avatars::{self, AvatarError, AvatarOptions};

const GPS_MARKER: &[u8] = b"GPS 51.500729N 0.124625W";

fn picture(width: u32, height: u32) -> RgbaImage {
    RgbaImage::from_fn(width, height, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255]))
}

fn encoded(image: &RgbaImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    let image = if format == ImageFormat::Jpeg {
        image::DynamicImage::ImageRgb8(image::DynamicImage::ImageRgba8(image.clone()).to_rgb8())
    } else {
        image::DynamicImage::ImageRgba8(image.clone())
    };
    image.write_to(&mut Cursor::new(&mut bytes), format).expect("encodes");
    bytes
}

/// A JPEG with an APP1 EXIF segment whose GPS directory holds [`GPS_MARKER`].
fn jpeg_with_gps() -> Vec<u8> {
    let jpeg = encoded(&picture(300, 200), ImageFormat::Jpeg);
    // TIFF header (big-endian), IFD0 with one entry pointing at the GPS IFD, then the GPS IFD
    // with GPSMapDatum (tag 0x12, ASCII) holding the marker.
    let mut tiff = b"MM\0*\0\0\0\x08".to_vec();
    tiff.extend([0, 1, 0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 26, 0, 0, 0, 0]);
    let datum_offset = 26 + 2 + 12 + 4;
    tiff.extend([0, 1, 0, 0x12, 0, 2]);
    tiff.extend(u32::try_from(GPS_MARKER.len() + 1).expect("small").to_be_bytes());
    tiff.extend(u32::try_from(datum_offset).expect("small").to_be_bytes());
    tiff.extend([0, 0, 0, 0]);
    tiff.extend(GPS_MARKER);
    tiff.push(0);
    let mut segment = b"Exif\0\0".to_vec();
    segment.extend(tiff);
    let length = u16::try_from(segment.len() + 2).expect("small").to_be_bytes();
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1, length[0], length[1]]);
    out.extend(segment);
    out.extend(&jpeg[2..]);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

fn assert_plain_square_png(png: &[u8], size: u32) {
    assert_eq!(image::guess_format(png).expect("an image"), ImageFormat::Png);
    let decoded = image::load_from_memory(png).expect("decodes");
    assert_eq!((decoded.width(), decoded.height()), (size, size));
    for chunk in [&b"eXIf"[..], b"tEXt", b"iTXt", b"zTXt"] {
        assert!(!contains(png, chunk), "a {:?} chunk", String::from_utf8_lossy(chunk));
    }
}

#[test]
fn a_jpeg_with_gps_data_comes_back_as_a_png_without_it() {
    let upload = jpeg_with_gps();
    assert!(contains(&upload, GPS_MARKER), "the test image carries GPS data");
    assert!(image::load_from_memory(&upload).is_ok(), "and is a valid JPEG");
    let png = avatars::process(&upload, &AvatarOptions::default()).expect("processes");
    assert_plain_square_png(&png, 256);
    assert!(!contains(&png, GPS_MARKER));
    assert!(!contains(&png, b"Exif"));
}

#[test]
fn png_gif_and_webp_are_accepted_and_cropped_square() {
    for format in [ImageFormat::Png, ImageFormat::Gif, ImageFormat::WebP] {
        let upload = encoded(&picture(120, 400), format);
        let png =
            avatars::process(&upload, &AvatarOptions { size: 64, ..AvatarOptions::default() })
                .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_plain_square_png(&png, 64);
    }
}

#[test]
fn a_polyglot_loses_everything_but_its_pixels() {
    let mut upload = encoded(&picture(32, 32), ImageFormat::Gif);
    upload.extend(b"<html><script>alert(document.cookie)</script></html>");
    assert!(image::load_from_memory(&upload).is_ok(), "still a GIF");
    let png = avatars::process(&upload, &AvatarOptions::default()).expect("processes");
    assert_plain_square_png(&png, 256);
    assert!(!contains(&png, b"<script>"));
}

#[test]
fn wrong_or_oversized_uploads_are_refused_by_name() {
    let options = AvatarOptions { max_upload_bytes: 1000, ..AvatarOptions::default() };
    let large = encoded(&picture(200, 200), ImageFormat::Png);
    assert!(large.len() > 1000);
    assert!(matches!(
        avatars::process(&large, &options),
        Err(AvatarError::TooLarge { limit: 1000 })
    ));

    let error =
        avatars::process(b"<html>hello</html>", &AvatarOptions::default()).expect_err("text");
    assert_eq!(error.to_string(), "not a PNG, JPEG, GIF or WebP image");
    let bmp = encoded(&picture(4, 4), ImageFormat::Bmp);
    let error = avatars::process(&bmp, &AvatarOptions::default()).expect_err("BMP");
    assert_eq!(error.to_string(), "not a PNG, JPEG, GIF or WebP image (found bmp)");

    // A PNG that declares 100000 × 100000 pixels is refused before anything is allocated.
    let mut bomb = encoded(&picture(8, 8), ImageFormat::Png);
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let error = avatars::process(&bomb, &AvatarOptions::default()).expect_err("a bomb");
    assert!(matches!(error, AvatarError::Decode(_)), "{error}");
}

#[test]
fn default_avatars_are_stable_per_seed_and_differ_between_seeds() {
    let ada = avatars::default_avatar("ada", 256).expect("renders");
    assert_eq!(ada, avatars::default_avatar("ada", 256).expect("renders"));
    assert_ne!(ada, avatars::default_avatar("grace", 256).expect("renders"));
    assert_plain_square_png(&ada, 256);
    assert!(avatars::file_name(&ada).ends_with(".png"));
    assert_eq!(avatars::file_name(&ada).len(), 64 + 4);
}
