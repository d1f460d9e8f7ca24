//! Geo commands: GEOADD GEODIST GEOHASH GEOPOS GEOSEARCH GEOSEARCHSTORE GEORADIUS[_RO]
//! GEORADIUSBYMEMBER[_RO], with Redis 7.0's replies and errors. A geo index is a sorted set whose
//! scores are 52-bit interleaved geohashes (26 bits of latitude in the even bits, 26 of longitude
//! in the odd ones, latitude limited to ±85.05112878), so every sorted-set command works on it.
//! GEOADD is ZADD with computed scores (it goes through ZADD's code and replicates like it); the
//! searches scan the score ranges of the 9 geohash cells around the centre, at the precision Redis
//! estimates from the radius, so results (and COUNT ANY's choice) are Redis's.

use shoal_keyspace::types::zset::{ScoreRange, ZSet};
use shoal_keyspace::{Entry, Object, Payload, ValueRef};

use crate::args::{ERR_NOT_FLOAT, ERR_NOT_INTEGER, ERR_SYNTAX, parse_i64};
use crate::error::ReplyError;
use crate::longdouble::LongDouble;
use crate::notify;
use crate::table::{Group, KeySpec, Spec, flag::*, key::*};
use crate::zsets::{AddFlags, parse_score, zadd_pairs};
use crate::{Args, CmdResult, Ctx, err};

const G: Group = Group::Geo;
const RADIUS_COMPLEXITY: &str = "O(N+log(M)) where N is the number of elements inside the bounding box of the circular area delimited by center and radius and M is the number of items inside the index.";
const SEARCH_COMPLEXITY: &str = "O(N+log(M)) where N is the number of elements in the grid-aligned bounding box area around the shape provided as the filter and M is the number of items inside the shape";

pub static COMMANDS: &[Spec] = &[
    Spec {
        name: "geoadd",
        arity: -5,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, RW | UPDATE)],
        group: G,
        since: "3.2.0",
        summary: "Add one or more geospatial items in the geospatial index represented using a sorted set",
        complexity: "O(log(N)) for each item added, where N is the number of elements in the sorted set.",
        handler: Some(geoadd),
        ..Spec::DEFAULT
    },
    Spec {
        name: "geodist",
        arity: -4,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: G,
        since: "3.2.0",
        summary: "Returns the distance between two members of a geospatial index",
        complexity: "O(log(N))",
        handler: Some(geodist),
        ..Spec::DEFAULT
    },
    Spec {
        name: "geohash",
        arity: -2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: G,
        since: "3.2.0",
        summary: "Returns members of a geospatial index as standard geohash strings",
        complexity: "O(log(N)) for each member requested, where N is the number of elements in the sorted set.",
        handler: Some(geohash),
        ..Spec::DEFAULT
    },
    Spec {
        name: "geopos",
        arity: -2,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: G,
        since: "3.2.0",
        summary: "Returns longitude and latitude of members of a geospatial index",
        complexity: "O(N) where N is the number of members requested.",
        handler: Some(geopos),
        ..Spec::DEFAULT
    },
    Spec {
        name: "georadius",
        arity: -6,
        flags: WRITE | DENYOOM | MOVABLEKEYS,
        keys: &[
            KeySpec::at(1, RO | ACCESS),
            KeySpec::after("STORE", 6, OW | UPDATE),
            KeySpec::after("STOREDIST", 6, OW | UPDATE),
        ],
        group: G,
        since: "3.2.0",
        summary: "Query a sorted set representing a geospatial index to fetch members matching a given maximum distance from a point",
        complexity: RADIUS_COMPLEXITY,
        handler: Some(georadius),
        ..Spec::DEFAULT
    },
    Spec {
        name: "georadius_ro",
        arity: -6,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: G,
        since: "3.2.10",
        summary: "A read-only variant for GEORADIUS",
        complexity: RADIUS_COMPLEXITY,
        handler: Some(georadius_ro),
        ..Spec::DEFAULT
    },
    Spec {
        name: "georadiusbymember",
        arity: -5,
        flags: WRITE | DENYOOM | MOVABLEKEYS,
        keys: &[
            KeySpec::at(1, RO | ACCESS),
            KeySpec::after("STORE", 5, OW | UPDATE),
            KeySpec::after("STOREDIST", 5, OW | UPDATE),
        ],
        group: G,
        since: "3.2.0",
        summary: "Query a sorted set representing a geospatial index to fetch members matching a given maximum distance from a member",
        complexity: RADIUS_COMPLEXITY,
        handler: Some(georadiusbymember),
        ..Spec::DEFAULT
    },
    Spec {
        name: "georadiusbymember_ro",
        arity: -5,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: G,
        since: "3.2.10",
        summary: "A read-only variant for GEORADIUSBYMEMBER",
        complexity: RADIUS_COMPLEXITY,
        handler: Some(georadiusbymember_ro),
        ..Spec::DEFAULT
    },
    Spec {
        name: "geosearch",
        arity: -7,
        flags: READONLY,
        keys: &[KeySpec::at(1, RO | ACCESS)],
        group: G,
        since: "6.2.0",
        summary: "Query a sorted set representing a geospatial index to fetch members inside an area of a box or a circle.",
        complexity: SEARCH_COMPLEXITY,
        handler: Some(geosearch),
        ..Spec::DEFAULT
    },
    Spec {
        name: "geosearchstore",
        arity: -8,
        flags: WRITE | DENYOOM,
        keys: &[KeySpec::at(1, OW | UPDATE), KeySpec::at(2, RO | ACCESS)],
        group: G,
        since: "6.2.0",
        summary: "Query a sorted set representing a geospatial index to fetch members inside an area of a box or a circle, and store the result in another key.",
        complexity: SEARCH_COMPLEXITY,
        handler: Some(geosearchstore),
        ..Spec::DEFAULT
    },
];

