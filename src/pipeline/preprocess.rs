//! Model input preparation: resizing, normalisation into NCHW tensors, and the perspective crop
//! of each detected line. All tensors are in **BGR** channel order, as the PaddleOCR models were
//! trained on OpenCV-loaded images.

use fast_image_resize::{
    FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef,
};
use image::RgbImage;

use super::Tensor;
use super::geometry::{Homography, Point, Quad};

/// How the detector input size is chosen from the page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitType {
    /// Scale so the *shorter* side is at least `limit_side_px` (upscales small pages).
    Min,
    /// Scale so the *longer* side is at most `limit_side_px` (never upscales).
    Max,
}

/// Detector input sizing.
#[derive(Debug, Clone, PartialEq)]
pub struct DetResize {
    pub limit_type: LimitType,
    pub limit_side_px: u32,
    /// Hard cap on the longer side after the limit rule (bounds detector cost and memory).
    pub max_side_px: u32,
}

/// Per-channel normalisation `(x/255 − mean) / std`, channels in BGR order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// `(x/255 − 0.5)/0.5`: values in [-1, 1]. Recognition, classification, and RapidOCR's detection.
    pub const HALF: Normalize = Normalize {
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    /// ImageNet statistics in BGR order, as PaddleOCR normalises detection input.
    pub const IMAGENET_BGR: Normalize = Normalize {
        mean: [0.406, 0.456, 0.485],
        std: [0.225, 0.224, 0.229],
    };
}

/// Height of recognition and classifier inputs.
pub const REC_HEIGHT: u32 = 48;
/// Width of classifier inputs.
pub const CLS_WIDTH: u32 = 192;

/// The detector input size for a `w`×`h` page: scaled by the limit rule, capped, then rounded to
/// multiples of 32 (at least 32), as PaddleOCR's `DetResizeForTest`.
pub fn det_input_size(w: u32, h: u32, r: &DetResize) -> (u32, u32) {
    let (wf, hf) = (w as f32, h as f32);
    let mut ratio = match r.limit_type {
        LimitType::Min if wf.min(hf) < r.limit_side_px as f32 => {
            r.limit_side_px as f32 / wf.min(hf)
        }
        LimitType::Max if wf.max(hf) > r.limit_side_px as f32 => {
            r.limit_side_px as f32 / wf.max(hf)
        }
        _ => 1.0,
    };
    if wf.max(hf) * ratio > r.max_side_px as f32 {
        ratio = r.max_side_px as f32 / wf.max(hf);
    }
    let round32 = |v: f32| (((v * ratio).trunc() / 32.0).round() as u32 * 32).max(32);
    (round32(wf), round32(hf))
}

/// How the detector's input scale is chosen for a page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DetScale {
    /// [`det_input_size`] alone: one rule for every page.
    Fixed,
    /// From the page's text size: a probe pass at long side `probe_side_px` measures the median
    /// line height, then the detector runs at the scale that makes it `target_px` (never above
    /// the [`DetScale::Fixed`] scale, never below the probe's); when that scale is within 25 %
    /// of the probe's, the probe's lines are the result. Pages whose fixed input is not much
    /// larger than the probe skip the probe ([`det_probe_size`]).
    TextHeight { probe_side_px: u32, target_px: f32 },
}

/// A `w`×`h` page scaled by `ratio`, capped at `max_side` on the longer side, rounded to
/// multiples of 32 (at least 32), as [`det_input_size`].
fn det_size_at(w: u32, h: u32, ratio: f32, max_side: u32) -> (u32, u32) {
    let (wf, hf) = (w as f32, h as f32);
    let ratio = ratio.min(max_side as f32 / wf.max(hf));
    let round32 = |v: f32| (((v * ratio).trunc() / 32.0).round() as u32 * 32).max(32);
    (round32(wf), round32(hf))
}

