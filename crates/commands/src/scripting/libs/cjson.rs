//! `cjson`: the Lua CJSON 2.1 behaviour Redis bundles: `encode` (numbers as `%.14g`, `/`
//! escaped, sparse-array and nesting limits, tables with only positive integer keys as arrays),
//! `decode` (numbers as Lua numbers, `null` as `cjson.null`), with CJSON's error messages.
//! The configuration functions (`encode_keep_buffer` and the like) are not offered.

use mlua::{LightUserData, Lua, MultiValue, Table, Value};

use super::{arg_error, fmt_g};

/// Nesting CJSON encodes or decodes at most (its default).
const MAX_DEPTH: usize = 1000;
/// An array whose largest index is past `SPARSE_RATIO ×` its items (and past `SPARSE_SAFE`) is
/// refused as "excessively sparse" (CJSON's defaults).
const SPARSE_RATIO: f64 = 2.0;
const SPARSE_SAFE: f64 = 10.0;

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

fn encode_number(out: &mut Vec<u8>, n: f64) -> mlua::Result<()> {
    if n.is_nan() || n.is_infinite() {
        return Err(mlua::Error::runtime(
            "Cannot serialise number: must not be NaN or Inf",
        ));
    }
    out.extend_from_slice(fmt_g(n, 14).as_bytes());
    Ok(())
}

/// The array length of `t` if all its keys are positive integers (0 for an empty table, which
/// is encoded as an object), `None` if it is an object; an error if excessively sparse.
fn array_length(t: &Table) -> mlua::Result<Option<usize>> {
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
    if max > items as f64 * SPARSE_RATIO && max > SPARSE_SAFE {
        return Err(mlua::Error::runtime(
            "Cannot serialise table: excessively sparse array",
        ));
    }
    Ok(if items == 0 { None } else { Some(max as usize) })
}

fn encode_value(out: &mut Vec<u8>, v: &Value, depth: usize) -> mlua::Result<()> {
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        v if is_null(v) => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(i) => encode_number(out, *i as f64)?,
        Value::Number(n) => encode_number(out, *n)?,
        Value::String(s) => encode_string(out, &s.as_bytes()),
        Value::Table(t) => {
            let depth = depth + 1;
            if depth > MAX_DEPTH {
                return Err(mlua::Error::runtime(format!(
                    "Cannot serialise, excessive nesting ({depth})"
                )));
            }
            match array_length(t)? {
                Some(n) => {
                    out.push(b'[');
                    for i in 1..=n {
                        if i > 1 {
                            out.push(b',');
                        }
                        encode_value(out, &t.raw_get::<Value>(i)?, depth)?;
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
                                encode_number(out, *i as f64)?;
                                out.push(b'"');
                            }
                            Value::Number(n) => {
                                out.push(b'"');
                                encode_number(out, *n)?;
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
                        encode_value(out, &v, depth)?;
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
            b'-' | b'0'..=b'9' => (self.number(), at),
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
                (Token::Error("invalid token"), at)
            }
        }
    }

    fn number(&mut self) -> Token {
        let start = self.pos;
        let mut end = start;
        while end < self.s.len()
            && matches!(self.s[end], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        {
            end += 1;
        }
        let text = std::str::from_utf8(&self.s[start..end]).unwrap_or("");
        match text.parse::<f64>() {
            Ok(n) if !text.is_empty() => {
                self.pos = end;
                Token::Num(n)
            }
            _ => Token::Error("invalid number"),
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
            if depth > MAX_DEPTH {
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

fn encode(lua: &Lua, args: MultiValue) -> mlua::Result<mlua::LuaString> {
    if args.len() != 1 {
        return Err(arg_error(1, "encode", "expected 1 argument"));
    }
    let mut out = Vec::new();
    encode_value(&mut out, &args[0], 0)?;
    lua.create_string(&out)
}

fn decode(lua: &Lua, args: MultiValue) -> mlua::Result<Value> {
    if args.len() != 1 {
        return Err(arg_error(1, "decode", "expected 1 argument"));
    }
    let s = super::check_bytes(&args, 0, "decode")?;
    let mut p = Parser { s: &s, pos: 0 };
    let (t, at) = p.next();
    let v = decode_value(lua, &mut p, t, at, 0)?;
    let (end, eat) = p.next();
    if end != Token::End {
        return Err(parse_error("the end", &end, eat));
    }
    Ok(v)
}

pub fn open(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("encode", lua.create_function(encode)?)?;
    t.raw_set("decode", lua.create_function(decode)?)?;
    t.raw_set("null", null())?;
    Ok(t)
}