// ---------------------------------------------------------------------------------------------
// Geohash arithmetic (Redis's geohash.c and geohash_helper.c, same operations in the same order,
// so results are bit-identical).

pub const LAT_MIN: f64 = -85.05112878;
pub const LAT_MAX: f64 = 85.05112878;
pub const LONG_MIN: f64 = -180.0;
pub const LONG_MAX: f64 = 180.0;
/// Bits per coordinate of a stored score.
pub const STEP_MAX: u8 = 26;
/// Redis's earth radius (quadratic mean of WGS-84), in meters.
pub const EARTH_RADIUS_M: f64 = 6372797.560856;
const MERCATOR_MAX: f64 = 20037726.37;
const D_R: f64 = std::f64::consts::PI / 180.0;

fn deg_rad(a: f64) -> f64 {
    a * D_R
}

fn rad_deg(a: f64) -> f64 {
    a / D_R
}

/// A geohash of `step` bits per coordinate (`bits` holds `2 × step` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hash {
    pub bits: u64,
    pub step: u8,
}

/// A cell's extent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Area {
    pub lon_min: f64,
    pub lon_max: f64,
    pub lat_min: f64,
    pub lat_max: f64,
}

/// Spreads `x`'s bits into the even positions and `y`'s into the odd ones.
pub fn interleave(x: u32, y: u32) -> u64 {
    fn spread(v: u32) -> u64 {
        let mut v = v as u64;
        v = (v | (v << 16)) & 0x0000_FFFF_0000_FFFF;
        v = (v | (v << 8)) & 0x00FF_00FF_00FF_00FF;
        v = (v | (v << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
        v = (v | (v << 2)) & 0x3333_3333_3333_3333;
        (v | (v << 1)) & 0x5555_5555_5555_5555
    }
    spread(x) | (spread(y) << 1)
}

/// The inverse of [`interleave`]: even bits in the low half, odd bits in the high half.
pub fn deinterleave(v: u64) -> u64 {
    fn squash(mut v: u64) -> u64 {
        v &= 0x5555_5555_5555_5555;
        v = (v | (v >> 1)) & 0x3333_3333_3333_3333;
        v = (v | (v >> 2)) & 0x0F0F_0F0F_0F0F_0F0F;
        v = (v | (v >> 4)) & 0x00FF_00FF_00FF_00FF;
        v = (v | (v >> 8)) & 0x0000_FFFF_0000_FFFF;
        (v | (v >> 16)) & 0x0000_0000_FFFF_FFFF
    }
    squash(v) | (squash(v >> 1) << 32)
}

/// Encodes within the given ranges (Redis's `geohashEncode`); `None` outside the geo limits.
fn encode_in(
    lon_range: (f64, f64),
    lat_range: (f64, f64),
    lon: f64,
    lat: f64,
    step: u8,
) -> Option<Hash> {
    if step == 0 || step > 32 {
        return None;
    }
    if !(LONG_MIN..=LONG_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        return None;
    }
    if lat < lat_range.0 || lat > lat_range.1 || lon < lon_range.0 || lon > lon_range.1 {
        return None;
    }
    let mut lat_off = (lat - lat_range.0) / (lat_range.1 - lat_range.0);
    let mut lon_off = (lon - lon_range.0) / (lon_range.1 - lon_range.0);
    lat_off *= (1u64 << step) as f64;
    lon_off *= (1u64 << step) as f64;
    Some(Hash {
        bits: interleave(lat_off as u32, lon_off as u32),
        step,
    })
}

/// Encodes a point in the geo ranges.
pub fn encode(lon: f64, lat: f64, step: u8) -> Option<Hash> {
    encode_in((LONG_MIN, LONG_MAX), (LAT_MIN, LAT_MAX), lon, lat, step)
}

/// The score GEOADD stores for a point (within the limits).
pub fn score_of(lon: f64, lat: f64) -> Option<u64> {
    encode(lon, lat, STEP_MAX).map(align52)
}

/// The hash's bits moved to the top of a 52-bit score.
pub fn align52(h: Hash) -> u64 {
    h.bits << (52 - h.step as u32 * 2)
}

/// The cell of a hash (Redis's `geohashDecode` in the geo ranges); `None` for the zero hash.
pub fn decode_area(h: Hash) -> Option<Area> {
    if h.bits == 0 && h.step == 0 {
        return None;
    }
    let sep = deinterleave(h.bits);
    let lat_scale = LAT_MAX - LAT_MIN;
    let lon_scale = LONG_MAX - LONG_MIN;
    let ilat = sep as u32;
    let ilon = (sep >> 32) as u32;
    let div = (1u64 << h.step) as f64;
    Some(Area {
        lat_min: LAT_MIN + (ilat as f64 * 1.0 / div) * lat_scale,
        lat_max: LAT_MIN + (ilat.wrapping_add(1) as f64 * 1.0 / div) * lat_scale,
        lon_min: LONG_MIN + (ilon as f64 * 1.0 / div) * lon_scale,
        lon_max: LONG_MIN + (ilon.wrapping_add(1) as f64 * 1.0 / div) * lon_scale,
    })
}

/// C's `(uint64_t)d` as x86-64 compiles it (out-of-range values give what the CPU gives).
fn c_double_to_u64(d: f64) -> u64 {
    const TWO63: f64 = 9223372036854775808.0;
    fn cvtt(d: f64) -> i64 {
        if d.is_nan() || !(-TWO63..TWO63).contains(&d) {
            i64::MIN
        } else {
            d as i64
        }
    }
    if d < TWO63 {
        cvtt(d) as u64
    } else {
        (cvtt(d - TWO63) as u64) ^ (1 << 63)
    }
}

/// C's `(long long)d` on x86-64.
fn c_double_to_i64(d: f64) -> i64 {
    const TWO63: f64 = 9223372036854775808.0;
    if d.is_nan() || !(-TWO63..TWO63).contains(&d) {
        i64::MIN
    } else {
        d as i64
    }
}

/// The centre of the cell a stored score names, clamped to the geo limits: `[lon, lat]`.
pub fn decode_score(score: f64) -> [f64; 2] {
    let h = Hash {
        bits: c_double_to_u64(score),
        step: STEP_MAX,
    };
    let a = decode_area(h).expect("step is not zero");
    let lon = ((a.lon_min + a.lon_max) / 2.0).clamp(LONG_MIN, LONG_MAX);
    let lat = ((a.lat_min + a.lat_max) / 2.0).clamp(LAT_MIN, LAT_MAX);
    [lon, lat]
}

fn move_x(h: &mut Hash, d: i8) {
    if d == 0 {
        return;
    }
    let shift = 64 - h.step as u32 * 2;
    let mut x = h.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let y = h.bits & 0x5555_5555_5555_5555;
    let zz = 0x5555_5555_5555_5555u64 >> shift;
    if d > 0 {
        x = x.wrapping_add(zz + 1);
    } else {
        x |= zz;
        x = x.wrapping_sub(zz + 1);
    }
    x &= 0xaaaa_aaaa_aaaa_aaaau64 >> shift;
    h.bits = x | y;
}

fn move_y(h: &mut Hash, d: i8) {
    if d == 0 {
        return;
    }
    let shift = 64 - h.step as u32 * 2;
    let x = h.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let mut y = h.bits & 0x5555_5555_5555_5555;
    let zz = 0xaaaa_aaaa_aaaa_aaaau64 >> shift;
    if d > 0 {
        y = y.wrapping_add(zz + 1);
    } else {
        y |= zz;
        y = y.wrapping_sub(zz + 1);
    }
    y &= 0x5555_5555_5555_5555u64 >> shift;
    h.bits = x | y;
}

fn moved(h: Hash, dx: i8, dy: i8) -> Hash {
    let mut n = h;
    move_x(&mut n, dx);
    move_y(&mut n, dy);
    n
}

/// Redis's `geohashEstimateStepsByRadius`.
pub fn estimate_steps(range_m: f64, lat: f64) -> u8 {
    if range_m == 0.0 {
        return 26;
    }
    let mut range = range_m;
    let mut step: i32 = 1;
    while range < MERCATOR_MAX {
        range *= 2.0;
        step += 1;
    }
    step -= 2;
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u8
}

/// Distance along the meridian.
fn lat_distance(lat1: f64, lat2: f64) -> f64 {
    EARTH_RADIUS_M * (deg_rad(lat2) - deg_rad(lat1)).abs()
}

/// Haversine distance in meters, as Redis computes it.
pub fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let lon1r = deg_rad(lon1);
    let lon2r = deg_rad(lon2);
    let v = ((lon2r - lon1r) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1, lat2);
    }
    let lat1r = deg_rad(lat1);
    let lat2r = deg_rad(lat2);
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

/// A search area.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Radius(f64),
    /// Width, height.
    Box(f64, f64),
}

