//! LOLWUT, as Redis 7.0 answers it: by default (and for any version it has no art for) the line
//! `Redis ver. 7.0.15`; `VERSION 5` draws Georg Nees's "Schotter" in Braille characters and
//! `VERSION 6` a skyline in terminal colours, both random as Redis's are (so only their shape, size
//! and caption can be compared with Redis's), with Redis's argument limits.

use crate::connection::REDIS_VERSION;
use crate::table::{Group, Spec, flag::*};
use crate::{Args, CmdResult, Ctx};
use shoal_keyspace::Rng;

pub static COMMANDS: &[Spec] = &[Spec {
    name: "lolwut",
    arity: -1,
    flags: READONLY | FAST,
    group: Group::Server,
    since: "5.0.0",
    summary: "Displays computer art and the Redis version",
    handler: Some(lolwut),
    ..Spec::DEFAULT
}];

/// A canvas of small colour numbers (Redis's `lwCanvas`).
struct Canvas {
    width: i64,
    height: i64,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: i64, height: i64, colour: u8) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![colour; (width * height) as usize],
        }
    }

    fn set(&mut self, x: i64, y: i64, colour: u8) {
        if (0..self.width).contains(&x) && (0..self.height).contains(&y) {
            self.pixels[(x + y * self.width) as usize] = colour;
        }
    }

    fn get(&self, x: i64, y: i64) -> u8 {
        if (0..self.width).contains(&x) && (0..self.height).contains(&y) {
            self.pixels[(x + y * self.width) as usize]
        } else {
            0
        }
    }

    /// Bresenham's line.
    fn line(&mut self, mut x1: i64, mut y1: i64, x2: i64, y2: i64, colour: u8) {
        let (dx, dy) = ((x2 - x1).abs(), (y2 - y1).abs());
        let (sx, sy) = (if x1 < x2 { 1 } else { -1 }, if y1 < y2 { 1 } else { -1 });
        let mut err = dx - dy;
        loop {
            self.set(x1, y1, colour);
            if x1 == x2 && y1 == y2 {
                break;
            }
            let e2 = err * 2;
            if e2 > -dy {
                err -= dy;
                x1 += sx;
            }
            if e2 < dx {
                err += dx;
                y1 += sy;
            }
        }
    }

    /// A square of side `size` centred on (x, y), turned by `angle` radians.
    fn square(&mut self, x: i64, y: i64, size: f32, angle: f32) {
        let size = (size / std::f32::consts::SQRT_2).round();
        let mut k = std::f32::consts::FRAC_PI_4 + angle;
        let mut px = [0i64; 4];
        let mut py = [0i64; 4];
        for j in 0..4 {
            px[j] = (k.sin() * size + x as f32).round() as i64;
            py[j] = (k.cos() * size + y as f32).round() as i64;
            k += std::f32::consts::FRAC_PI_2;
        }
        for j in 0..4 {
            self.line(px[j], py[j], px[(j + 1) % 4], py[(j + 1) % 4], 1);
        }
    }
}

