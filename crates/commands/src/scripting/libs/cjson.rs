//! `cjson`: the Lua CJSON 2.1 behaviour Redis bundles: `encode` (numbers as `%.14g`, `/`
//! escaped, sparse-array and nesting limits, tables with only positive integer keys as arrays),
//! `decode` (numbers as Lua numbers, `null` as `cjson.null`; with `decode_invalid_numbers`,
//! CJSON's default, also `inf`, `nan`, hex, `+` and leading zeros as C's `strtod` reads them),
//! with CJSON's error messages; and its configuration functions (`encode_sparse_array`,
//! `encode_max_depth`, `decode_max_depth`, `encode_number_precision`, `encode_keep_buffer`,
//! `encode_invalid_numbers`, `decode_invalid_numbers`) and `new`. The configuration belongs to
//! the module table (`new` makes one with the defaults) and lasts, as in Redis, for the life of
//! the scripting VM.

use std::sync::{Arc, Mutex};

use mlua::{LightUserData, Lua, MultiValue, Table, Value};

use super::{arg_error, fmt_g};

/// CJSON's configuration, with its defaults.
#[derive(Debug, Clone, Copy)]
struct Cfg {
    /// An excessively sparse array is encoded as an object instead of refused.
    sparse_convert: bool,
    /// An array whose largest index is past `sparse_ratio ×` its items (0: never) and past
    /// `sparse_safe` is excessively sparse.
    sparse_ratio: i64,
    sparse_safe: i64,
    /// Nesting encoded or decoded at most.
    encode_max_depth: i64,
    decode_max_depth: i64,
    /// `%.<precision>g` for numbers.
    precision: i64,
    /// NaN and Inf: 0 refused, 1 written as `nan`/`inf`, 2 as `null`.
    encode_invalid: u8,
    decode_invalid: bool,
    /// Kept for its answer only: the encoder keeps no buffer between calls either way.
    keep_buffer: bool,
}

impl Default for Cfg {
    fn default() -> Cfg {
        Cfg {
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            precision: 14,
            encode_invalid: 0,
            decode_invalid: true,
            keep_buffer: true,
        }
    }
}

type Shared = Arc<Mutex<Cfg>>;