/// A search: centre `[lon, lat]`, area in units, and the unit's size in meters.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub xy: [f64; 2],
    pub kind: Kind,
    pub conversion: f64,
}

impl Shape {
    /// The distance (meters) of a point from the centre when it is inside the shape.
    pub fn contains(&self, xy: [f64; 2]) -> Option<f64> {
        let [x1, y1] = self.xy;
        let [x2, y2] = xy;
        match self.kind {
            Kind::Radius(r) => {
                let d = distance(x1, y1, x2, y2);
                (d <= r * self.conversion).then_some(d)
            }
            Kind::Box(w, h) => {
                let (w, h) = (w * self.conversion, h * self.conversion);
                if lat_distance(y2, y1) > h / 2.0 {
                    return None;
                }
                if distance(x2, y2, x1, y2) > w / 2.0 {
                    return None;
                }
                Some(distance(x1, y1, x2, y2))
            }
        }
    }

    /// `[min lon, min lat, max lon, max lat]` around the shape.
    fn bounding_box(&self) -> [f64; 4] {
        let [lon, lat] = self.xy;
        let (height, width) = match self.kind {
            Kind::Radius(r) => (self.conversion * r, self.conversion * r),
            Kind::Box(w, h) => (self.conversion * (h / 2.0), self.conversion * (w / 2.0)),
        };
        let lat_delta = rad_deg(height / EARTH_RADIUS_M);
        let top = rad_deg(width / EARTH_RADIUS_M / deg_rad(lat + lat_delta).cos());
        let bottom = rad_deg(width / EARTH_RADIUS_M / deg_rad(lat - lat_delta).cos());
        let south = lat < 0.0;
        [
            if south { lon - bottom } else { lon - top },
            lat - lat_delta,
            if south { lon + bottom } else { lon + top },
            lat + lat_delta,
        ]
    }