/// The probe's input size when `scale` asks for one and it is worth it: the fixed rule's input
/// has more than 1.5² times the probe's pixels (a probe costs about its pixels' worth of the
/// full pass). `None`: run the fixed size directly.
pub fn det_probe_size(w: u32, h: u32, r: &DetResize, scale: &DetScale) -> Option<(u32, u32)> {
    let DetScale::TextHeight { probe_side_px, .. } = *scale else {
        return None;
    };
    let fixed = det_input_size(w, h, r);
    let probe = det_size_at(
        w,
        h,
        probe_side_px as f32 / w.max(h).max(1) as f32,
        r.max_side_px,
    );
    let px = |s: (u32, u32)| s.0 as f32 * s.1 as f32;
    (px(fixed) > 2.25 * px(probe)).then_some(probe)
}

/// A line's height: the mean length of its quad's two short edges (its sides, for a line
/// written along the long edges), in the quad's coordinates.
fn quad_height(q: &Quad) -> f32 {
    let d = |a: Point, b: Point| ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt();
    let (e01, e12, e23, e30) = (d(q[0], q[1]), d(q[1], q[2]), d(q[2], q[3]), d(q[3], q[0]));
    ((e01 + e23) / 2.0).min((e12 + e30) / 2.0)
}

/// After a probe pass that found `quads` (page coordinates) on a `w`×`h` page: the input size
/// to run the detector at, or `None` when the probe's own result stands (its scale is within
/// 25 % of the chosen one). With no line found the fixed size runs: the text may be too small
/// for the probe to see.
pub fn det_size_for_text(
    quads: &[Quad],
    w: u32,
    h: u32,
    r: &DetResize,
    scale: &DetScale,
) -> Option<(u32, u32)> {
    let DetScale::TextHeight {
        probe_side_px,
        target_px,
    } = *scale
    else {
        return None;
    };
    let long = w.max(h).max(1) as f32;
    let fixed = det_input_size(w, h, r);
    let fixed_ratio = fixed.0.max(fixed.1) as f32 / long;
    let probe_ratio = (probe_side_px as f32 / long).min(fixed_ratio);
    let mut heights: Vec<f32> = quads.iter().map(quad_height).filter(|h| *h > 0.0).collect();
    if heights.is_empty() {
        return Some(fixed);
    }
    heights.sort_by(f32::total_cmp);
    let median = heights[heights.len() / 2];
    let ratio = (target_px / median).clamp(probe_ratio, fixed_ratio);
    if ratio <= probe_ratio * 1.25 {
        return None;
    }
    Some(det_size_at(w, h, ratio, r.max_side_px))
}

/// Resizes an RGB image with a bilinear filter (SIMD, antialiased when shrinking).
pub fn resize_rgb(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.dimensions() == (w, h) {
        return img.clone();
    }
    let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .expect("an RgbImage buffer always matches its dimensions. This is a bug.");
    let mut dst = Image::new(w, h, PixelType::U8x3);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .expect("U8x3 to U8x3 resize cannot fail. This is a bug.");
    RgbImage::from_raw(w, h, dst.into_vec())
        .expect("resize output matches its dimensions. This is a bug.")
}

/// Writes `img` normalised into `out` laid out as CHW of width `stride_w` (≥ image width), BGR.
fn write_chw(img: &RgbImage, norm: &Normalize, out: &mut [f32], stride_w: usize, plane: usize) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let scale: [f32; 3] = [0, 1, 2].map(|c| 1.0 / (255.0 * norm.std[c]));
    let shift: [f32; 3] = [0, 1, 2].map(|c| norm.mean[c] / norm.std[c]);
    let raw = img.as_raw();
    for y in 0..h {
        let row = &raw[y * w * 3..(y + 1) * w * 3];
        for c in 0..3 {
            // BGR: output channel c reads RGB channel 2 - c.
            let dst = &mut out[c * plane + y * stride_w..c * plane + y * stride_w + w];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = row[x * 3 + 2 - c] as f32 * scale[c] - shift[c];
            }
        }
    }
}

/// Detector input: `[1, 3, H, W]` BGR tensor of the page resized to `size`, normalised by `norm`.
pub fn det_tensor(page: &RgbImage, size: (u32, u32), norm: &Normalize) -> Tensor {
    let resized = resize_rgb(page, size.0, size.1);
    let (w, h) = (size.0 as usize, size.1 as usize);
    let mut data = vec![0f32; 3 * w * h];
    write_chw(&resized, norm, &mut data, w, w * h);
    Tensor {
        shape: vec![1, 3, h, w],
        data,
    }
}

