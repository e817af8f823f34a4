-- tests/helpers.lua — spawning the built host and stock lua5.4, reading exit
-- statuses, and small file utilities for the busted specs.
--
-- Process statuses are reported as a shell sees them: 128+N for death by
-- signal N (commands are run with 'exec', so os.execute reports the signal).
local lfs = require "lfs"
local system = require "system"   -- lua-system, busted's own: sleep and a monotonic clock

local H = {}

H.root = assert(os.getenv("LUAGUARD_ROOT") or lfs.currentdir())
H.build = H.root .. "/build"
H.host = H.build .. "/bin/luaguard"
H.bin = H.build .. "/bin"
H.lua = "lua5.4"
H.python = "/usr/bin/python3"     -- Debian's, where python3-certbot lives
H.module_env = {
  LUA_CPATH = H.build .. "/lib/lua/?.so;;",
  LUA_PATH = H.root .. "/lua/?.lua;" .. H.root .. "/lua/?/init.lua;;",
}

-- Under scripts/test --sanitize: what stock lua5.4 and C compiles need.
H.asan_preload = os.getenv("LUAGUARD_ASAN_PRELOAD")
H.sanitize_cflags = os.getenv("LUAGUARD_SANITIZE_CFLAGS") or ""

function H.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

function H.exists(path)
  return lfs.symlinkattributes(path) ~= nil
end

local tmp_root
function H.tmpdir()
  if not tmp_root then
    tmp_root = os.tmpname()
    os.remove(tmp_root)
    assert(lfs.mkdir(tmp_root))
  end
  local n = 0
  repeat
    n = n + 1
    local d = ("%s/d%d_%d"):format(tmp_root, n, math.random(1e9))
    if lfs.mkdir(d) then return d end
  until n > 100
  error("no temp dir")
end

-- Every spec's teardown: jobs still running (a test that failed before it
-- waited for them) are killed, then the temporary tree goes.
local running_jobs = {}
function H.cleanup_tmp()
  for job in pairs(running_jobs) do job:abandon() end
  running_jobs = {}
  if tmp_root then os.execute("rm -rf " .. H.quote(tmp_root)) end
  tmp_root = nil
end