    /// The cells to scan, in Redis's order (centre, N, S, E, W, NE, NW, SE, SW); `None` for the
    /// ones the bounding box does not reach.
    pub fn cells(&self) -> [Option<Hash>; 9] {
        let [min_lon, min_lat, max_lon, max_lat] = self.bounding_box();
        let [lon, lat] = self.xy;
        let radius = match self.kind {
            Kind::Radius(r) => r,
            Kind::Box(w, h) => ((w / 2.0) * (w / 2.0) + (h / 2.0) * (h / 2.0)).sqrt(),
        } * self.conversion;
        let mut steps = estimate_steps(radius, lat);
        let around = |steps: u8| {
            // The centre is within the limits, so encoding cannot fail.
            let h = encode(lon, lat, steps).unwrap_or(Hash {
                bits: 0,
                step: steps,
            });
            let n = [
                h,
                moved(h, 0, 1),
                moved(h, 0, -1),
                moved(h, 1, 0),
                moved(h, -1, 0),
                moved(h, 1, 1),
                moved(h, -1, 1),
                moved(h, 1, -1),
                moved(h, -1, -1),
            ];
            let area = decode_area(h).unwrap_or_default();
            (n, area)
        };
        let (mut n, mut area) = around(steps);
        let edge = |h: Hash| decode_area(h).unwrap_or_default();
        let decrease = edge(n[1]).lat_max < max_lat
            || edge(n[2]).lat_min > min_lat
            || edge(n[3]).lon_max < max_lon
            || edge(n[4]).lon_min > min_lon;
        if steps > 1 && decrease {
            steps -= 1;
            (n, area) = around(steps);
        }
        let mut cells = n.map(Some);
        if steps >= 2 {
            let mut drop = |idx: [usize; 3]| idx.iter().for_each(|&i| cells[i] = None);
            if area.lat_min < min_lat {
                drop([2, 8, 7]);
            }
            if area.lat_max > max_lat {
                drop([1, 5, 6]);
            }
            if area.lon_min < min_lon {
                drop([4, 8, 6]);
            }
            if area.lon_max > max_lon {
                drop([3, 7, 5]);
            }
        }
        cells
    }
}

/// A member found by a search.
#[derive(Debug, Clone)]
pub struct Point {
    pub member: Vec<u8>,
    pub xy: [f64; 2],
    /// Meters until the reply divides it by the unit.
    pub dist: f64,
    pub score: f64,
}

/// Every member of `z` inside `shape`, scanning the cells as Redis does; with `limit` (COUNT ANY)
/// it stops once that many are found.
pub fn search(z: &ZSet, shape: &Shape, limit: usize) -> Vec<Point> {
    let cells = shape.cells();
    let mut found: Vec<Point> = Vec::new();
    let full = |found: &Vec<Point>| limit != 0 && found.len() >= limit;
    let mut last: Option<usize> = None;
    for (i, cell) in cells.iter().enumerate() {
        let Some(h) = *cell else { continue };
        // Huge radii make neighbours coincide: skip a cell equal to the last one scanned (Redis
        // never counts the centre cell as "last").
        if let Some(l) = last.filter(|&l| l > 0)
            && cells[l] == Some(h)
        {
            continue;
        }
        if full(&found) {
            break;
        }
        let min = align52(h);
        let max = align52(Hash {
            bits: h.bits + 1,
            step: h.step,
        });
        let range = ScoreRange {
            min: min as f64,
            min_exclusive: false,
            max: max as f64,
            max_exclusive: true,
        };
        let ranks = range.ranks(z);
        for (m, s) in z.iter_from(ranks.start, false).take(ranks.len()) {
            let xy = decode_score(s);
            if let Some(d) = shape.contains(xy) {
                found.push(Point {
                    member: m.to_vec(),
                    xy,
                    dist: d,
                    score: s,
                });
            }
            if full(&found) {
                break;
            }
        }
        last = Some(i);
    }
    found
}

/// Redis's `fixedpoint_d2string(.., 4)`: the value rounded (`llrint`) to 4 decimals.
pub fn fixed4(d: f64) -> String {
    if d == 0.0 {
        return "0.0000".to_string();
    }
    // llrint: rounds to nearest even; out of range gives what x86-64 gives.
    let s = c_double_to_i64((d * 10000.0).round_ties_even());
    let v = s.unsigned_abs();
    format!(
        "{}{}.{:04}",
        if s < 0 { "-" } else { "" },
        v / 10000,
        v % 10000
    )
}