/// Width a crop takes at recognition height: `ceil(48 · w / h)`, clamped to `[1, max_w]`.
pub fn rec_width(w: u32, h: u32, max_w: u32) -> u32 {
    ((REC_HEIGHT as f32 * w as f32 / h.max(1) as f32).ceil() as u32).clamp(1, max_w.max(1))
}

/// Batch tensor `[N, 3, 48, padded_w]` in [-1, 1], each crop resized to height 48 at its own
/// aspect ratio (at most `padded_w` wide) and right-padded with 0. Returns the resized widths.
pub fn rec_tensor(crops: &[&RgbImage], padded_w: u32) -> (Tensor, Vec<u32>) {
    let (h, pw) = (REC_HEIGHT as usize, padded_w as usize);
    let plane = h * pw;
    let mut data = vec![0f32; crops.len() * 3 * plane];
    let mut widths = Vec::with_capacity(crops.len());
    for (i, crop) in crops.iter().enumerate() {
        let rw = rec_width(crop.width(), crop.height(), padded_w);
        let resized = resize_rgb(crop, rw, REC_HEIGHT);
        write_chw(
            &resized,
            &Normalize::HALF,
            &mut data[i * 3 * plane..(i + 1) * 3 * plane],
            pw,
            plane,
        );
        widths.push(rw);
    }
    (
        Tensor {
            shape: vec![crops.len(), 3, h, pw],
            data,
        },
        widths,
    )
}

/// Classifier batch tensor `[N, 3, 48, 192]`: like [`rec_tensor`] at a fixed width.
pub fn cls_tensor(crops: &[&RgbImage]) -> Tensor {
    rec_tensor(crops, CLS_WIDTH).0
}

/// Where a line crop sits on the page, to map crop pixels back to page coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct CropGeometry {
    /// The line's quad on the page (tl, tr, br, bl).
    pub quad: Quad,
    /// Size of the rectified crop before any rotation.
    pub width: u32,
    pub height: u32,
    /// The rectified crop was rotated 90° counter-clockwise because it was tall (vertical text).
    pub rotated_90: bool,
    /// The classifier found the crop upside down and it was turned 180°.
    pub flipped_180: bool,
}

impl CropGeometry {
    /// Size of the crop as handed to recognition (after rotations).
    pub fn oriented_size(&self) -> (u32, u32) {
        if self.rotated_90 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }

    /// Maps a point of the crop as handed to recognition back to page coordinates.
    pub fn to_page(&self, p: Point) -> Point {
        let (ow, oh) = self.oriented_size();
        let p = if self.flipped_180 {
            Point::new(ow as f32 - p.x, oh as f32 - p.y)
        } else {
            p
        };
        // np.rot90 (counter-clockwise): oriented (u, v) comes from rectified (w − v, u).
        let p = if self.rotated_90 {
            Point::new(self.width as f32 - p.y, p.x)
        } else {
            p
        };
        let (w, h) = (self.width as f32, self.height as f32);
        let rect = [
            Point::new(0., 0.),
            Point::new(w, 0.),
            Point::new(w, h),
            Point::new(0., h),
        ];
        match Homography::from_points(&rect, &self.quad) {
            Some(hm) => hm.apply(p),
            None => self.quad[0],
        }
    }
}

