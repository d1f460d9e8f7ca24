//! `cmsgpack`: MessagePack as Redis's bundled lua-cmsgpack 0.4: `pack(...)` (integers in the
//! smallest encoding, floats as float32 when exact, tables with keys 1..n as arrays, others as
//! maps, nesting past 16 packed as nil), `unpack(s)`, `unpack_one(s [, offset])` and
//! `unpack_limit(s, limit [, offset])`, with its error messages.

use mlua::{Lua, MultiValue, Table, Value};

/// Nesting lua-cmsgpack packs; deeper tables become nil.
const MAX_NESTING: usize = 16;

fn encode_int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        let n = n as u64;
        if n <= 127 {
            out.push(n as u8);
        } else if n <= 0xff {
            out.extend_from_slice(&[0xcc, n as u8]);
        } else if n <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else if n <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= -128 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -2_147_483_648 {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_number(out: &mut Vec<u8>, n: f64) {
    if n.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&n) {
        encode_int(out, n as i64);
    } else if (n as f32) as f64 == n || n.is_nan() {
        out.push(0xca);
        out.extend_from_slice(&(n as f32).to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_len(out: &mut Vec<u8>, n: usize, fix: (u8, usize), codes: [u8; 3], has8: bool) {
    if n < fix.1 {
        out.push(fix.0 | n as u8);
    } else if has8 && n <= 0xff {
        out.extend_from_slice(&[codes[0], n as u8]);
    } else if n <= 0xffff {
        out.push(codes[1]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(codes[2]);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// `Some(n)` when the table's keys are exactly 1..n (an empty table is an empty array).
fn array_len(t: &Table) -> mlua::Result<Option<usize>> {
    let (mut max, mut count) = (0f64, 0usize);
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let n = match k {
            Value::Integer(i) => i as f64,
            Value::Number(n) => n,
            _ => return Ok(None),
        };
        if n <= 0.0 || n.fract() != 0.0 {
            return Ok(None);
        }
        max = max.max(n);
        count += 1;
    }
    Ok((max == count as f64).then_some(count))
}

fn encode_value(out: &mut Vec<u8>, v: &Value, level: usize) -> mlua::Result<()> {
    match v {
        Value::Nil => out.push(0xc0),
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(i) => encode_int(out, *i),
        Value::Number(n) => encode_number(out, *n),
        Value::String(s) => {
            let b = s.as_bytes();
            encode_len(out, b.len(), (0xa0, 32), [0xd9, 0xda, 0xdb], true);
            out.extend_from_slice(&b);
        }
        Value::Table(t) if level < MAX_NESTING => match array_len(t)? {
            Some(n) => {
                encode_len(out, n, (0x90, 16), [0, 0xdc, 0xdd], false);
                for i in 1..=n {
                    encode_value(out, &t.raw_get::<Value>(i)?, level + 1)?;
                }
            }
            None => {
                // Counted first, then encoded pair by pair: holding every pair at once would
                // hold as many Lua references (a big map runs out of Lua stack).
                let mut n = 0;
                for pair in t.pairs::<Value, Value>() {
                    pair?;
                    n += 1;
                }
                encode_len(out, n, (0x80, 16), [0, 0xde, 0xdf], false);
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    encode_value(out, &k, level + 1)?;
                    encode_value(out, &v, level + 1)?;
                }
            }
        },
        _ => out.push(0xc0),
    }
    Ok(())
}

fn pack(lua: &Lua, args: MultiValue) -> mlua::Result<mlua::LuaString> {
    if args.is_empty() {
        return Err(super::arg_error(0, "pack", "MessagePack pack needs input."));
    }
    let mut out = Vec::new();
    for v in args.iter() {
        encode_value(&mut out, v, 0)?;
    }
    lua.create_string(&out)
}

struct Decoder<'a> {
    s: &'a [u8],
    pos: usize,
}

/// Why decoding stopped.
enum DecodeError {
    Missing,
    Bad,
    Lua(mlua::Error),
}

impl From<mlua::Error> for DecodeError {
    fn from(e: mlua::Error) -> Self {
        DecodeError::Lua(e)
    }
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.s.len() - self.pos < n {
            return Err(DecodeError::Missing);
        }
        let b = &self.s[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn uint(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    fn value(&mut self, lua: &Lua) -> Result<Value, DecodeError> {
        let c = self.take(1)?[0];
        Ok(match c {
            0x00..=0x7f => Value::Number(c as f64),
            0xe0..=0xff => Value::Number(c as i8 as f64),
            0xa0..=0xbf => self.string(lua, (c & 0x1f) as usize)?,
            0x90..=0x9f => self.array(lua, (c & 0x0f) as usize)?,
            0x80..=0x8f => self.map(lua, (c & 0x0f) as usize)?,
            0xc0 => Value::Nil,
            0xc2 => Value::Boolean(false),
            0xc3 => Value::Boolean(true),
            0xcc => Value::Number(self.uint(1)? as f64),
            0xcd => Value::Number(self.uint(2)? as f64),
            0xce => Value::Number(self.uint(4)? as f64),
            0xcf => Value::Number(self.uint(8)? as f64),
            0xd0 => Value::Number(self.uint(1)? as u8 as i8 as f64),
            0xd1 => Value::Number(self.uint(2)? as u16 as i16 as f64),
            0xd2 => Value::Number(self.uint(4)? as u32 as i32 as f64),
            0xd3 => Value::Number(self.uint(8)? as i64 as f64),
            0xca => Value::Number(f32::from_bits(self.uint(4)? as u32) as f64),
            0xcb => Value::Number(f64::from_bits(self.uint(8)?)),
            0xd9 | 0xc4 => {
                let n = self.uint(1)? as usize;
                self.string(lua, n)?
            }
            0xda | 0xc5 => {
                let n = self.uint(2)? as usize;
                self.string(lua, n)?
            }
            0xdb | 0xc6 => {
                let n = self.uint(4)? as usize;
                self.string(lua, n)?
            }
            0xdc => {
                let n = self.uint(2)? as usize;
                self.array(lua, n)?
            }
            0xdd => {
                let n = self.uint(4)? as usize;
                self.array(lua, n)?
            }
            0xde => {
                let n = self.uint(2)? as usize;
                self.map(lua, n)?
            }
            0xdf => {
                let n = self.uint(4)? as usize;
                self.map(lua, n)?
            }
            _ => return Err(DecodeError::Bad),
        })
    }

    fn string(&mut self, lua: &Lua, n: usize) -> Result<Value, DecodeError> {
        let b = self.take(n)?.to_vec();
        Ok(Value::String(lua.create_string(&b)?))
    }

    fn array(&mut self, lua: &Lua, n: usize) -> Result<Value, DecodeError> {
        // Each element takes at least a byte: a claimed length beyond the input is missing
        // bytes, found before anything is allocated for it.
        if n > self.s.len() - self.pos {
            return Err(DecodeError::Missing);
        }
        let t = lua.create_table_with_capacity(n, 0)?;
        for i in 1..=n {
            let v = self.value(lua)?;
            t.raw_set(i, v)?;
        }
        Ok(Value::Table(t))
    }

    fn map(&mut self, lua: &Lua, n: usize) -> Result<Value, DecodeError> {
        if n.saturating_mul(2) > self.s.len() - self.pos {
            return Err(DecodeError::Missing);
        }
        let t = lua.create_table()?;
        for _ in 0..n {
            let k = self.value(lua)?;
            let v = self.value(lua)?;
            if !k.is_nil() {
                t.raw_set(k, v)?;
            }
        }
        Ok(Value::Table(t))
    }
}

/// Decodes up to `limit` values (0: all) from `offset`; with `with_offset`, the offset after
/// the last one comes first (-1 at the end of the input), as `unpack_one`/`unpack_limit`.
fn unpack_full(
    lua: &Lua,
    s: &[u8],
    limit: usize,
    offset: usize,
    with_offset: bool,
) -> mlua::Result<MultiValue> {
    if offset > s.len() {
        return Err(mlua::Error::runtime(
            "Start offset greater than input length.",
        ));
    }
    let mut d = Decoder { s, pos: offset };
    let mut values = Vec::new();
    while d.pos < s.len() && (limit == 0 || values.len() < limit) {
        match d.value(lua) {
            Ok(v) => values.push(v),
            Err(DecodeError::Missing) => {
                return Err(mlua::Error::runtime("Missing bytes in input."));
            }
            Err(DecodeError::Bad) => {
                return Err(mlua::Error::runtime("Bad data format in input."));
            }
            Err(DecodeError::Lua(e)) => return Err(e),
        }
    }
    let mut out = Vec::with_capacity(values.len() + 1);
    if with_offset {
        let next = if d.pos >= s.len() { -1 } else { d.pos as i64 };
        out.push(Value::Number(next as f64));
    }
    out.extend(values);
    Ok(out.into_iter().collect())
}

fn int_arg(args: &MultiValue, i: usize, fname: &str) -> mlua::Result<usize> {
    match args.get(i) {
        None | Some(Value::Nil) => Ok(0),
        _ => Ok(super::check_number(args, i, fname)?.max(0.0) as usize),
    }
}

pub fn open(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("pack", lua.create_function(pack)?)?;
    t.raw_set(
        "unpack",
        lua.create_function(|lua, args: MultiValue| {
            let s = super::check_bytes(&args, 0, "unpack")?;
            unpack_full(lua, &s, 0, 0, false)
        })?,
    )?;
    t.raw_set(
        "unpack_one",
        lua.create_function(|lua, args: MultiValue| {
            let s = super::check_bytes(&args, 0, "unpack_one")?;
            let offset = int_arg(&args, 1, "unpack_one")?;
            unpack_full(lua, &s, 1, offset, true)
        })?,
    )?;
    t.raw_set(
        "unpack_limit",
        lua.create_function(|lua, args: MultiValue| {
            let s = super::check_bytes(&args, 0, "unpack_limit")?;
            let limit = int_arg(&args, 1, "unpack_limit")?;
            let offset = int_arg(&args, 2, "unpack_limit")?;
            unpack_full(lua, &s, limit, offset, true)
        })?,
    )?;
    Ok(t)
}
