//! Plane geometry for text boxes: points, quadrilaterals, convex hulls, minimum-area rectangles
//! and perspective transforms. All coordinates are `f32` pixels with the origin at the top-left
//! corner of the image, x to the right and y down.

use serde::{Deserialize, Serialize};

/// A point in pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

impl Point {
    pub const fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }

    pub fn dist(self, o: Point) -> f32 {
        ((self.x - o.x).powi(2) + (self.y - o.y).powi(2)).sqrt()
    }
}

/// A quadrilateral in the order top-left, top-right, bottom-right, bottom-left (clockwise on
/// screen). Detected text lines are quads; most are rectangles, some rotated.
pub type Quad = [Point; 4];

/// Cross product of (a - o) × (b - o); positive when o→a→b turns counter-clockwise in a y-up frame.
fn cross(o: Point, a: Point, b: Point) -> f32 {
    (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x)
}

/// Convex hull by Andrew's monotone chain. Returns the hull vertices without repetition; fewer
/// than three points for degenerate input (all points equal or collinear).
pub fn convex_hull(points: &[Point]) -> Vec<Point> {
    let mut pts: Vec<Point> = points.to_vec();
    pts.sort_by(|a, b| a.x.total_cmp(&b.x).then(a.y.total_cmp(&b.y)));
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let mut hull: Vec<Point> = Vec::with_capacity(pts.len() * 2);
    for &p in &pts {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    // The upper pass must not pop points of the lower hull.
    let lower = hull.len() + 1;
    for &p in pts.iter().rev().skip(1) {
        while hull.len() >= lower && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    hull.pop();
    hull
}

/// A rotated rectangle: four corners (in no particular order) plus its side lengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotatedRect {
    pub corners: Quad,
    pub width: f32,
    pub height: f32,
}

/// Minimum-area enclosing rectangle by rotating calipers over the convex hull (float maths, no
/// rounding of corners). Degenerate inputs give a zero-width or zero-height rectangle.
pub fn min_area_rect(points: &[Point]) -> RotatedRect {
    let hull = convex_hull(points);
    match hull.len() {
        0 => {
            return RotatedRect {
                corners: [Point::default(); 4],
                width: 0.0,
                height: 0.0,
            };
        }
        1 => {
            return RotatedRect {
                corners: [hull[0]; 4],
                width: 0.0,
                height: 0.0,
            };
        }
        _ => {}
    }
    let mut best: Option<(f32, RotatedRect)> = None;
    for i in 0..hull.len() {
        let a = hull[i];
        let b = hull[(i + 1) % hull.len()];
        let len = a.dist(b);
        if len == 0.0 {
            continue;
        }
        let (ux, uy) = ((b.x - a.x) / len, (b.y - a.y) / len);
        let (vx, vy) = (-uy, ux);
        let (mut min_u, mut max_u, mut min_v, mut max_v) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for p in &hull {
            let du = (p.x - a.x) * ux + (p.y - a.y) * uy;
            let dv = (p.x - a.x) * vx + (p.y - a.y) * vy;
            min_u = min_u.min(du);
            max_u = max_u.max(du);
            min_v = min_v.min(dv);
            max_v = max_v.max(dv);
        }
        let area = (max_u - min_u) * (max_v - min_v);
        if best.as_ref().is_none_or(|(best_area, _)| area < *best_area) {
            let at = |u: f32, v: f32| Point::new(a.x + u * ux + v * vx, a.y + u * uy + v * vy);
            let rect = RotatedRect {
                corners: [
                    at(min_u, min_v),
                    at(max_u, min_v),
                    at(max_u, max_v),
                    at(min_u, max_v),
                ],
                width: max_u - min_u,
                height: max_v - min_v,
            };
            best = Some((area, rect));
        }
    }
    best.map(|(_, r)| r)
        .expect("a hull of two or more distinct points has an edge. This is a bug.")
}

/// Orders four corners as PaddleOCR's `get_mini_boxes` does: the two left-most points become
/// top-left and bottom-left (smaller y on top), the two right-most top-right and bottom-right.
pub fn order_quad(corners: Quad) -> Quad {
    let mut pts = corners;
    pts.sort_by(|a, b| a.x.total_cmp(&b.x));
    let (tl, bl) = if pts[1].y > pts[0].y {
        (pts[0], pts[1])
    } else {
        (pts[1], pts[0])
    };
    let (tr, br) = if pts[3].y > pts[2].y {
        (pts[2], pts[3])
    } else {
        (pts[3], pts[2])
    };
    [tl, tr, br, bl]
}

/// Area of a simple polygon (shoelace formula), always non-negative.
pub fn polygon_area(points: &[Point]) -> f32 {
    let n = points.len();
    let mut s = 0.0;
    for i in 0..n {
        let (a, b) = (points[i], points[(i + 1) % n]);
        s += a.x * b.y - b.x * a.y;
    }
    s.abs() / 2.0
}

/// Perimeter of a closed polygon.
pub fn polygon_perimeter(points: &[Point]) -> f32 {
    let n = points.len();
    (0..n).map(|i| points[i].dist(points[(i + 1) % n])).sum()
}

/// Expands a rectangle-shaped quad (ordered tl, tr, br, bl) outward by `distance` pixels on every
/// side. This is what a polygon offset with round joins (PaddleOCR's pyclipper unclip) followed by
/// a minimum-area rectangle yields for a rectangle, computed analytically.
pub fn expand_rect(q: &Quad, distance: f32) -> Quad {
    let unit = |a: Point, b: Point| {
        let l = a.dist(b);
        if l == 0.0 {
            (0.0, 0.0)
        } else {
            ((b.x - a.x) / l, (b.y - a.y) / l)
        }
    };
    let (ux, uy) = unit(q[0], q[1]);
    let (vx, vy) = unit(q[0], q[3]);
    // A degenerate side has no direction; grow it along the normal of the other side.
    let (ux, uy) = if ux == 0.0 && uy == 0.0 {
        (vy, -vx)
    } else {
        (ux, uy)
    };
    let (vx, vy) = if vx == 0.0 && vy == 0.0 {
        (-uy, ux)
    } else {
        (vx, vy)
    };
    let d = distance;
    let mv = |p: Point, su: f32, sv: f32| {
        Point::new(p.x + d * (su * ux + sv * vx), p.y + d * (su * uy + sv * vy))
    };
    [
        mv(q[0], -1.0, -1.0),
        mv(q[1], 1.0, -1.0),
        mv(q[2], 1.0, 1.0),
        mv(q[3], -1.0, 1.0),
    ]
}

/// Whether `p` lies inside or on the border of the convex quad `q` (any winding).
pub fn quad_contains(q: &Quad, p: Point) -> bool {
    let mut sign = 0.0f32;
    for i in 0..4 {
        let c = cross(q[i], q[(i + 1) % 4], p);
        if c.abs() < 1e-4 {
            continue;
        }
        if sign == 0.0 {
            sign = c.signum();
        } else if c.signum() != sign {
            return false;
        }
    }
    true
}

/// A 3×3 projective transform, row-major, mapping (x, y, 1) to (x', y', w').
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography(pub [f32; 9]);

impl Homography {
    /// The transform that maps each `src[i]` to `dst[i]` (as OpenCV's getPerspectiveTransform).
    /// `None` when the points are degenerate (three collinear).
    pub fn from_points(src: &Quad, dst: &Quad) -> Option<Self> {
        // Solve the 8×8 linear system in f64 for stability.
        let mut a = [[0f64; 9]; 8];
        for i in 0..4 {
            let (x, y) = (src[i].x as f64, src[i].y as f64);
            let (u, v) = (dst[i].x as f64, dst[i].y as f64);
            a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
            a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
        }
        for col in 0..8 {
            let pivot =
                (col..8).max_by(|&r1, &r2| a[r1][col].abs().total_cmp(&a[r2][col].abs()))?;
            if a[pivot][col].abs() < 1e-10 {
                return None;
            }
            a.swap(col, pivot);
            let pivot_row = a[col];
            for (r, row) in a.iter_mut().enumerate() {
                if r != col {
                    let f = row[col] / pivot_row[col];
                    for (v, p) in row.iter_mut().zip(pivot_row.iter()).skip(col) {
                        *v -= f * p;
                    }
                }
            }
        }
        let h: Vec<f32> = (0..8).map(|r| (a[r][8] / a[r][r]) as f32).collect();
        Some(Self([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0]))
    }

    pub fn apply(&self, p: Point) -> Point {
        let m = &self.0;
        let w = m[6] * p.x + m[7] * p.y + m[8];
        let w = if w.abs() < 1e-12 { 1e-12 } else { w };
        Point::new(
            (m[0] * p.x + m[1] * p.y + m[2]) / w,
            (m[3] * p.x + m[4] * p.y + m[5]) / w,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: f32, y: f32) -> Point {
        Point::new(x, y)
    }

    #[test]
    fn hull_drops_interior_and_collinear_points() {
        let cases: &[(&[Point], usize)] = &[
            (&[p(0., 0.), p(2., 0.), p(2., 2.), p(0., 2.), p(1., 1.)], 4),
            (&[p(0., 0.), p(1., 0.), p(2., 0.)], 2),
            (&[p(1., 1.), p(1., 1.)], 1),
            (&[], 0),
            (&[p(0., 0.), p(4., 0.), p(2., 3.), p(2., 1.)], 3),
            // Row extremes of a filled 30×10 block: only the four corners are on the hull.
            (
                &(0..10)
                    .flat_map(|y| [p(0., y as f32), p(29., y as f32)])
                    .collect::<Vec<_>>(),
                4,
            ),
        ];
        for (pts, n) in cases {
            assert_eq!(convex_hull(pts).len(), *n, "{pts:?}");
        }
    }

    #[test]
    fn min_area_rect_of_axis_aligned_and_rotated_boxes() {
        let r = min_area_rect(&[p(0., 0.), p(10., 0.), p(10., 4.), p(0., 4.), p(5., 2.)]);
        assert!((r.width * r.height - 40.0).abs() < 1e-3);
        // A 10×2 rectangle rotated by 30 degrees.
        let (c, s) = (30f32.to_radians().cos(), 30f32.to_radians().sin());
        let rot = |x: f32, y: f32| p(x * c - y * s, x * s + y * c);
        let r = min_area_rect(&[rot(0., 0.), rot(10., 0.), rot(10., 2.), rot(0., 2.)]);
        assert!((r.width * r.height - 20.0).abs() < 1e-2, "{r:?}");
        assert!((r.width.max(r.height) - 10.0).abs() < 1e-3);
        // A block given as row extremes (as DB regions are) gives the axis-aligned rectangle.
        let block: Vec<Point> = (0..10)
            .flat_map(|y| [p(0., y as f32), p(29., y as f32)])
            .collect();
        let r = min_area_rect(&block);
        assert_eq!(
            (r.width.max(r.height), r.width.min(r.height)),
            (29.0, 9.0),
            "{r:?}"
        );
        let r = min_area_rect(&[p(3., 3.)]);
        assert_eq!((r.width, r.height), (0.0, 0.0));
    }

    #[test]
    fn order_quad_matches_paddle_get_mini_boxes() {
        let q = order_quad([p(10., 5.), p(0., 0.), p(0., 5.), p(10., 0.)]);
        assert_eq!(q, [p(0., 0.), p(10., 0.), p(10., 5.), p(0., 5.)]);
    }

    #[test]
    fn expand_rect_grows_every_side() {
        let q = [p(10., 10.), p(30., 10.), p(30., 20.), p(10., 20.)];
        let e = expand_rect(&q, 2.0);
        assert_eq!(e, [p(8., 8.), p(32., 8.), p(32., 22.), p(8., 22.)]);
        assert!((polygon_area(&q) - 200.0).abs() < 1e-4);
        assert!((polygon_perimeter(&q) - 60.0).abs() < 1e-4);
    }

    #[test]
    fn quad_contains_includes_border() {
        let q = [p(0., 0.), p(4., 0.), p(4., 4.), p(0., 4.)];
        for (pt, inside) in [
            (p(2., 2.), true),
            (p(0., 2.), true),
            (p(4., 4.), true),
            (p(5., 2.), false),
            (p(-0.1, 1.), false),
        ] {
            assert_eq!(quad_contains(&q, pt), inside, "{pt:?}");
        }
    }

    #[test]
    fn homography_maps_corners_and_rejects_degenerate() {
        let src = [p(10., 20.), p(110., 25.), p(105., 60.), p(8., 55.)];
        let dst = [p(0., 0.), p(100., 0.), p(100., 40.), p(0., 40.)];
        let h = Homography::from_points(&src, &dst).unwrap();
        for i in 0..4 {
            let m = h.apply(src[i]);
            assert!(m.dist(dst[i]) < 1e-3, "{i}: {m:?}");
        }
        let line = [p(0., 0.), p(1., 1.), p(2., 2.), p(3., 3.)];
        assert!(Homography::from_points(&line, &dst).is_none());
    }
}