-- (in-process: a wait's polling spawns no shell and no sleep(1) per tick)
-- Whether the tests run as root (which passes every permission check), and
-- the prefix that runs a command as nobody instead (opts.prefix of H.run).
do
  local f = io.popen("id -u")
  H.is_root = f:read("n") == 0
  f:close()
end
H.as_nobody = { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups" }

function H.sleep(seconds)
  system.sleep(seconds)
end

local function env_prefix(env)
  if not env then return "" end
  local parts = {}
  for k, v in pairs(env) do
    if v == false then parts[#parts + 1] = "-u " .. k
    else parts[#parts + 1] = k .. "=" .. H.quote(v) end
  end
  table.sort(parts)
  return "env " .. table.concat(parts, " ") .. " "
end

-- Under scripts/test --valgrind: every run of the host goes through memcheck,
-- each process logging to its own file that scripts/test reads at the end
-- (LUAGUARD_VALGRIND: the command, written once, in scripts/test).
H.valgrind_logs = os.getenv("LUAGUARD_VALGRIND_LOGS")
local valgrind = {}
for word in (os.getenv("LUAGUARD_VALGRIND") or ""):gmatch("%S+") do valgrind[#valgrind + 1] = word end

local function command_line(argv, bare)
  if H.asan_preload and argv[1] == H.lua then
    argv = { "env", "LD_PRELOAD=" .. H.asan_preload, table.unpack(argv) }
  end
  if #valgrind > 0 and not bare then
    for i, a in ipairs(argv) do
      if a == H.host then
        local wrapped = { table.unpack(argv, 1, i - 1) }
        for _, v in ipairs(valgrind) do wrapped[#wrapped + 1] = v end
        for k = i, #argv do wrapped[#wrapped + 1] = argv[k] end
        argv = wrapped
        break
      end
    end
  end
  local q = {}
  for i, a in ipairs(argv) do q[i] = H.quote(a) end
  return table.concat(q, " ")
end

-- How long one H.run may take before the test fails (a fault that keeps a
-- script from stopping must fail its test, not hang the suite): seconds,
-- longer under valgrind; opts.limit for a run known to be long.
H.run_limit = tonumber(os.getenv("LUAGUARD_TEST_RUN_LIMIT") or "") or
              ((os.getenv("LUAGUARD_VALGRIND") or "") ~= "" and 300 or 30)

-- Run argv (a list) to completion. opts: env (table; false unsets), stdin
-- (text), dir, bare (never under valgrind: for counting system calls), limit
-- (seconds; H.run_limit). Returns {status=, stdout=, stderr=}; status 128+N by
-- signal. A run past its limit is killed and raises an error naming it.
-- timeout(1) runs it in the foreground (no process group of its own, so a
-- test's signals reach it as before) and passes its status through.
function H.run(argv, opts)
  opts = opts or {}
  local d = H.tmpdir()
  local limit = opts.limit or H.run_limit
  local infile = opts.stdin and H.write(d .. "/stdin", opts.stdin) or "/dev/null"
  local cmd = ("%sexec %stimeout --foreground -k 5 %d %s <%s >%s 2>%s"):format(
    opts.dir and ("cd " .. H.quote(opts.dir) .. " && ") or "",
    env_prefix(opts.env), limit, command_line(argv, opts.bare),
    H.quote(infile), H.quote(d .. "/out"), H.quote(d .. "/err"))
  local started = H.now()
  local ok, how, code = os.execute(cmd)
  local status = how == "signal" and 128 + code or code
  if (status == 124 or status == 137) and H.now() - started >= limit - 0.5 then
    error(("still running after %d s, killed: %s\nstderr: %s"):format(
      limit, command_line(argv, opts.bare), H.read(d .. "/err") or ""), 2)
  end
  return { status = status, stdout = H.read(d .. "/out"), stderr = H.read(d .. "/err"),
           ok = ok }
end

-- Run a Lua script text through the host (or opts.interpreter), after
-- opts.prefix (a command list such as setpriv's) when given.
function H.run_script(text, args, opts)
  opts = opts or {}
  local d = H.tmpdir()
  local path = H.write(d .. "/script.lua", text)
  local argv = {}
  for _, a in ipairs(opts.prefix or {}) do argv[#argv + 1] = a end  -- e.g. setpriv ...
  argv[#argv + 1] = opts.interpreter or H.host
  argv[#argv + 1] = path
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  if opts.interpreter == H.lua then   -- a copy: the caller's tables stay as they were
    local env = {}
    for k, v in pairs(H.module_env) do env[k] = v end
    for k, v in pairs(opts.env or {}) do env[k] = v end
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    copy.env = env
    opts = copy
  end
  return H.run(argv, opts)
end

-- Start argv in the background with default SIGINT/SIGQUIT (a background job
-- of a non-interactive shell starts with them ignored). Returns a job whose
-- status file is written when it ends: job:wait() -> status (128+N), killed
-- past its time; job:poll() the same, left running; job:pid() the command's
-- own pid (not the shell's). opts: env, stdin, bare (as for H.run).
function H.spawn(argv, opts)
  opts = opts or {}
  local d = H.tmpdir()
  local job = { dir = d, status_file = d .. "/status", out = d .. "/out", err = d .. "/err",
                pid_file = d .. "/pid" }
  local inner = ("%senv --default-signal=INT,QUIT %s <%s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s"):format(
    env_prefix(opts.env), command_line(argv, opts.bare), H.quote(opts.stdin or "/dev/null"),
    H.quote(job.out), H.quote(job.err), H.quote(job.pid_file), H.quote(job.status_file .. ".tmp"))
  inner = inner .. "; mv " .. H.quote(job.status_file .. ".tmp") .. " " .. H.quote(job.status_file)
  os.execute("(" .. inner .. ") >/dev/null 2>&1 &")
  running_jobs[job] = true
  function job:pid()
    return tonumber(H.wait_for(self.pid_file):match("%d+"))
  end
  -- its status, or nil after timeout seconds (20) with the job still running
  function job:poll(timeout)
    local deadline = H.now() + (timeout or 20)
    while not H.exists(self.status_file) do
      if H.now() > deadline then return nil end
      H.sleep(0.01)
    end
    return tonumber(H.read(self.status_file))
  end
  -- SIGKILL for the command if it still runs
  function job:abandon()
    local pid = not H.exists(self.status_file) and tonumber((H.read(self.pid_file) or ""):match("%d+") or "")
    if pid then H.kill(pid, "KILL") end
  end
  -- its status; a job still running after timeout seconds (20) is killed
  -- (nothing it does outlives its test) and the answer is nil, "timed out"
  function job:wait(timeout)
    local status = self:poll(timeout)
    if status then return status end
    self:abandon()
    return nil, "timed out"
  end
  function job:stderr() return H.read(self.err) or "" end
  function job:stdout() return H.read(self.out) or "" end
  return job
end

-- A script with H.prelude (PID, ready, kill, wait_for) through the host.
function H.run_prelude(code, args, opts)
  return H.run_script(H.prelude .. code, args, opts)
end

function H.spawn_script(text, args, opts)
  local d = H.tmpdir()
  local path = H.write(d .. "/script.lua", text)
  local argv = { (opts and opts.interpreter) or H.host, path }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return H.spawn(argv, opts)
end

-- certbot's own lock_dir (Debian's python3-certbot) held by a Python process
-- until job.stop_file appears (job:stop() makes it); job.pid is Python's.
function H.hold_with_certbot(dir)
  local d = H.tmpdir()
  local job = H.spawn({ H.python, "-c", [[
import os, sys, time
from certbot._internal import lock
l = lock.lock_dir(sys.argv[1])
with open(sys.argv[2] + ".tmp", "w") as f: f.write("%d\n" % os.getpid())
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
while not os.path.exists(sys.argv[3]): time.sleep(0.01)
l.release()
]], dir, d .. "/ready", d .. "/stop" })
  job.pid = tonumber(H.wait_for(d .. "/ready"):match("%d+"))
  job.stop_file = d .. "/stop"
  function job:stop() H.write(d .. "/stop", "") return self:wait() end
  return job
end

-- A renewal's demo tree: dir/live/cert.pem holding "OLD" (examples/renew*.lua).
function H.cert_tree()
  local d = H.tmpdir()
  os.execute("mkdir -p " .. H.quote(d .. "/live"))
  H.write(d .. "/live/cert.pem", "OLD\n")
  return d
end

-- Wait until path exists and its content is complete (complete(text), when
-- given, says so); returns the content. Fails after timeout seconds (10).
function H.wait_for_file(path, timeout, complete)
  local deadline = H.now() + (timeout or 10)
  while true do
    local text = H.exists(path) and H.read(path)
    if text and (complete == nil or complete(text)) then return text end
    if H.now() > deadline then error("timed out waiting for " .. path, 2) end
    H.sleep(0.005)
  end
end

-- A child's "ready" file: written whole, ending with a newline.
function H.wait_for(path, timeout)
  return H.wait_for_file(path, timeout, function(text) return text:find("\n") ~= nil end)
end

-- Wait until process pid sleeps in the kernel function named by pattern
-- (/proc/pid/wchan: "fcntl_setlk" for a lock wait, "do_wait" for a wait for
-- a child): a signal sent then finds it there, not on its way in or out.
function H.wait_wchan(pid, pattern, timeout)
  local path = ("/proc/%d/wchan"):format(pid)
  local deadline = H.now() + (timeout or 10)
  local seen
  while true do
    local f = io.open(path)
    seen = f and f:read("a")
    if f then f:close() end
    if seen and seen:find(pattern) then return seen end
    if H.now() > deadline then
      error(("process %d never waited in %s (last: %s)"):format(pid, pattern, tostring(seen)), 2)
    end
    H.sleep(0.005)
  end
end

-- Seconds on a monotonic clock: for durations and deadlines.
function H.now()
  return system.monotime()
end

function H.kill(pid, sig)
  os.execute(("kill -%s %d"):format(sig or "TERM", pid))
end

-- A script with H.prelude through stock lua5.4 and require "luaguard" (module
-- mode), with the module's names as locals; opts as for H.run_script.
function H.run_stock(code, args, opts)
  local copy = {}
  for k, v in pairs(opts or {}) do copy[k] = v end
  copy.interpreter = H.lua
  return H.run_script(H.prelude .. "local g = require 'luaguard'\n"
    .. "local ErrorHandler, ExitHandler, lock = g.ErrorHandler, g.ExitHandler, g.lock\n"
    .. code, args, copy)
end

-- How long a child script's spin() runs before it gives up (a signal that
-- should have stopped it did not): seconds, longer under valgrind.
H.spin_limit = (os.getenv("LUAGUARD_VALGRIND") or "") ~= "" and 60 or 10

-- Lines every child script can start with: its pid, a ready file, self-kill,
-- nap() (lua-system's sleep), and spin(), which stands for `while true do end`
-- where a signal must stop the block: a fault that keeps it running ends the
-- script with status 99 and a message, in seconds, instead of holding the test
-- to its time limit.
H.prelude = [[
local SPIN_LIMIT = ]] .. H.spin_limit .. [[

local PID = io.open("/proc/self/stat"):read("n")
local function ready(path, extra)
  local f = assert(io.open(path .. ".tmp", "w"))
  f:write(PID, " ", extra or "", "\n")
  f:close()
  os.rename(path .. ".tmp", path)
end
local function kill(sig, pid)
  -- popen, not os.execute: system() ignores SIGINT/SIGQUIT while it waits
  local p = io.popen(("kill -%s %d"):format(sig, pid or PID))
  p:close()
end
local function exists(path) local f = io.open(path) if f then f:close() end return f ~= nil end
-- a pause with no process: os.execute("sleep") costs a shell and a sleep,
-- about 15 ms of CPU here, and polls made thousands of them
local function nap(seconds) require("system").sleep(seconds) end
local function wait_for(path) while not exists(path) do nap(0.01) end end
-- whether this process catches signal sig now (its SigCgt mask)
local function caught(sig)
  for line in io.lines("/proc/self/status") do
    local hex = line:match("^SigCgt:%s*(%x+)")
    if hex then return (tonumber(hex, 16) >> (sig - 1)) & 1 == 1 end
  end
end
local function spin()
  local stop = os.time() + SPIN_LIMIT
  while os.time() < stop do end
  io.stderr:write("spin: still running ", SPIN_LIMIT, " s later (not stopped)\n")
  os.exit(99)
end
]]

return H