/// Rectifies the quad region of `page` into an upright crop, as PaddleOCR's
/// `get_rotate_crop_image`: size = (longest horizontal edge, longest vertical edge), perspective
/// warp with bilinear sampling and replicated borders, then a 90° turn when height ≥ 1.5 × width.
/// Crops are capped at `max_side_px` per side to bound memory for absurd boxes.
pub fn crop_line(page: &RgbImage, quad: &Quad, max_side_px: u32) -> (RgbImage, CropGeometry) {
    let w = (quad[0].dist(quad[1]).max(quad[2].dist(quad[3])) as u32).clamp(1, max_side_px);
    let h = (quad[0].dist(quad[3]).max(quad[1].dist(quad[2])) as u32).clamp(1, max_side_px);
    let (wf, hf) = (w as f32, h as f32);
    let rect = [
        Point::new(0., 0.),
        Point::new(wf, 0.),
        Point::new(wf, hf),
        Point::new(0., hf),
    ];
    let mut out = RgbImage::new(w, h);
    if let Some(hm) = Homography::from_points(&rect, quad) {
        let (pw, ph) = (page.width() as i64, page.height() as i64);
        let raw = page.as_raw();
        let px = |x: i64, y: i64, c: usize| {
            raw[((y.clamp(0, ph - 1) * pw + x.clamp(0, pw - 1)) * 3) as usize + c] as f32
        };
        for y in 0..h {
            for x in 0..w {
                let s = hm.apply(Point::new(x as f32, y as f32));
                let (x0, y0) = (s.x.floor(), s.y.floor());
                let (fx, fy) = (s.x - x0, s.y - y0);
                let (x0, y0) = (x0 as i64, y0 as i64);
                let v = [0, 1, 2].map(|c| {
                    let top = px(x0, y0, c) * (1.0 - fx) + px(x0 + 1, y0, c) * fx;
                    let bot = px(x0, y0 + 1, c) * (1.0 - fx) + px(x0 + 1, y0 + 1, c) * fx;
                    (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8
                });
                out.put_pixel(x, y, image::Rgb(v));
            }
        }
    }
    let rotated_90 = hf / wf >= 1.5;
    let crop = if rotated_90 {
        image::imageops::rotate270(&out)
    } else {
        out
    };
    (
        crop,
        CropGeometry {
            quad: *quad,
            width: w,
            height: h,
            rotated_90,
            flipped_180: false,
        },
    )
}

#[cfg(test)]
mod tests {
    fn line(x: f32, y: f32, w: f32, h: f32) -> Quad {
        [(x, y), (x + w, y), (x + w, y + h), (x, y + h)].map(|(x, y)| Point::new(x, y))
    }

    const TEXT: DetScale = DetScale::TextHeight {
        probe_side_px: 960,
        target_px: 24.0,
    };

    fn a4_rule() -> DetResize {
        DetResize {
            limit_type: LimitType::Min,
            limit_side_px: 736,
            max_side_px: 2048,
        }
    }

    #[test]
    fn small_pages_skip_the_probe_and_fixed_never_probes() {
        let r = a4_rule();
        assert_eq!(det_probe_size(754, 1000, &r, &TEXT), None);
        assert_eq!(det_probe_size(1654, 2339, &r, &DetScale::Fixed), None);
        let probe = det_probe_size(1654, 2339, &r, &TEXT).unwrap();
        assert_eq!(probe.1, 960);
    }

    #[test]
    fn text_height_picks_the_scale_that_reads_it_at_the_target() {
        let r = a4_rule();
        // 300 dpi page (2480×3508): fixed input is capped at 2048 (ratio 0.584), probe 0.274.
        // Lines 60 px tall on the page: 24/60 = 0.4 → a second pass at that scale.
        let big: Vec<Quad> = (0..9)
            .map(|i| line(100.0, 100.0 * i as f32, 900.0, 60.0))
            .collect();
        let s = det_size_for_text(&big, 2480, 3508, &r, &TEXT).unwrap();
        assert_eq!(s, det_size_at(2480, 3508, 0.4, 2048));
        // Lines 100 px tall: 0.24 is under the probe's own scale → the probe stands.
        let huge: Vec<Quad> = (0..5)
            .map(|i| line(0.0, 200.0 * i as f32, 900.0, 100.0))
            .collect();
        assert_eq!(det_size_for_text(&huge, 2480, 3508, &r, &TEXT), None);
        // Lines 20 px tall: never above the fixed scale.
        let small: Vec<Quad> = (0..5)
            .map(|i| line(0.0, 40.0 * i as f32, 900.0, 20.0))
            .collect();
        assert_eq!(
            det_size_for_text(&small, 2480, 3508, &r, &TEXT),
            Some(det_input_size(2480, 3508, &r))
        );
        // Nothing found by the probe: the fixed size.
        assert_eq!(
            det_size_for_text(&[], 2480, 3508, &r, &TEXT),
            Some(det_input_size(2480, 3508, &r))
        );
        assert_eq!(
            det_size_for_text(&big, 2480, 3508, &r, &DetScale::Fixed),
            None
        );
    }

    use super::*;

    #[test]
    fn det_input_size_table() {
        let min736 = DetResize {
            limit_type: LimitType::Min,
            limit_side_px: 736,
            max_side_px: 4000,
        };
        let max960 = DetResize {
            limit_type: LimitType::Max,
            limit_side_px: 960,
            max_side_px: 4000,
        };
        let capped = DetResize {
            limit_type: LimitType::Min,
            limit_side_px: 736,
            max_side_px: 1000,
        };
        let cases = [
            (1000, 500, &min736, (1472, 736)),
            (800, 1000, &min736, (800, 992)),
            (2000, 1000, &max960, (960, 480)),
            (500, 300, &max960, (512, 288)),
            (10, 10, &max960, (32, 32)),
            (3000, 500, &capped, (992, 160)),
        ];
        for (w, h, r, want) in cases {
            assert_eq!(det_input_size(w, h, r), want, "{w}×{h} {r:?}");
        }
    }

    #[test]
    fn det_tensor_is_bgr_normalised() {
        let img = RgbImage::from_pixel(32, 32, image::Rgb([255, 0, 51]));
        let t = det_tensor(&img, (32, 32), &Normalize::HALF);
        assert_eq!(t.shape, vec![1, 3, 32, 32]);
        let plane = 32 * 32;
        assert!((t.data[0] - (51.0 / 127.5 - 1.0)).abs() < 1e-6); // B
        assert!((t.data[plane] + 1.0).abs() < 1e-6); // G
        assert!((t.data[2 * plane] - 1.0).abs() < 1e-6); // R
    }

    #[test]
    fn rec_tensor_pads_with_zero() {
        let wide = RgbImage::from_pixel(100, 24, image::Rgb([255, 255, 255])); // → 200 wide
        let short = RgbImage::from_pixel(10, 48, image::Rgb([255, 255, 255])); // → 10 wide
        let (t, widths) = rec_tensor(&[&wide, &short], 320);
        assert_eq!(t.shape, vec![2, 3, 48, 320]);
        assert_eq!(widths, vec![200, 10]);
        let at = |n: usize, c: usize, y: usize, x: usize| t.data[((n * 3 + c) * 48 + y) * 320 + x];
        assert!((at(0, 0, 10, 199) - 1.0).abs() < 1e-6);
        assert_eq!(at(0, 0, 10, 200), 0.0);
        assert_eq!(at(1, 2, 47, 10), 0.0);
        assert_eq!(rec_width(5000, 48, 320), 320);
    }

    #[test]
    fn crop_line_rectifies_and_maps_back() {
        let page = RgbImage::from_fn(200, 100, |x, _| image::Rgb([(x % 256) as u8, 0, 0]));
        let quad = [
            Point::new(20., 30.),
            Point::new(120., 30.),
            Point::new(120., 60.),
            Point::new(20., 60.),
        ];
        let (crop, g) = crop_line(&page, &quad, 4096);
        assert_eq!(crop.dimensions(), (100, 30));
        assert_eq!(crop.get_pixel(0, 0).0[0], 20);
        assert_eq!(crop.get_pixel(50, 10).0[0], 70);
        assert!(g.to_page(Point::new(50., 15.)).dist(Point::new(70., 45.)) < 1e-3);
        // A tall box is turned on its side; its crop's left edge is the box's bottom... mapped back.
        let tall = [
            Point::new(10., 10.),
            Point::new(30., 10.),
            Point::new(30., 90.),
            Point::new(10., 90.),
        ];
        let (crop, g) = crop_line(&page, &tall, 4096);
        assert!(g.rotated_90);
        assert_eq!(crop.dimensions(), (80, 20));
        assert!(g.to_page(Point::new(0., 0.)).dist(Point::new(30., 10.)) < 1e-3);
        let flipped = CropGeometry {
            flipped_180: true,
            ..crop_line(&page, &quad, 4096).1
        };
        assert!(
            flipped
                .to_page(Point::new(0., 0.))
                .dist(Point::new(120., 60.))
                < 1e-3
        );
    }
}
