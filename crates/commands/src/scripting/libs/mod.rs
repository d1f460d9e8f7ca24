//! The libraries Redis gives scripts beyond Lua's own: `bit` (LuaBitOp), `struct`, `cjson` and
//! `cmsgpack`, written in Rust as Lua functions with the behaviour of the C modules Redis
//! bundles (their formats, number formatting and error messages).

pub mod bit;
pub mod cjson;
pub mod cmsgpack;
pub mod structlib;

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

#[cfg(test)]
mod tests {
    use mlua::Lua;
    use proptest::prelude::*;

    fn lua() -> Lua {
        let lua = Lua::new();
        let g = lua.globals();
        g.set("cjson", super::cjson::open(&lua).unwrap()).unwrap();
        g.set("cmsgpack", super::cmsgpack::open(&lua).unwrap())
            .unwrap();
        g.set("struct", super::structlib::open(&lua).unwrap())
            .unwrap();
        lua
    }

    #[test]
    fn fmt_g_is_c_printf() {
        assert_eq!(super::fmt_g(0.1, 14), "0.1");
        assert_eq!(super::fmt_g(1e20, 14), "1e+20");
        assert_eq!(super::fmt_g(123456789012345.0, 14), "1.2345678901234e+14");
        assert_eq!(super::fmt_g(-0.000001, 14), "-1e-06");
        assert_eq!(super::fmt_g(100.0, 14), "100");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Strings and integers survive cmsgpack and cjson; integers of every width survive
        /// struct's `i8`: the model is the values themselves.
        #[test]
        fn round_trips(
            strings in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            ints in proptest::collection::vec(-(1i64 << 52)..(1i64 << 52), 0..8),
        ) {
            let lua = lua();
            let s: Vec<mlua::LuaString> =
                strings.iter().map(|b| lua.create_string(b).unwrap()).collect();
            let t = lua.create_sequence_from(s.clone()).unwrap();
            let n = lua.create_sequence_from(ints.iter().map(|&i| i as f64)).unwrap();
            lua.globals().set("S", t).unwrap();
            lua.globals().set("N", n).unwrap();
            let ok: bool = lua
                .load(
                    r#"
                    local function same(a, b)
                      if #a ~= #b then return false end
                      for i = 1, #a do if a[i] ~= b[i] then return false end end
                      return true
                    end
                    local s2, n2 = cmsgpack.unpack(cmsgpack.pack(S, N))
                    if not same(S, s2) or not same(N, n2) then return false end
                    if not same(N, cjson.decode(cjson.encode(N)) ) and #N > 0 then
                      -- cjson keeps 14 significant digits: compare through the same format
                      for i = 1, #N do
                        if tonumber(string.format('%.14g', N[i])) ~= cjson.decode(cjson.encode(N))[i] then
                          return false
                        end
                      end
                    end
                    for i = 1, #N do
                      local v = struct.unpack('>i8', struct.pack('>i8', N[i]))
                      if v ~= N[i] then return false end
                    end
                    for i = 1, #S do
                      local v = struct.unpack('s', struct.pack('s', (string.gsub(S[i], '%z', ''))))
                      if v ~= (string.gsub(S[i], '%z', '')) then return false end
                    end
                    return true
                    "#,
                )
                .eval()
                .unwrap();
            prop_assert!(ok);
        }

        /// Arbitrary bytes never panic the decoders (they decode or raise an error). Each is
        /// called from a chunk, not through Lua's `pcall`: Lua 5.1's `luaB_pcall` pushes its
        /// status after a call with any number of results without making room, which its own
        /// API check (on in debug builds of the vendored Lua) aborts on once the callee returned
        /// about 20 values (64 one-byte msgpack integers do); release builds, like Redis's, have
        /// the room and no check.
        #[test]
        fn decoders_take_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let lua = lua();
            lua.globals().set("D", lua.create_string(&data).unwrap()).unwrap();
            for call in ["cmsgpack.unpack(D)", "cjson.decode(D)", "struct.unpack('i4 s', D)"] {
                let decoded = lua.load(format!("return {call}")).eval::<mlua::MultiValue>();
                if let Err(e) = decoded {
                    prop_assert!(matches!(e, mlua::Error::RuntimeError(_) | mlua::Error::CallbackError { .. }), "{call}: {e}");
                }
            }
        }
    }
}