fn lolwut(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut rest = 1;
    let mut version = None;
    if args.len() >= 3 && args.is(1, "version") {
        version = Some(args.i64(2)?);
        rest = 3;
    }
    let nums: Vec<&[u8]> = args.iter().skip(rest).collect();
    let num = |i: usize, default: i64| -> Result<i64, crate::ReplyError> {
        match nums.get(i) {
            Some(a) => crate::args::parse_i64(a).ok_or(crate::args::ERR_NOT_INTEGER),
            None => Ok(default),
        }
    };
    let mut rng = crate::hashes::command_rng(ctx);
    let text = match version.map(|v| v as u32) {
        Some(5) => {
            let cols = num(0, 66)?.clamp(1, 1000);
            let per_row = num(1, 8)?.clamp(1, 200);
            let per_col = num(2, 12)?.clamp(1, 200);
            let mut t = render_braille(&schotter(cols, per_row, per_col, &mut rng));
            t.push_str("\nGeorg Nees - schotter, plotter on paper, 1968. Redis ver. ");
            t.push_str(REDIS_VERSION);
            t.push('\n');
            t
        }
        Some(6) => {
            let cols = num(0, 80)?.clamp(1, 1000);
            let rows = num(1, 20)?.clamp(1, 1000);
            let mut canvas = Canvas::new(cols, rows, 3);
            skyline(&mut canvas, &mut rng);
            let mut t = render_colours(&canvas);
            t.push_str("\nDedicated to the 8 bit game developers of past and present.\nOriginal 8 bit image from Plaguemon by hikikomori. Redis ver. ");
            t.push_str(REDIS_VERSION);
            t.push('\n');
            t
        }
        _ => format!("Redis ver. {REDIS_VERSION}\n"),
    };
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

fn schotter(cols: i64, per_row: i64, per_col: i64, rng: &mut Rng) -> Canvas {
    let width = cols * 2;
    let padding = if width > 4 { 2 } else { 0 };
    let side = (width - padding * 2) as f32 / per_row as f32;
    let height = (side * per_col as f32) as i64 + padding * 2;
    let mut canvas = Canvas::new(width, height, 0);
    for y in 0..per_col {
        for x in 0..per_row {
            let mut sx = (x as f32 * side + side / 2.0 + padding as f32) as i64;
            let mut sy = (y as f32 * side + side / 2.0 + padding as f32) as i64;
            let mut angle = 0.0;
            // Lower rows are turned and moved more and more at random.
            if y > 1 {
                let mut r = || {
                    let v = rng.unit() as f32 / per_col as f32 * y as f32;
                    if rng.below(2) == 1 { -v } else { v }
                };
                let (r1, r2, r3) = (r(), r(), r());
                angle = r1;
                sx += (r2 * side / 3.0) as i64;
                sy += (r3 * side / 3.0) as i64;
            }
            canvas.square(sx, sy, side, angle);
        }
    }
    canvas
}

/// Eight pixels (2 × 4) per Braille character, as Redis's `renderCanvas` of version 5.
fn render_braille(c: &Canvas) -> String {
    let mut t = String::new();
    let mut y = 0;
    while y < c.height {
        let mut x = 0;
        while x < c.width {
            let bits = [
                (x, y),
                (x, y + 1),
                (x, y + 2),
                (x + 1, y),
                (x + 1, y + 1),
                (x + 1, y + 2),
                (x, y + 3),
                (x + 1, y + 3),
            ];
            let byte = bits.iter().enumerate().fold(0u32, |b, (i, &(px, py))| {
                b | (((c.get(px, py) != 0) as u32) << i)
            });
            t.push(char::from_u32(0x2800 + byte).unwrap_or(' '));
            x += 2;
        }
        if y != c.height - 1 {
            t.push('\n');
        }
        y += 4;
    }
    t
}

/// One coloured space per pixel, as version 6's renderer.
fn render_colours(c: &Canvas) -> String {
    let mut t = String::new();
    for y in 0..c.height {
        for x in 0..c.width {
            let escape = match c.get(x, y) {
                1 => "0;90;100m",
                2 => "0;37;47m",
                3 => "0;97;107m",
                _ => "0;30;40m",
            };
            t.push_str("\x1b[");
            t.push_str(escape);
            t.push_str(" \x1b[0m");
        }
        if y != c.height - 1 {
            t.push('\n');
        }
    }
    t
}

struct Skyscraper {
    xoff: i64,
    width: i64,
    height: i64,
    windows: bool,
    colour: u8,
}

fn skyscraper(c: &mut Canvas, s: &Skyscraper, rng: &mut Rng) {
    let start = c.height - 1;
    let end = start - s.height + 1;
    let mut y = start;
    while y >= end {
        for x in s.xoff..s.xoff + s.width {
            if y == end && (x <= s.xoff + 1 || x >= s.xoff + s.width - 2) {
                continue;
            }
            let mut colour = s.colour;
            if s.windows
                && x > s.xoff + 1
                && x < s.xoff + s.width - 2
                && y > end + 1
                && y < start - 1
            {
                let (relx, rely) = (x - (s.xoff + 1), y - (end + 1));
                if (relx / 2) % 2 == 1 && rely % 2 == 1 {
                    loop {
                        colour = 1 + rng.below(2) as u8;
                        if colour != s.colour {
                            break;
                        }
                    }
                    if relx % 2 == 1 {
                        colour = c.get(x - 1, y);
                    }
                }
            }
            c.set(x, y, colour);
        }
        y -= 1;
    }
}

fn skyline(c: &mut Canvas, rng: &mut Rng) {
    let mut r = |n: i64| rng.below(n.max(1) as usize) as i64;
    let mut plan = Vec::new();
    for colour in [2u8, 1] {
        let mut offset = -10;
        while offset < c.width {
            offset += r(8);
            let width = 10 + r(9);
            let height = if colour == 2 {
                c.height / 2 + r(c.height) / 2
            } else {
                c.height / 2 + r(c.height) / 3
            };
            plan.push(Skyscraper {
                xoff: offset,
                width,
                height,
                windows: false,
                colour,
            });
            offset += if colour == 2 { width / 2 } else { width + 1 };
        }
    }
    let mut offset = -10;
    while offset < c.width {
        offset += r(8);
        let mut width = 5 + r(14);
        if width % 4 != 0 {
            width += width % 3;
        }
        let height = c.height / 3 + r(c.height) / 2;
        plan.push(Skyscraper {
            xoff: offset,
            width,
            height,
            windows: true,
            colour: 0,
        });
        offset += width + 5;
    }
    for s in &plan {
        skyscraper(c, s, rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schotter_has_redis_s_size() {
        let mut rng = Rng::new(7);
        let c = schotter(66, 8, 12, &mut rng);
        assert_eq!((c.width, c.height), (132, 196));
        let text = render_braille(&c);
        assert_eq!(text.lines().count(), 49);
        assert!(text.lines().all(|l| l.chars().count() == 66));
    }

    #[test]
    fn skyline_fills_the_canvas() {
        let mut rng = Rng::new(7);
        let mut c = Canvas::new(80, 20, 3);
        skyline(&mut c, &mut rng);
        assert!(c.pixels.contains(&0) && c.pixels.contains(&3));
        assert_eq!(render_colours(&c).lines().count(), 20);
    }
}