/// The 11-character standard geohash of a stored score (re-encoded with latitude ±90).
pub fn geohash_string(score: f64) -> [u8; 11] {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let [lon, lat] = decode_score(score);
    let bits = encode_in((-180.0, 180.0), (-90.0, 90.0), lon, lat, STEP_MAX)
        .map(|h| h.bits)
        .unwrap_or(0);
    let mut out = [b'0'; 11];
    for (i, c) in out.iter_mut().enumerate().take(10) {
        *c = ALPHABET[((bits >> (52 - (i + 1) * 5)) & 0x1f) as usize];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Argument parsing shared by the commands.

const ERR_MEMBER: ReplyError = ReplyError::err_static("could not decode requested zset member");

/// A double as Redis's `getDoubleFromObjectOrReply`, with its custom message if any.
fn double(arg: &[u8], msg: Option<&'static str>) -> Result<f64, ReplyError> {
    parse_score(arg).ok_or(match msg {
        Some(m) => ReplyError::err_static(m),
        None => ERR_NOT_FLOAT,
    })
}

/// A longitude and latitude within the limits.
fn lon_lat(args: &Args<'_>, i: usize) -> Result<[f64; 2], ReplyError> {
    let lon = double(args.get(i), None)?;
    let lat = double(args.get(i + 1), None)?;
    if !(LONG_MIN..=LONG_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        return Err(err!("invalid longitude,latitude pair {lon:.6},{lat:.6}"));
    }
    Ok([lon, lat])
}

/// A unit's size in meters.
fn unit(arg: &[u8]) -> Result<f64, ReplyError> {
    const UNITS: &[(&[u8], f64)] = &[
        (b"m", 1.0),
        (b"km", 1000.0),
        (b"ft", 0.3048),
        (b"mi", 1609.34),
    ];
    UNITS
        .iter()
        .find(|(u, _)| arg.eq_ignore_ascii_case(u))
        .map(|&(_, f)| f)
        .ok_or(ReplyError::err_static(
            "unsupported unit provided. please use M, KM, FT, MI",
        ))
}

/// `radius unit`: (radius, meters per unit).
fn radius(args: &Args<'_>, i: usize) -> Result<(f64, f64), ReplyError> {
    let r = double(args.get(i), Some("need numeric radius"))?;
    if r < 0.0 {
        return Err(ReplyError::err_static("radius cannot be negative"));
    }
    Ok((r, unit(args.get(i + 1))?))
}

/// `width height unit`.
fn box_size(args: &Args<'_>, i: usize) -> Result<(f64, f64, f64), ReplyError> {
    let w = double(args.get(i), Some("need numeric width"))?;
    let h = double(args.get(i + 1), Some("need numeric height"))?;
    if h < 0.0 || w < 0.0 {
        return Err(ReplyError::err_static("height or width cannot be negative"));
    }
    Ok((w, h, unit(args.get(i + 2))?))
}

fn zset_of(e: &Entry) -> Result<&ZSet, ReplyError> {
    match e.value() {
        ValueRef::Obj(Object::ZSet(z)) => Ok(z),
        _ => Err(ReplyError::WrongType),
    }
}

/// A member's position, or "could not decode".
fn member_xy(z: &ZSet, m: &[u8]) -> Result<[f64; 2], ReplyError> {
    z.score(m).map(decode_score).ok_or(ERR_MEMBER)
}

// ---------------------------------------------------------------------------------------------
// GEOADD, GEODIST, GEOHASH, GEOPOS.

fn geoadd(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut f = AddFlags::default();
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        if a.eq_ignore_ascii_case(b"nx") {
            f.nx = true;
        } else if a.eq_ignore_ascii_case(b"xx") {
            f.xx = true;
        } else if a.eq_ignore_ascii_case(b"ch") {
            f.ch = true;
        } else {
            break;
        }
        i += 1;
    }
    if !(args.len() - i).is_multiple_of(3) || (f.xx && f.nx) {
        return Err(ERR_SYNTAX);
    }
    let mut pairs = Vec::with_capacity((args.len() - i) / 3);
    for j in (i..args.len()).step_by(3) {
        let [lon, lat] = lon_lat(args, j)?;
        let score = score_of(lon, lat).unwrap_or(0);
        pairs.push((score as f64, args.get(j + 2)));
    }
    if pairs.is_empty() {
        // ZADD's own check on the rewritten command.
        return Err(ERR_SYNTAX);
    }
    zadd_pairs(ctx, args.get(1), &pairs, f)
}

fn geodist(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let to_meter = match args.len() {
        5 => unit(args.get(4))?,
        n if n > 5 => return Err(ERR_SYNTAX),
        _ => 1.0,
    };
    let key = args.get(1);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let d = match shard.lookup_read(db, slot, key, now) {
        Some(e) => {
            let z = zset_of(&e)?;
            match (z.score(args.get(2)), z.score(args.get(3))) {
                (Some(a), Some(b)) => {
                    let ([x1, y1], [x2, y2]) = (decode_score(a), decode_score(b));
                    Some(distance(x1, y1, x2, y2) / to_meter)
                }
                _ => None,
            }
        }
        None => None,
    };
    drop(shard);
    match d {
        Some(d) => ctx.out.bulk(fixed4(d).as_bytes()),
        None => ctx.out.null(),
    }
    Ok(())
}

/// The scores of the members asked for (`None` for missing ones), after the type check.
fn member_scores(ctx: &mut Ctx<'_>, args: &Args<'_>) -> Result<Vec<Option<f64>>, ReplyError> {
    let key = args.get(1);
    let (db, now) = (ctx.db(), ctx.now_ms);
    let (mut shard, slot) = ctx.shard(key);
    let e = shard.lookup_read(db, slot, key, now);
    let z = match &e {
        Some(e) => Some(zset_of(e)?),
        None => None,
    };
    Ok(args
        .tail(2)
        .iter()
        .map(|m| z.and_then(|z| z.score(m)))
        .collect())
}

fn geohash(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let scores = member_scores(ctx, args)?;
    ctx.out.array(scores.len());
    for s in scores {
        match s {
            Some(s) => ctx.out.bulk(&geohash_string(s)),
            None => ctx.out.null(),
        }
    }
    Ok(())
}

/// Redis's `addReplyHumanLongDouble`: a bulk string in RESP2, a double in RESP3.
fn human_coord(ctx: &mut Ctx<'_>, v: f64) {
    let text = LongDouble::from_f64(v).to_human();
    if ctx.out.is_resp3() {
        ctx.out.raw(format!(",{text}\r\n").as_bytes());
    } else {
        ctx.out.bulk(text.as_bytes());
    }
}

fn geopos(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let scores = member_scores(ctx, args)?;
    ctx.out.array(scores.len());
    for s in scores {
        match s {
            Some(s) => {
                let [lon, lat] = decode_score(s);
                ctx.out.array(2);
                human_coord(ctx, lon);
                human_coord(ctx, lat);
            }
            None => ctx.out.null_array(),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The searches.

/// Search around given coordinates (GEORADIUS).
const COORDS: u8 = 1 << 0;
/// Search around a member (GEORADIUSBYMEMBER).
const MEMBER: u8 = 1 << 1;
/// No STORE/STOREDIST (the _RO forms).
const NOSTORE: u8 = 1 << 2;
/// GEOSEARCH's arguments.
const SEARCH: u8 = 1 << 3;
/// GEOSEARCHSTORE (only STOREDIST among the store options).
const SEARCHSTORE: u8 = 1 << 4;

fn georadius(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    search_generic(ctx, args, 1, COORDS)
}

fn georadius_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    search_generic(ctx, args, 1, COORDS | NOSTORE)
}

fn georadiusbymember(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    search_generic(ctx, args, 1, MEMBER)
}

fn georadiusbymember_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    search_generic(ctx, args, 1, MEMBER | NOSTORE)
}

fn geosearch(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    search_generic(ctx, args, 1, SEARCH)
}

fn geosearchstore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    search_generic(ctx, args, 2, SEARCH | SEARCHSTORE)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sort {
    None,
    Asc,
    Desc,
}

/// A parsed search and its result.
struct Plan<'a> {
    store: Option<&'a [u8]>,
    storedist: bool,
    withdist: bool,
    withhash: bool,
    withcoord: bool,
    count: usize,
    conversion: f64,
    /// `None` when the source key does not exist.
    found: Option<Vec<Point>>,
}

/// Parses as Redis's `georadiusGeneric` (errors in its order, member look-ups as it meets them)
/// and runs the search on `z`.
fn plan<'a>(args: &Args<'a>, flags: u8, z: Option<&ZSet>) -> Result<Plan<'a>, ReplyError> {
    let mut store = None;
    let mut storedist = false;
    let mut xy = [0.0; 2];
    let mut kind = Kind::Radius(0.0);
    let mut conversion = 1.0;
    let base;
    if flags & COORDS != 0 {
        base = 6;
        xy = lon_lat(args, 2)?;
        let (r, c) = radius(args, 4)?;
        (kind, conversion) = (Kind::Radius(r), c);
    } else if flags & MEMBER != 0 {
        base = 5;
        if let Some(z) = z {
            xy = member_xy(z, args.get(2))?;
            let (r, c) = radius(args, 3)?;
            (kind, conversion) = (Kind::Radius(r), c);
        }
    } else if flags & SEARCHSTORE != 0 {
        base = 3;
        store = Some(args.get(1));
    } else {
        base = 2;
    }
    let (mut withdist, mut withhash, mut withcoord, mut any) = (false, false, false, false);
    let (mut frommember, mut fromloc, mut byradius, mut bybox) = (false, false, false, false);
    let mut sort = Sort::None;
    let mut count: i64 = 0;
    let is_search = flags & SEARCH != 0;
    let may_store = flags & (NOSTORE | SEARCH) == 0;
    let n = args.len();
    let mut i = base;
    while i < n {
        let a = args.get(i);
        let left = n - i - 1;
        let is = |w: &str| a.eq_ignore_ascii_case(w.as_bytes());
        if is("withdist") {
            withdist = true;
        } else if is("withhash") {
            withhash = true;
        } else if is("withcoord") {
            withcoord = true;
        } else if is("any") {
            any = true;
        } else if is("asc") {
            sort = Sort::Asc;
        } else if is("desc") {
            sort = Sort::Desc;
        } else if is("count") && left >= 1 {
            count = parse_i64(args.get(i + 1)).ok_or(ERR_NOT_INTEGER)?;
            if count <= 0 {
                return Err(ReplyError::err_static("COUNT must be > 0"));
            }
            i += 1;
        } else if (is("store") || is("storedist")) && left >= 1 && may_store {
            store = Some(args.get(i + 1));
            storedist = is("storedist");
            i += 1;
        } else if is("storedist") && is_search && flags & SEARCHSTORE != 0 {
            storedist = true;
        } else if is("frommember") && left >= 1 && is_search && !fromloc {
            if let Some(z) = z {
                xy = member_xy(z, args.get(i + 1))?;
            }
            frommember = true;
            i += 1;
        } else if is("fromlonlat") && left >= 2 && is_search && !frommember {
            xy = lon_lat(args, i + 1)?;
            fromloc = true;
            i += 2;
        } else if is("byradius") && left >= 2 && is_search && !bybox {
            let (r, c) = radius(args, i + 1)?;
            (kind, conversion) = (Kind::Radius(r), c);
            byradius = true;
            i += 2;
        } else if is("bybox") && left >= 3 && is_search && !byradius {
            let (w, h, c) = box_size(args, i + 1)?;
            (kind, conversion) = (Kind::Box(w, h), c);
            bybox = true;
            i += 3;
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 1;
    }
    if store.is_some() && (withdist || withhash || withcoord) {
        let what = if flags & SEARCHSTORE != 0 {
            "GEOSEARCHSTORE"
        } else {
            "STORE option in GEORADIUS"
        };
        return Err(err!(
            "{what} is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
        ));
    }
    let name = || String::from_utf8_lossy(args.get(0)).into_owned();
    if is_search && !(frommember || fromloc) {
        return Err(err!(
            "exactly one of FROMMEMBER or FROMLONLAT can be specified for {}",
            name()
        ));
    }
    if is_search && !(byradius || bybox) {
        return Err(err!(
            "exactly one of BYRADIUS and BYBOX can be specified for {}",
            name()
        ));
    }
    if any && count == 0 {
        return Err(ReplyError::err_static(
            "the ANY argument requires COUNT argument",
        ));
    }
    let count = count as usize;
    if count != 0 && sort == Sort::None && !any {
        sort = Sort::Asc;
    }
    let found = z.map(|z| {
        let shape = Shape {
            xy,
            kind,
            conversion,
        };
        let mut found = search(z, &shape, if any { count } else { 0 });
        let cmp = |a: &Point, b: &Point| {
            let c = if a.dist > b.dist {
                1
            } else if a.dist == b.dist {
                0
            } else {
                -1
            };
            if sort == Sort::Desc { -c } else { c }
        };
        let returned = if count == 0 {
            found.len()
        } else {
            found.len().min(count)
        };
        if sort != Sort::None && !found.is_empty() {
            if returned == found.len() {
                // glibc's qsort is a merge sort: stable, as Rust's.
                found.sort_by(|a, b| cmp(a, b).cmp(&0));
            } else {
                // Redis's partial quicksort: not stable, so ties come out in its order.
                pqsort(&mut found, &cmp, 0, returned - 1);
            }
        }
        found
    });
    Ok(Plan {
        store,
        storedist,
        withdist,
        withhash,
        withcoord,
        count,
        conversion,
        found,
    })
}