fn cfg_of(shared: &Shared) -> Cfg {
    *shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn is_null(v: &Value) -> bool {
    matches!(v, Value::LightUserData(p) if p.0.is_null())
}

fn type_name(v: &Value) -> &'static str {
    super::type_name(Some(v))
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            c if c < 0x20 || c == 0x7f => {
                out.extend_from_slice(format!("\\u{c:04x}").as_bytes());
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

fn encode_number(out: &mut Vec<u8>, n: f64, cfg: &Cfg) -> mlua::Result<()> {
    if n.is_nan() || n.is_infinite() {
        match cfg.encode_invalid {
            0 => {
                return Err(mlua::Error::runtime(
                    "Cannot serialise number: must not be NaN or Inf",
                ));
            }
            // Not `-nan`, whatever the sign bit.
            1 if n.is_nan() => {
                out.extend_from_slice(b"nan");
                return Ok(());
            }
            1 => {}
            _ => {
                out.extend_from_slice(b"null");
                return Ok(());
            }
        }
    }
    out.extend_from_slice(fmt_g(n, cfg.precision as usize).as_bytes());
    Ok(())
}

/// The array length of `t` if all its keys are positive integers (0 for an empty table, which
/// is encoded as an object), `None` if it is an object; an error if excessively sparse (unless
/// such arrays are converted to objects).
fn array_length(t: &Table, cfg: &Cfg) -> mlua::Result<Option<usize>> {
    let (mut max, mut items) = (0f64, 0usize);
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let n = match k {
            Value::Integer(i) => i as f64,
            Value::Number(n) => n,
            _ => return Ok(None),
        };
        if n < 1.0 || n.fract() != 0.0 {
            return Ok(None);
        }
        max = max.max(n);
        items += 1;
    }
    if cfg.sparse_ratio > 0
        && max > items as f64 * cfg.sparse_ratio as f64
        && max > cfg.sparse_safe as f64
    {
        if cfg.sparse_convert {
            return Ok(None);
        }
        return Err(mlua::Error::runtime(
            "Cannot serialise table: excessively sparse array",
        ));
    }
    Ok(if items == 0 { None } else { Some(max as usize) })
}

fn encode_value(out: &mut Vec<u8>, v: &Value, depth: usize, cfg: &Cfg) -> mlua::Result<()> {
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        v if is_null(v) => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(i) => encode_number(out, *i as f64, cfg)?,
        Value::Number(n) => encode_number(out, *n, cfg)?,
        Value::String(s) => encode_string(out, &s.as_bytes()),
        Value::Table(t) => {
            let depth = depth + 1;
            if depth as i64 > cfg.encode_max_depth {
                return Err(mlua::Error::runtime(format!(
                    "Cannot serialise, excessive nesting ({depth})"
                )));
            }
            match array_length(t, cfg)? {
                Some(n) => {
                    out.push(b'[');
                    for i in 1..=n {
                        if i > 1 {
                            out.push(b',');
                        }
                        encode_value(out, &t.raw_get::<Value>(i)?, depth, cfg)?;
                    }
                    out.push(b']');
                }
                None => {
                    out.push(b'{');
                    let mut first = true;
                    for pair in t.pairs::<Value, Value>() {
                        let (k, v) = pair?;
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        match &k {
                            Value::String(s) => encode_string(out, &s.as_bytes()),
                            Value::Integer(i) => {
                                out.push(b'"');
                                encode_number(out, *i as f64, cfg)?;
                                out.push(b'"');
                            }
                            Value::Number(n) => {
                                out.push(b'"');
                                encode_number(out, *n, cfg)?;
                                out.push(b'"');
                            }
                            other => {
                                return Err(mlua::Error::runtime(format!(
                                    "Cannot serialise {}: table key must be a number or string",
                                    type_name(other)
                                )));
                            }
                        }
                        out.push(b':');
                        encode_value(out, &v, depth, cfg)?;
                    }
                    out.push(b'}');
                }
            }
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "Cannot serialise {}: type not supported",
                type_name(other)
            )));
        }
    }
    Ok(())
}

// ---- decoding ----

