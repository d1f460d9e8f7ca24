-- shoal's scripting sandbox, run once per Lua VM (chunk name "=shoal") with the standard
-- libraries loaded and the Redis libraries (redis, cjson, cmsgpack, bit, struct) in place.
-- It leaves only the globals Redis 7.0 offers, makes them read-only the way Redis's patched
-- Lua does (assigning a global or a library field raises "Attempt to modify a readonly table",
-- reading a missing global raises "Script attempted to access nonexistent global variable").
--
-- Stock Lua 5.1 has no read-only tables, so the globals live in a hidden table `G` and the
-- real globals table stays empty behind a metatable; libraries are replaced by empty proxies
-- whose metatable reads through. `pairs` sees through the proxies; `rawset` refuses them.
local internal = ...
local G = {}
local real = _G
local error, tostring, setmetatable, rawset, next, type = error, tostring, setmetatable, rawset, next, type

local keep = {
  'assert', 'collectgarbage', 'coroutine', 'error', 'gcinfo', 'getmetatable', 'ipairs', 'load',
  'loadstring', 'math', 'next', 'pairs', 'pcall', 'rawequal', 'rawget', 'rawset', 'select',
  'setmetatable', 'string', 'table', 'tonumber', 'tostring', 'type', 'unpack', 'xpcall',
  '_VERSION', 'redis', 'cjson', 'cmsgpack', 'bit', 'struct',
}
for _, name in ipairs(keep) do G[name] = real[name] end
internal.xpcall = real.xpcall
-- Redis leaves its error handler in the globals; scripts may call it.
G.__redis__err__handler = function(err)
  if type(err) ~= 'table' then err = { err = 'ERR ' .. tostring(err) } end
  return err
end

local function readonly_error() error('Attempt to modify a readonly table', 2) end
local protected = {}   -- proxy -> the table it reads through
local metatables = {}  -- a protected table -> what getmetatable shows of its metatable (false: none)
local function readonly(t)
  local proxy = {}
  local mt = { __index = t, __newindex = readonly_error, __metatable = false }
  setmetatable(proxy, mt)
  protected[proxy] = t
  return proxy, mt
end
-- The protected tables' metatables are read-only too, as Redis's: setmetatable on a protected
-- table is refused; getmetatable shows the globals' as a read-only view and a library's as
-- none (Redis's read-only library tables have no metatable).
local function protect_metatable(t, mt)
  if mt == nil then
    metatables[t] = false
    return
  end
  local view = {}
  setmetatable(view, { __index = mt, __newindex = readonly_error, __metatable = false })
  protected[view] = mt
  metatables[t] = view
end

for _, name in ipairs({ 'string', 'table', 'math', 'coroutine', 'redis', 'cjson', 'cmsgpack', 'bit', 'struct' }) do
  local proxy = readonly(G[name])
  protect_metatable(proxy, nil)
  G[name] = proxy
end
local real_getmetatable = getmetatable
-- Strings' metatable as a script sees it: its __index is the `string` library the script sees.
local string_mt = {}
setmetatable(string_mt, {
  __index = { __index = G.string }, __newindex = readonly_error, __metatable = false,
})
G.getmetatable = function(t)
  if type(t) == 'string' then return string_mt end
  local view = metatables[t]
  if view ~= nil then return view or nil end
  return real_getmetatable(t)
end
G.setmetatable = function(t, mt)
  if metatables[t] ~= nil then error('Attempt to modify a readonly table', 0) end
  return setmetatable(t, mt)
end

G.pairs = function(t)
  local through = protected[t]
  if through then return next, through, nil end
  if t == real then return next, G, nil end
  return next, t, nil
end
G.rawset = function(t, k, v)
  if protected[t] or t == real then error('Attempt to modify a readonly table', 0) end
  return rawset(t, k, v)
end
G._G = real

-- Binary chunks are read as text, as Redis's Lua reads every chunk (precompiled bytecode is
-- not checked by Lua 5.1 and can corrupt the VM): they fail to parse, so load and loadstring
-- return nil and the parser's message. A leading space keeps the text parser from seeing the
-- signature byte; the chunk keeps its name.
local real_loadstring, real_load, sbyte = real.loadstring, real.load, string.byte
local ESC = 27
G.loadstring = function(s, name)
  if type(s) == 'string' and sbyte(s, 1) == ESC then
    return real_loadstring(' ' .. s, name or s)
  end
  return real_loadstring(s, name)
end
G.load = function(f, name)
  if type(f) ~= 'function' then return real_load(f, name) end
  local first = true
  return real_load(function()
    local piece = f()
    if first then
      first = false
      if type(piece) == 'string' and sbyte(piece, 1) == ESC then piece = ' ' .. piece end
    end
    return piece
  end, name or '=(load)')
end

-- pcall and xpcall see a library function's error as Redis's C functions raise it: its message
-- (or redis.call's error table), not the wrapped Rust error the binding raises. pcall is
-- Redis 7.0's: an error table with an `err` string (or number) gives that instead.
-- A script killed by SCRIPT KILL (or FUNCTION KILL) stays killed: neither catches that error,
-- it goes on up (Redis gets there by calling its hook on every line once killed).
local real_pcall, real_xpcall, select, unpack = real.pcall, real.xpcall, select, real.unpack
local plain, KILLED = internal.error_value, internal.KILLED
local function caught(ok, ...)
  if ok then return true, ... end
  local raw = (...)
  local e = plain(raw)
  if e == KILLED then error(raw, 0) end
  if type(e) == 'table' then
    local m = e.err
    if type(m) == 'string' or type(m) == 'number' then e = m end
  end
  return false, e
end
local function pack(...) return { n = select('#', ...), ... } end
G.pcall = function(...)
  -- Redis 7.0's pcall() with nothing to call answers this (recorded from redis-server 7.0.15).
  if select('#', ...) == 0 then return false, 'attempt to call a boolean value' end
  return caught(real_pcall(...))
end
G.xpcall = function(f, handler)
  local killed
  local r = pack(real_xpcall(f, function(e)
    local p = plain(e)
    if p == KILLED then
      killed = e
      return e
    end
    return handler(p)
  end))
  if killed ~= nil then error(killed, 0) end
  return unpack(r, 1, r.n)
end

-- Functions: while a library loads, globals read from `load_api` (only a `redis` table with
-- register_function and the logging API), as Redis swaps its globals' __index.
local api = G
local load_api = {}
internal.set_load_api = function(on)
  if on then api = load_api else api = G end
end
internal.install_load_api = function(r)
  local proxy = {}
  setmetatable(proxy, {
    __index = function(_, k)
      local v = r[k]
      if v == nil then
        error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
      end
      return v
    end,
    __newindex = readonly_error,
    __metatable = false,
  })
  protected[proxy] = r
  load_api.redis = proxy
end
-- Calls f(keys, args) (a function's callback) under xpcall, which passes no arguments in 5.1.
internal.bind = function(f, k, a)
  return function() return f(k, a) end
end

for k in next, real do real[k] = nil end
local globals_mt = {
  __index = function(_, k)
    local v = api[k]
    if v == nil then
      error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
    end
    return v
  end,
  __newindex = readonly_error,
  __metatable = false,
}
setmetatable(real, globals_mt)
protect_metatable(real, globals_mt)
return G