/// Redis's `pqsort` (NetBSD's quicksort that only sorts the parts overlapping `lrange..=rrange`),
/// step for step, so equal elements end up where Redis puts them. `cmp` returns <0, 0 or >0.
pub fn pqsort<T>(v: &mut [T], cmp: &impl Fn(&T, &T) -> i32, lrange: usize, rrange: usize) {
    let n = v.len();
    pqsort_part(v, 0, n, cmp, lrange, rrange);
}

fn med3<T>(v: &[T], a: usize, b: usize, c: usize, cmp: &impl Fn(&T, &T) -> i32) -> usize {
    if cmp(&v[a], &v[b]) < 0 {
        if cmp(&v[b], &v[c]) < 0 {
            b
        } else if cmp(&v[a], &v[c]) < 0 {
            c
        } else {
            a
        }
    } else if cmp(&v[b], &v[c]) > 0 {
        b
    } else if cmp(&v[a], &v[c]) < 0 {
        a
    } else {
        c
    }
}

fn vecswap<T>(v: &mut [T], a: usize, b: usize, n: usize) {
    for i in 0..n {
        v.swap(a + i, b + i);
    }
}

fn pqsort_part<T>(
    v: &mut [T],
    mut lo: usize,
    mut n: usize,
    cmp: &impl Fn(&T, &T) -> i32,
    lr: usize,
    rr: usize,
) {
    // Whether the part [s, s + k) overlaps the wanted range.
    let wanted = |s: usize, k: usize| !((lr < s && rr < s) || (lr >= s + k && rr >= s + k));
    loop {
        if n < 7 {
            for pm in lo + 1..lo + n {
                let mut pl = pm;
                while pl > lo && cmp(&v[pl - 1], &v[pl]) > 0 {
                    v.swap(pl, pl - 1);
                    pl -= 1;
                }
            }
            return;
        }
        let mut pm = lo + n / 2;
        if n > 7 {
            let mut pl = lo;
            let mut pn = lo + n - 1;
            if n > 40 {
                let d = n / 8;
                pl = med3(v, pl, pl + d, pl + 2 * d, cmp);
                pm = med3(v, pm - d, pm, pm + d, cmp);
                pn = med3(v, pn - 2 * d, pn - d, pn, cmp);
            }
            pm = med3(v, pl, pm, pn, cmp);
        }
        v.swap(lo, pm);
        let (mut pa, mut pb) = (lo + 1, lo + 1);
        let (mut pc, mut pd) = (lo + n - 1, lo + n - 1);
        loop {
            while pb <= pc {
                let c = cmp(&v[pb], &v[lo]);
                if c > 0 {
                    break;
                }
                if c == 0 {
                    v.swap(pa, pb);
                    pa += 1;
                }
                pb += 1;
            }
            while pb <= pc {
                let c = cmp(&v[pc], &v[lo]);
                if c < 0 {
                    break;
                }
                if c == 0 {
                    v.swap(pc, pd);
                    pd -= 1;
                }
                pc -= 1;
            }
            if pb > pc {
                break;
            }
            v.swap(pb, pc);
            pb += 1;
            pc -= 1;
        }
        let pn = lo + n;
        let r = (pa - lo).min(pb - pa);
        vecswap(v, lo, pb - r, r);
        let r = (pd - pc).min(pn - pd - 1);
        vecswap(v, pb, pn - r, r);
        let r = pb - pa;
        if r > 1 && wanted(lo, r) {
            pqsort_part(v, lo, r, cmp, lr, rr);
        }
        let r = pd - pc;
        if r > 1 {
            lo = pn - r;
            n = r;
            if wanted(lo, n) {
                continue;
            }
        }
        return;
    }
}

