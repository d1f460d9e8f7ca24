//! The libraries Redis gives scripts beyond Lua's own, written in Rust as Lua functions with
//! the behaviour of the C modules Redis bundles: `bit` (LuaBitOp). (`cjson`, `cmsgpack` and
//! `struct` are not written yet: scripts see them as missing globals.)

pub mod bit;

use mlua::{MultiValue, Value};

/// C's `%.<prec>g` (no `#` flag): Lua's `tostring` of numbers is `%.14g`, cjson's `%.14g`.
pub fn fmt_g(v: f64, prec: usize) -> String {
    if v.is_nan() {
        return if v.is_sign_negative() {
            "-nan".into()
        } else {
            "nan".into()
        };
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let p = prec.max(1);
    let s = format!("{:.*e}", p - 1, v);
    let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    if e < -4 || e >= p as i32 {
        let mant = trim_zeros(mant);
        let sign = if e < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", e.abs())
    } else {
        let decimals = (p as i32 - 1 - e).max(0) as usize;
        trim_zeros(&format!("{:.*}", decimals, v)).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Lua's name for a value's type, for argument errors.
pub fn type_name(v: Option<&Value>) -> &'static str {
    match v {
        None => "no value",
        Some(v) => match v {
            Value::Nil => "nil",
            Value::Boolean(_) => "boolean",
            Value::Integer(_) | Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Table(_) => "table",
            Value::Function(_) => "function",
            Value::Thread(_) => "thread",
            Value::UserData(_) | Value::LightUserData(_) | Value::Error(_) => "userdata",
            _ => "userdata",
        },
    }
}

/// `luaL_argerror`'s message.
pub fn arg_error(n: usize, fname: &str, msg: &str) -> mlua::Error {
    mlua::Error::runtime(format!("bad argument #{n} to '{fname}' ({msg})"))
}

/// `luaL_checknumber`: a number, or a string that reads as one.
pub fn check_number(args: &MultiValue, i: usize, fname: &str) -> mlua::Result<f64> {
    match args.get(i) {
        Some(Value::Integer(n)) => Ok(*n as f64),
        Some(Value::Number(n)) => Ok(*n),
        Some(Value::String(s)) => parse_lua_number(&s.as_bytes())
            .ok_or_else(|| arg_error(i + 1, fname, "number expected, got string")),
        other => Err(arg_error(
            i + 1,
            fname,
            &format!("number expected, got {}", type_name(other)),
        )),
    }
}

/// `luaL_checklstring`: a string, or a number as its text.
pub fn check_bytes(args: &MultiValue, i: usize, fname: &str) -> mlua::Result<Vec<u8>> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
        Some(Value::Integer(n)) => Ok(n.to_string().into_bytes()),
        Some(Value::Number(n)) => Ok(fmt_g(*n, 14).into_bytes()),
        other => Err(arg_error(
            i + 1,
            fname,
            &format!("string expected, got {}", type_name(other)),
        )),
    }
}

/// Lua 5.1's string-to-number (`lua_str2number` plus hex): surrounding spaces allowed.
pub fn parse_lua_number(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?.trim();
    if s.is_empty() {
        return None;
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        let v = u64::from_str_radix(hex, 16).ok()? as f64;
        return Some(if neg { -v } else { v });
    }
    if body
        .chars()
        .any(|c| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E'))
        && !matches!(
            body.to_ascii_lowercase().as_str(),
            "inf" | "nan" | "infinity"
        )
    {
        return None;
    }
    s.parse::<f64>().ok()
}