#[derive(Debug, Clone, PartialEq)]
enum Token {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    Str(Vec<u8>),
    Num(f64),
    Bool(bool),
    Null,
    Colon,
    Comma,
    End,
    /// A lexing error, with CJSON's text for it.
    Error(&'static str),
}

impl Token {
    fn name(&self) -> &'static str {
        match self {
            Token::ObjBegin => "T_OBJ_BEGIN",
            Token::ObjEnd => "T_OBJ_END",
            Token::ArrBegin => "T_ARR_BEGIN",
            Token::ArrEnd => "T_ARR_END",
            Token::Str(_) => "T_STRING",
            Token::Num(_) => "T_NUMBER",
            Token::Bool(_) => "T_BOOLEAN",
            Token::Null => "T_NULL",
            Token::Colon => "T_COLON",
            Token::Comma => "T_COMMA",
            Token::End => "T_END",
            Token::Error(e) => e,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    cfg: Cfg,
}

/// CJSON's `json_is_invalid_number`: whether the number at the start of `s` is one JSON does
/// not allow (a `+`, hex, a leading zero, `inf` or `nan`).
fn is_invalid_number(s: &[u8]) -> bool {
    let mut p = s;
    if p.first() == Some(&b'+') {
        return true;
    }
    if p.first() == Some(&b'-') {
        p = &p[1..];
    }
    match p.first() {
        Some(b'0') => matches!(p.get(1), Some(b'x' | b'X' | b'0'..=b'9')),
        Some(&c) if c <= b'9' => false,
        _ => {
            let word = |w: &[u8]| p.len() >= 3 && p[..3].eq_ignore_ascii_case(w);
            word(b"inf") || word(b"nan")
        }
    }
}

/// C's `strtod` on the start of `s`: the number and the bytes it used (0: none). Decimal,
/// hexadecimal (integer part and fraction, `p` exponent), `inf`, `infinity` and `nan`, with an
/// optional sign.
fn strtod(s: &[u8]) -> (f64, usize) {
    let mut i = 0;
    let mut neg = false;
    if let Some(&c @ (b'+' | b'-')) = s.first() {
        neg = c == b'-';
        i = 1;
    }
    let rest = &s[i..];
    let starts = |w: &[u8]| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w);
    let signed = |v: f64| if neg { -v } else { v };
    if starts(b"infinity") {
        return (signed(f64::INFINITY), i + 8);
    }
    if starts(b"inf") {
        return (signed(f64::INFINITY), i + 3);
    }
    if starts(b"nan") {
        return (signed(f64::NAN), i + 3);
    }
    if rest.len() > 2 && starts(b"0x") && rest[2].is_ascii_hexdigit() {
        let mut j = 2;
        let mut v = 0f64;
        while j < rest.len() && rest[j].is_ascii_hexdigit() {
            v = v * 16.0 + f64::from((rest[j] as char).to_digit(16).unwrap_or(0));
            j += 1;
        }
        if rest.get(j) == Some(&b'.') {
            j += 1;
            let mut scale = 1.0 / 16.0;
            while j < rest.len() && rest[j].is_ascii_hexdigit() {
                v += f64::from((rest[j] as char).to_digit(16).unwrap_or(0)) * scale;
                scale /= 16.0;
                j += 1;
            }
        }
        if matches!(rest.get(j), Some(b'p' | b'P')) {
            let (mut k, mut eneg) = (j + 1, false);
            if let Some(&c @ (b'+' | b'-')) = rest.get(k) {
                eneg = c == b'-';
                k += 1;
            }
            let digits = rest[k..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits > 0 {
                let e: i32 = std::str::from_utf8(&rest[k..k + digits])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(i32::MAX);
                v *= 2f64.powi(if eneg { -e } else { e });
                j = k + digits;
            }
        }
        return (signed(v), i + j);
    }
    // Decimal: digits, an optional fraction, an optional exponent.
    let mut j = 0;
    let digits = |from: usize| {
        rest[from..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let int = digits(0);
    j += int;
    let mut frac = 0;
    if rest.get(j) == Some(&b'.') {
        frac = digits(j + 1);
        if int + frac > 0 {
            j += 1 + frac;
        }
    }
    if int + frac == 0 {
        return (0.0, 0);
    }
    if matches!(rest.get(j), Some(b'e' | b'E')) {
        let mut k = j + 1;
        if matches!(rest.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        let e = digits(k);
        if e > 0 {
            j = k + e;
        }
    }
    let text = std::str::from_utf8(&rest[..j]).unwrap_or("0");
    (signed(text.parse::<f64>().unwrap_or(0.0)), i + j)
}

impl Parser<'_> {
    /// The next token and the 0-based index where it starts.
    fn next(&mut self) -> (Token, usize) {
        while self.pos < self.s.len() && matches!(self.s[self.pos], b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
        let at = self.pos;
        let Some(&c) = self.s.get(self.pos) else {
            return (Token::End, at);
        };
        let single = |t| (t, at);
        match c {
            b'{' => {
                self.pos += 1;
                single(Token::ObjBegin)
            }
            b'}' => {
                self.pos += 1;
                single(Token::ObjEnd)
            }
            b'[' => {
                self.pos += 1;
                single(Token::ArrBegin)
            }
            b']' => {
                self.pos += 1;
                single(Token::ArrEnd)
            }
            b':' => {
                self.pos += 1;
                single(Token::Colon)
            }
            b',' => {
                self.pos += 1;
                single(Token::Comma)
            }
            b'"' => match self.string() {
                // CJSON places this error where the input ended.
                Token::Error(e @ "unexpected end of string") => (Token::Error(e), self.s.len()),
                t => (t, at),
            },
            b'-' | b'0'..=b'9' => {
                if !self.cfg.decode_invalid && is_invalid_number(&self.s[self.pos..]) {
                    return (Token::Error("invalid number"), at);
                }
                (self.number(), at)
            }
            _ => {
                for (word, t) in [
                    (&b"true"[..], Token::Bool(true)),
                    (b"false", Token::Bool(false)),
                    (b"null", Token::Null),
                ] {
                    if self.s[self.pos..].starts_with(word) {
                        self.pos += word.len();
                        return (t, at);
                    }
                }
                if self.cfg.decode_invalid && is_invalid_number(&self.s[self.pos..]) {
                    return (self.number(), at);
                }
                (Token::Error("invalid token"), at)
            }
        }
    }

    /// CJSON reads numbers with `strtod`, whatever follows them.
    fn number(&mut self) -> Token {
        match strtod(&self.s[self.pos..]) {
            (_, 0) => Token::Error("invalid number"),
            (n, used) => {
                self.pos += used;
                Token::Num(n)
            }
        }
    }

    fn string(&mut self) -> Token {
        let mut out = Vec::new();
        self.pos += 1;
        loop {
            let Some(&c) = self.s.get(self.pos) else {
                return Token::Error("unexpected end of string");
            };
            self.pos += 1;
            match c {
                b'"' => return Token::Str(out),
                b'\\' => {
                    let Some(&e) = self.s.get(self.pos) else {
                        return Token::Error("unexpected end of string");
                    };
                    self.pos += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => match self.unicode() {
                            Some(ch) => {
                                let mut buf = [0u8; 4];
                                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            }
                            None => return Token::Error("invalid unicode escape code"),
                        },
                        _ => return Token::Error("invalid escape code"),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.pos..self.pos + 4)?;
        let v = u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
        self.pos += 4;
        Some(v)
    }

    fn unicode(&mut self) -> Option<char> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi) {
            if self.s.get(self.pos..self.pos + 2) != Some(b"\\u") {
                return None;
            }
            self.pos += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return None;
            }
            return char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
        }
        if (0xDC00..0xE000).contains(&hi) {
            return None;
        }
        char::from_u32(hi)
    }
}

fn parse_error(expected: &str, t: &Token, at: usize) -> mlua::Error {
    mlua::Error::runtime(format!(
        "Expected {expected} but found {} at character {}",
        t.name(),
        at + 1
    ))
}

fn decode_value(
    lua: &Lua,
    p: &mut Parser<'_>,
    t: Token,
    at: usize,
    depth: usize,
) -> mlua::Result<Value> {
    Ok(match t {
        Token::Str(s) => Value::String(lua.create_string(&s)?),
        Token::Num(n) => Value::Number(n),
        Token::Bool(b) => Value::Boolean(b),
        Token::Null => null(),
        Token::ObjBegin | Token::ArrBegin => {
            let depth = depth + 1;
            if depth as i64 > p.cfg.decode_max_depth {
                return Err(mlua::Error::runtime(format!(
                    "Found too many nested data structures ({depth}) at character {}",
                    at + 1
                )));
            }
            let table = lua.create_table()?;
            if t == Token::ArrBegin {
                let (mut t, mut at) = p.next();
                if t == Token::ArrEnd {
                    return Ok(Value::Table(table));
                }
                let mut i = 1;
                loop {
                    let v = decode_value(lua, p, t, at, depth)?;
                    table.raw_set(i, v)?;
                    i += 1;
                    let (sep, sat) = p.next();
                    match sep {
                        Token::ArrEnd => break,
                        Token::Comma => {}
                        other => return Err(parse_error("comma or array end", &other, sat)),
                    }
                    (t, at) = p.next();
                }
            } else {
                let (mut t, mut at) = p.next();
                if t == Token::ObjEnd {
                    return Ok(Value::Table(table));
                }
                loop {
                    let Token::Str(key) = t else {
                        return Err(parse_error("object key string", &t, at));
                    };
                    let (colon, cat) = p.next();
                    if colon != Token::Colon {
                        return Err(parse_error("colon", &colon, cat));
                    }
                    let (vt, vat) = p.next();
                    let v = decode_value(lua, p, vt, vat, depth)?;
                    table.raw_set(lua.create_string(&key)?, v)?;
                    let (sep, sat) = p.next();
                    match sep {
                        Token::ObjEnd => break,
                        Token::Comma => {}
                        other => return Err(parse_error("comma or object end", &other, sat)),
                    }
                    (t, at) = p.next();
                }
            }
            Value::Table(table)
        }
        other => return Err(parse_error("value", &other, at)),
    })
}

fn encode(lua: &Lua, args: MultiValue, cfg: &Cfg) -> mlua::Result<mlua::LuaString> {
    if args.len() != 1 {
        return Err(arg_error(1, "encode", "expected 1 argument"));
    }
    let mut out = Vec::new();
    encode_value(&mut out, &args[0], 0, cfg)?;
    lua.create_string(&out)
}

fn decode(lua: &Lua, args: MultiValue, cfg: Cfg) -> mlua::Result<Value> {
    if args.len() != 1 {
        return Err(arg_error(1, "decode", "expected 1 argument"));
    }
    let s = super::check_bytes(&args, 0, "decode")?;
    let mut p = Parser { s: &s, pos: 0, cfg };
    let (t, at) = p.next();
    let v = decode_value(lua, &mut p, t, at, 0)?;
    let (end, eat) = p.next();
    if end != Token::End {
        return Err(parse_error("the end", &end, eat));
    }
    Ok(v)
}

// ---- configuration ----

/// `json_arg_init`: at most `n` arguments.
fn at_most(args: &MultiValue, n: usize, fname: &str) -> mlua::Result<()> {
    if args.len() > n {
        return Err(arg_error(n + 1, fname, "found too many arguments"));
    }
    Ok(())
}

fn given(args: &MultiValue, i: usize) -> bool {
    !matches!(args.get(i), None | Some(Value::Nil))
}

/// `json_integer_option`: argument `i`, if given, an integer in `min..=max` (a range error
/// names argument 1, as CJSON's does).
fn integer_option(
    args: &MultiValue,
    i: usize,
    fname: &str,
    min: i64,
    max: i64,
) -> mlua::Result<Option<i64>> {
    if !given(args, i) {
        return Ok(None);
    }
    let v = super::check_number(args, i, fname)? as i64;
    if !(min..=max).contains(&v) {
        return Err(arg_error(
            1,
            fname,
            &format!("expected integer between {min} and {max}"),
        ));
    }
    Ok(Some(v))
}

/// `json_enum_option`: argument `i`, if given, a boolean (true is `on`) or one of `options`
/// by name; its index.
fn enum_option(
    args: &MultiValue,
    i: usize,
    fname: &str,
    options: &[&str],
) -> mlua::Result<Option<u8>> {
    match args.get(i) {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Boolean(b)) => Ok(Some(*b as u8)),
        Some(Value::String(s)) => {
            let s = s.as_bytes();
            match options.iter().position(|o| o.as_bytes() == &s[..]) {
                Some(n) => Ok(Some(n as u8)),
                None => Err(arg_error(
                    i + 1,
                    fname,
                    &format!("invalid option '{}'", String::from_utf8_lossy(&s)),
                )),
            }
        }
        other => Err(arg_error(
            i + 1,
            fname,
            &format!("string expected, got {}", super::type_name(other)),
        )),
    }
}

const BOOL_OPTIONS: &[&str] = &["off", "on"];

/// A configuration function: checks at most `n` arguments, applies `set` to the shared
/// configuration and answers what `get` reads of it then.
fn cfg_function(
    lua: &Lua,
    shared: &Shared,
    name: &'static str,
    n: usize,
    set: fn(&mut Cfg, &MultiValue, &'static str) -> mlua::Result<()>,
    get: fn(&Lua, &Cfg) -> mlua::Result<MultiValue>,
) -> mlua::Result<mlua::Function> {
    let shared = shared.clone();
    lua.create_function(move |lua, args: MultiValue| {
        at_most(&args, n, name)?;
        let mut cfg = cfg_of(&shared);
        set(&mut cfg, &args, name)?;
        *shared.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
        get(lua, &cfg)
    })
}

fn int(v: i64) -> Value {
    Value::Integer(v)
}

/// A module table with its own configuration (the defaults).
fn module(lua: &Lua) -> mlua::Result<Table> {
    let shared: Shared = Arc::new(Mutex::new(Cfg::default()));
    let t = lua.create_table()?;
    let s = shared.clone();
    t.raw_set(
        "encode",
        lua.create_function(move |lua, args: MultiValue| encode(lua, args, &cfg_of(&s)))?,
    )?;
    let s = shared.clone();
    t.raw_set(
        "decode",
        lua.create_function(move |lua, args: MultiValue| decode(lua, args, cfg_of(&s)))?,
    )?;
    let f = cfg_function(
        lua,
        &shared,
        "encode_sparse_array",
        3,
        |c, a, name| {
            if let Some(v) = enum_option(a, 0, name, BOOL_OPTIONS)? {
                c.sparse_convert = v == 1;
            }
            if let Some(v) = integer_option(a, 1, name, 0, i64::from(i32::MAX))? {
                c.sparse_ratio = v;
            }
            if let Some(v) = integer_option(a, 2, name, 0, i64::from(i32::MAX))? {
                c.sparse_safe = v;
            }
            Ok(())
        },
        |_, c| {
            Ok(MultiValue::from_iter([
                Value::Boolean(c.sparse_convert),
                int(c.sparse_ratio),
                int(c.sparse_safe),
            ]))
        },
    )?;
    t.raw_set("encode_sparse_array", f)?;
    let f = cfg_function(
        lua,
        &shared,
        "encode_max_depth",
        1,
        |c, a, name| {
            if let Some(v) = integer_option(a, 0, name, 1, i64::from(i32::MAX))? {
                c.encode_max_depth = v;
            }
            Ok(())
        },
        |_, c| Ok(MultiValue::from_iter([int(c.encode_max_depth)])),
    )?;
    t.raw_set("encode_max_depth", f)?;
    let f = cfg_function(
        lua,
        &shared,
        "decode_max_depth",
        1,
        |c, a, name| {
            if let Some(v) = integer_option(a, 0, name, 1, i64::from(i32::MAX))? {
                c.decode_max_depth = v;
            }
            Ok(())
        },
        |_, c| Ok(MultiValue::from_iter([int(c.decode_max_depth)])),
    )?;
    t.raw_set("decode_max_depth", f)?;
    let f = cfg_function(
        lua,
        &shared,
        "encode_number_precision",
        1,
        |c, a, name| {
            if let Some(v) = integer_option(a, 0, name, 1, 14)? {
                c.precision = v;
            }
            Ok(())
        },
        |_, c| Ok(MultiValue::from_iter([int(c.precision)])),
    )?;
    t.raw_set("encode_number_precision", f)?;
    let f = cfg_function(
        lua,
        &shared,
        "encode_keep_buffer",
        1,
        |c, a, name| {
            if let Some(v) = enum_option(a, 0, name, BOOL_OPTIONS)? {
                c.keep_buffer = v == 1;
            }
            Ok(())
        },
        |_, c| Ok(MultiValue::from_iter([Value::Boolean(c.keep_buffer)])),
    )?;
    t.raw_set("encode_keep_buffer", f)?;
    let f = cfg_function(
        lua,
        &shared,
        "encode_invalid_numbers",
        1,
        |c, a, name| {
            if let Some(v) = enum_option(a, 0, name, &["off", "on", "null"])? {
                c.encode_invalid = v;
            }
            Ok(())
        },
        |lua, c| {
            Ok(MultiValue::from_iter([match c.encode_invalid {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => Value::String(lua.create_string("null")?),
            }]))
        },
    )?;
    t.raw_set("encode_invalid_numbers", f)?;
    let f = cfg_function(
        lua,
        &shared,
        "decode_invalid_numbers",
        1,
        |c, a, name| {
            if let Some(v) = enum_option(a, 0, name, BOOL_OPTIONS)? {
                c.decode_invalid = v == 1;
            }
            Ok(())
        },
        |_, c| Ok(MultiValue::from_iter([Value::Boolean(c.decode_invalid)])),
    )?;
    t.raw_set("decode_invalid_numbers", f)?;
    t.raw_set("new", lua.create_function(|lua, ()| module(lua))?)?;
    t.raw_set("null", null())?;
    t.raw_set("_NAME", "cjson")?;
    t.raw_set("_VERSION", "2.1.0")?;
    Ok(t)
}

pub fn open(lua: &Lua) -> mlua::Result<Table> {
    module(lua)
}