fn search_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, src_idx: usize, flags: u8) -> CmdResult {
    let src = args.get(src_idx);
    // Lock every key the command may write: the parse decides which STORE argument wins.
    let mut keys: Vec<&[u8]> = vec![src];
    if flags & SEARCHSTORE != 0 {
        keys.push(args.get(1));
    } else if flags & (NOSTORE | SEARCH) == 0 {
        for i in 5..args.len().saturating_sub(1) {
            if args.is(i, "store") || args.is(i, "storedist") {
                keys.push(args.get(i + 1));
            }
        }
    }
    let limits = ctx.srv.encoding_limits();
    let (db, now) = (ctx.db(), ctx.now_ms);
    let mut locked = ctx.lock_keys(keys.iter().copied());
    let plan = {
        let (shard, slot) = locked.shard(src);
        let e = shard.lookup_read(db, slot, src, now);
        let z = match &e {
            Some(e) => Some(zset_of(e)?),
            None => None,
        };
        plan(args, flags, z)?
    };
    let Some(mut found) = plan.found else {
        if let Some(dst) = plan.store {
            let (shard, slot) = locked.shard(dst);
            if shard.remove(db, slot, dst).is_some() {
                shard.note(notify::GENERIC, "del", db, dst);
            }
            drop(locked);
            ctx.out.int(0);
        } else {
            drop(locked);
            ctx.out.array(0);
        }
        return Ok(());
    };
    let n = if plan.count == 0 {
        found.len()
    } else {
        found.len().min(plan.count)
    };
    found.truncate(n);
    for p in &mut found {
        p.dist /= plan.conversion;
    }
    if let Some(dst) = plan.store {
        let version = ctx.version();
        let (shard, slot) = locked.shard(dst);
        if found.is_empty() {
            if shard.remove(db, slot, dst).is_some() {
                shard.note(notify::GENERIC, "del", db, dst);
            }
        } else {
            let mut z = ZSet::new(&limits);
            for p in &found {
                z.insert(
                    &p.member,
                    if plan.storedist { p.dist } else { p.score },
                    &limits,
                );
            }
            let e = Entry::new(
                dst,
                Payload::Object(Box::new(Object::ZSet(z))),
                None,
                None,
                version,
                0,
            );
            shard.insert(db, slot, e, now);
            let event = if flags & SEARCH != 0 {
                "geosearchstore"
            } else {
                "georadiusstore"
            };
            shard.note(notify::ZSET, event, db, dst);
        }
        drop(locked);
        ctx.out.int(n as i64);
        return Ok(());
    }
    drop(locked);
    let options = plan.withdist as usize + plan.withhash as usize + plan.withcoord as usize;
    ctx.out.array(n);
    for p in &found {
        if options > 0 {
            ctx.out.array(options + 1);
        }
        ctx.out.bulk(&p.member);
        if plan.withdist {
            ctx.out.bulk(fixed4(p.dist).as_bytes());
        }
        if plan.withhash {
            ctx.out.int(c_double_to_i64(p.score));
        }
        if plan.withcoord {
            ctx.out.array(2);
            human_coord(ctx, p.xy[0]);
            human_coord(ctx, p.xy[1]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shoal_keyspace::EncodingLimits;

    #[test]
    fn known_values_match_redis() {
        // Palermo and Catania, as redis-server 7.0.15 replies.
        let p = score_of(13.361389, 38.115556).unwrap();
        let c = score_of(15.087269, 37.502669).unwrap();
        assert_eq!(p, 3479099956230698);
        assert_eq!(c, 3479447370796909);
        let [lon, lat] = decode_score(p as f64);
        assert_eq!(LongDouble::from_f64(lon).to_human(), "13.36138933897018433");
        assert_eq!(LongDouble::from_f64(lat).to_human(), "38.11555639549629859");
        assert_eq!(&geohash_string(p as f64), b"sqc8b49rny0");
        let [x2, y2] = decode_score(c as f64);
        assert_eq!(fixed4(distance(lon, lat, x2, y2) / 1000.0), "166.2742");
    }

    #[test]
    fn fixed4_rounds_like_llrint() {
        assert_eq!(fixed4(0.0), "0.0000");
        assert_eq!(fixed4(0.00005), "0.0000");
        assert_eq!(fixed4(1.23456), "1.2346");
        assert_eq!(fixed4(-2.5), "-2.5000");
        assert_eq!(fixed4(12345.0), "12345.0000");
    }

    fn zset(points: &[(f64, f64)]) -> ZSet {
        let limits = EncodingLimits::default();
        let mut z = ZSet::new(&limits);
        for (i, &(lon, lat)) in points.iter().enumerate() {
            let s = score_of(lon, lat).unwrap();
            z.insert(format!("m{i}").as_bytes(), s as f64, &limits);
        }
        z
    }

    proptest! {
        #[test]
        fn pqsort_sorts_the_wanted_prefix(mut v in proptest::collection::vec(0u8..20, 1..200), k in 1usize..200) {
            let k = k.min(v.len());
            let mut sorted = v.clone();
            sorted.sort();
            let cmp = |a: &u8, b: &u8| (*a as i32) - (*b as i32);
            pqsort(&mut v, &cmp, 0, k - 1);
            prop_assert_eq!(&v[..k], &sorted[..k]);
            let mut rest = v.clone();
            rest.sort();
            prop_assert_eq!(rest, sorted);
        }

        #[test]
        fn decode_stays_in_the_cell(lon in -180.0f64..=180.0, lat in LAT_MIN..=LAT_MAX) {
            let s = score_of(lon, lat).unwrap();
            let [x, y] = decode_score(s as f64);
            // A cell is 360/2^26 degrees wide and 170.1/2^26 high; the centre is within half.
            prop_assert!((x - lon).abs() <= 360.0 / (1u64 << 26) as f64);
            prop_assert!((y - lat).abs() <= 170.2 / (1u64 << 26) as f64);
            // Encoding the centre gives the same cell back.
            prop_assert_eq!(score_of(x, y).unwrap(), s);
        }

        #[test]
        fn search_finds_what_brute_force_finds(
            points in proptest::collection::vec((-180.0f64..=180.0, -85.0f64..=85.0), 1..60),
            centre in (-180.0f64..=180.0, -85.0f64..=85.0),
            r in 0.0f64..3_000_000.0,
            bx in (0.0f64..3_000_000.0, 0.0f64..3_000_000.0),
        ) {
            let z = zset(&points);
            for kind in [Kind::Radius(r), Kind::Box(bx.0, bx.1)] {
                let shape = Shape { xy: [centre.0, centre.1], kind, conversion: 1.0 };
                let mut got: Vec<Vec<u8>> = search(&z, &shape, 0).into_iter().map(|p| p.member).collect();
                got.sort();
                let mut want: Vec<Vec<u8>> = z
                    .iter()
                    .filter(|&(_, s)| shape.contains(decode_score(s)).is_some())
                    .map(|(m, _)| m.to_vec())
                    .collect();
                want.sort();
                // Redis's cells may miss a point the shape contains near the bounding box's
                // corners at extreme latitudes; every point found is in the shape, and away
                // from the poles and the antimeridian nothing is missed.
                for m in &got {
                    prop_assert!(want.contains(m));
                }
                if centre.1.abs() < 60.0 && r < 1_000_000.0 && bx.0 < 1_000_000.0 && bx.1 < 1_000_000.0
                    && centre.0.abs() < 160.0
                {
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
