-- tests/soak/generate.lua — random programs against the guard's promise.
--
--   lua5.4 tests/soak/generate.lua HOST COUNT [SEED]
--
-- HOST is the luaguard program, or "lua5.4" for module mode (stock lua5.4,
-- require "luaguard", LUA_PATH/LUA_CPATH set by the caller); half the
-- programs of a host run go through stock lua5.4 and require "luaguard" when
-- MODULE_LUA_PATH and MODULE_LUA_CPATH say where the module is.
--
-- Each program arms handlers (ErrorHandler or ExitHandler, in the main thread
-- or in a coroutine left suspended), registers cleanups, closes handlers in
-- any order, sends itself signals from the body or from a cleanup, and may
-- end with os.exit(n, true). It runs for real through the host; its cleanup
-- log (stdout) and exit status are compared with what predict() says the
-- spec (and tests/model/deferral.pml) requires:
--   - a signal in the body stops it; every open handler then runs its
--     cleanups, newest first (ErrorHandlers included), and the process dies
--     by the first signal;
--   - a signal sent by a cleanup is deferred: that cleanup and the others of
--     its handler finish; then it stops the block (or, at the state's close,
--     goes on to the host's frame and ends the process after the closes);
--   - a handler closed normally runs its cleanups only if it is an
--     ExitHandler; each cleanup runs at most once.
-- TAP on stdout: one line for the whole run, the failing programs below it.

local host, count, seed = arg[1], tonumber(arg[2] or "500"), tonumber(arg[3] or os.time())
local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local module_env = os.getenv("MODULE_LUA_PATH") and os.getenv("MODULE_LUA_CPATH") and
  ("LUA_PATH=%s LUA_CPATH=%s"):format(quote(os.getenv("MODULE_LUA_PATH")),
                                      quote(os.getenv("MODULE_LUA_CPATH")))
-- an ASan-built core.so needs the runtime preloaded into stock lua5.4
if module_env and (os.getenv("MODULE_PRELOAD") or "") ~= "" then
  module_env = module_env .. " LD_PRELOAD=" .. quote(os.getenv("MODULE_PRELOAD"))
end
assert(host and count, "usage: generate.lua HOST COUNT [SEED]")
math.randomseed(seed)

local SIGNALS = { TERM = 15, HUP = 1, INT = 2 }
local NAMES = { "TERM", "HUP", "INT" }
-- stock lua5.4 owns SIGINT (lua.c's own handler around the chunk, SIG_DFL
-- after it): there it is the "disposition from before", so module-mode
-- programs leave SIGINT out
local MODULE_NAMES = { "TERM", "HUP" }

local function pick(t) return t[math.random(#t)] end

-- A program is a list of statements:
--   {op = "arm", id, kind, co, cleanups = {{name, signal or nil}, ...}}
--   {op = "close", id}      {op = "signal", name}      {op = "exit", n}
local function generate(names)
  local prog, armed, open, nextid = {}, {}, {}, 1
  local steps = math.random(2, 9)
  for _ = 1, steps do
    local r = math.random()
    if r < 0.45 or #open == 0 then
      local cleanups = {}
      for c = 1, math.random(1, 2) do
        local sends = math.random() < 0.15 and pick(names) or nil
        cleanups[#cleanups + 1] = { name = nextid .. string.char(96 + c), signal = sends }
      end
      local st = { op = "arm", id = nextid, kind = math.random() < 0.5 and "ErrorHandler" or "ExitHandler",
                   co = math.random() < 0.25, cleanups = cleanups }
      prog[#prog + 1] = st
      armed[#armed + 1] = st
      open[#open + 1] = nextid
      nextid = nextid + 1
    elseif r < 0.8 then
      local k = math.random(#open)
      prog[#prog + 1] = { op = "close", id = open[k] }
      table.remove(open, k)
    elseif r < 0.93 then
      prog[#prog + 1] = { op = "signal", name = pick(names) }
    else
      prog[#prog + 1] = { op = "exit", n = math.random(0, 9) }
      break
    end
  end
  return prog
end

local function render(prog, module_mode)
  local out = { module_mode and [[
local g = require "luaguard"
local ErrorHandler, ExitHandler = g.ErrorHandler, g.ExitHandler
]] or "", [[
local PID = io.open("/proc/self/stat"):read("n")
local function kill(name) io.popen("kill -" .. name .. " " .. PID):close() end
local function log(s, sends) io.write(s, " "); if sends then kill(sends) end end
local H = {}
]] }
  for _, st in ipairs(prog) do
    if st.op == "arm" then
      local first = st.cleanups[1]
      local arm = ("H[%d] = %s(log, %q%s)"):format(st.id, st.kind, first.name,
        first.signal and (", %q"):format(first.signal) or "")
      for c = 2, #st.cleanups do
        local cl = st.cleanups[c]
        arm = arm .. ("; H[%d]:register(log, %q%s)"):format(st.id, cl.name,
          cl.signal and (", %q"):format(cl.signal) or "")
      end
      if st.co then
        arm = ("CO%d = coroutine.create(function() %s; coroutine.yield() end); coroutine.resume(CO%d)")
          :format(st.id, arm, st.id)
      end
      out[#out + 1] = arm
    elseif st.op == "close" then
      out[#out + 1] = ("H[%d]:close()"):format(st.id)
    elseif st.op == "signal" then
      out[#out + 1] = ("kill(%q)"):format(st.name)
    else
      out[#out + 1] = ("os.exit(%d, true)"):format(st.n)
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- The reference machine: what must be logged, and how the process ends.
local function predict(prog, module_mode)
  local open, log, first_signal = {}, {}, nil
  local by_id = {}
  -- run h's cleanups (last registered first); returns the first signal one sent
  local function run_cleanups(h)
    local sent
    for c = #h.cleanups, 1, -1 do
      local cl = h.cleanups[c]
      log[#log + 1] = cl.name
      if cl.signal and not sent then sent = cl.signal end
    end
    return sent
  end
  local function remove(id)
    for k, v in ipairs(open) do if v == id then table.remove(open, k) return end end
  end
  -- close every open handler newest first; 'stopped' from the start or from
  -- the first deferred signal on (when 'reroute': it goes to the next one)
  local function close_all(stopped, reroute)
    while #open > 0 do
      local h = by_id[open[#open]]
      table.remove(open)
      if stopped or h.kind == "ExitHandler" then
        local sent = run_cleanups(h)
        if sent then
          first_signal = first_signal or sent
          if reroute then stopped = true end
        end
      end
    end
  end
  for _, st in ipairs(prog) do
    if st.op == "arm" then
      by_id[st.id] = st
      open[#open + 1] = st.id
    elseif st.op == "close" then
      local h = by_id[st.id]
      remove(st.id)
      if h.kind == "ExitHandler" then
        local sent = run_cleanups(h)
        if sent then first_signal = sent break end   -- the block stops
      end
    elseif st.op == "signal" then
      first_signal = SIGNALS[st.name] and st.name
      break
    else                                              -- os.exit(n, true)
      close_all(false, true)
      return table.concat(log, " "), first_signal and 128 + SIGNALS[first_signal] or st.n
    end
  end
  if first_signal then
    close_all(true, false)
    return table.concat(log, " "), 128 + SIGNALS[first_signal]
  end
  -- the script ends: lua_close closes what is open, newest first, as on a
  -- normal exit; a signal a cleanup sends goes to the host's frame (deferred)
  -- or, in module mode where there is none, to the next handler, which then
  -- closes as stopped
  close_all(false, module_mode)
  return table.concat(log, " "), first_signal and 128 + SIGNALS[first_signal] or 0
end

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local script, out = dir .. "/p.lua", dir .. "/out"

-- a broken build fails program after program, each up to its time limit:
-- five failures end the run (they are what it is for)
local MAX_FAILURES = 5
local failures, shown, ran = 0, 0, 0
for i = 1, count do
  if failures >= MAX_FAILURES then
    print(("# stopped after %d failures, at program %d of %d"):format(failures, ran, count))
    break
  end
  ran = i
  local module_mode = module_env ~= nil and i % 2 == 0
  local prog = generate(module_mode and MODULE_NAMES or NAMES)
  local text = render(prog, module_mode)
  local f = assert(io.open(script, "w"))
  f:write(text)
  f:close()
  local command = module_mode and ("env %s lua5.4"):format(module_env) or host
  local ok, how, code = os.execute(("timeout -s KILL 10 %s %s >%s 2>/dev/null"):format(command, script, out))
  local status = how == "signal" and 128 + code or code
  local got = (io.open(out):read("a")):gsub("%s+$", "")
  local want_log, want_status = predict(prog, module_mode)
  if got ~= want_log or status ~= want_status then
    failures = failures + 1
    if shown < 5 then
      shown = shown + 1
      io.write(("# program %d (seed %d, %s):\n"):format(i, seed, module_mode and "module mode" or "host"))
      for line in text:gmatch("[^\n]+") do io.write("#   ", line, "\n") end
      io.write(("#   expected log %q, status %d\n#   got      log %q, status %s\n")
        :format(want_log, want_status, got, tostring(status)))
    end
  end
  _ = ok
end
os.execute("rm -rf " .. dir)
if failures == 0 then
  print(("ok 1 - generator: %d random programs (seed %d%s) behave as the model predicts")
    :format(count, seed, module_env and ", half in module mode" or ""))
else
  print(("not ok 1 - generator: %d of %d random programs (seed %d) did not behave as predicted")
    :format(failures, ran, seed))
end
print("1..1")
os.exit(failures == 0 and 0 or 1)
