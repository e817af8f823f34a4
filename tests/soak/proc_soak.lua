-- tests/soak/proc_soak.lua — children under the guard, at random moments.
--
--   build/bin/luaguard tests/soak/proc_soak.lua HOST RUNS [SEED]
--
-- PROC_SOAK_WRAPPER, when set, is put before HOST (valgrind and its options).
-- Each run starts a victim (HOST running the script below): an ExitHandler
-- whose cleanup logs "cleanup", and a body running short proc.run children
-- one after another beside a proc.spawn'ed one that lives through the whole
-- body. Every child logs its start, each handled signal it gets and its exit.
-- After a random delay the victim gets a random handled signal. Then:
--   - it died by that signal (or ended normally, if the body finished first);
--   - no child got more than one signal;
--   - every child that started has exited, and "cleanup" comes after every
--     child's exit (no cleanup while a child ran);
--   - no process of the run is left.
-- The driver runs in the host too, and uses proc for everything it starts.
-- Prints TAP; exits 1 on a violation.
local host, runs, seed = arg[1], tonumber(arg[2] or "200"), tonumber(arg[3] or os.time())
assert(host and runs, "usage: luaguard tests/soak/proc_soak.lua HOST RUNS [SEED]")
math.randomseed(seed)

local SIGNALS = { { "TERM", 15 }, { "INT", 2 }, { "HUP", 1 }, { "QUIT", 3 }, { "XCPU", 24 }, { "XFSZ", 25 } }

local CHILD = [[
log=$1; dur=$2
for s in TERM INT HUP QUIT XCPU XFSZ; do
  trap "echo \"got $s $$\" >> '$log'; echo \"exit $$\" >> '$log'; exit 0" $s
done
echo "start $$" >> "$log"
sleep "$dur" & wait $!
echo "exit $$" >> "$log"
]]

local VICTIM = [[
local log, child, n = arg[1], arg[2], tonumber(arg[3])
local function note(text) local f = io.open(log, "a") f:write(text, "\n") f:close() end
local h <close> = ExitHandler(function() note("cleanup") end)
local companion <close> = proc.spawn({ "sh", "-c", child, "child", log, "30" }, { grace = 0.2 })
for i = 1, n do
  proc.run({ "sh", "-c", child, "child", log, string.format("%.3f", 0.05 + (i % 5) * 0.05) }, { grace = 0.2 })
end
note("body done")
]]

local function read(path)
  local f = io.open(path)
  if not f then return "" end
  local text = f:read("a")
  f:close()
  return text
end

-- running (a zombie waiting for init to reap it is not)
local function alive(pid)
  local stat = read(("/proc/%s/stat"):format(pid))
  return stat ~= "" and stat:match("%) (%a)") ~= "Z"
end

local work = os.tmpname()
os.remove(work)
proc.run({ "mkdir", work }, { check = true })
local victim_path = work .. "/victim.lua"
local f = assert(io.open(victim_path, "w"))
f:write(VICTIM)
f:close()

local violations, signalled, finished, children = 0, 0, 0, 0
local started = os.time()
-- a broken build violates run after run, each waiting out its limit: five
-- runs with violations end the soak (they are what it is for)
local MAX_BAD_RUNS, bad_runs, ran = 5, 0, 0
-- seconds a stopped victim may take to end (its grace included); valgrind's longer
local STOP_LIMIT = (os.getenv("PROC_SOAK_WRAPPER") or "") ~= "" and 60 or 15
for run = 1, runs do
  if bad_runs >= MAX_BAD_RUNS then
    print(("# stopped after %d runs with violations, at run %d of %d"):format(bad_runs, ran, runs))
    break
  end
  ran = run
  local violations_before = violations
  local log = ("%s/log.%d"):format(work, run)
  local sig = SIGNALS[math.random(#SIGNALS)]
  local delay = math.random() * 0.3
  local function violation(fmt, ...)
    violations = violations + 1
    print(("# run %d (SIG%s after %.3f s): " .. fmt):format(run, sig[1], delay, ...))
    io.write("#   log: ", (read(log):gsub("\n", " | ")), "\n")
  end
  -- SIGINT and SIGQUIT at their defaults (a background job starts with them
  -- ignored, which children inherit: nohup semantics)
  local argv = { "env", "--default-signal=INT,QUIT" }
  for word in (os.getenv("PROC_SOAK_WRAPPER") or ""):gmatch("%S+") do argv[#argv + 1] = word end
  table.move({ host, victim_path, log, CHILD, "12" }, 1, 5, #argv + 1, argv)
  local p = proc.spawn(argv, { stdout = "null" })
  -- once its first child runs (the host may be slow to start: valgrind),
  -- a random delay: a nap, unless it ends first
  local ready_by = os.time() + 60
  while not read(log):find("start", 1, true) and os.time() < ready_by and not p:wait(0.005) do end
  p:wait(delay)
  p:kill(sig[2])
  local result = p:wait(STOP_LIMIT)
  if not result then
    violation("still running %d s after the signal", STOP_LIMIT)
    p:kill("KILL")
    result = p:wait()
  end
  local text = read(log)
  if text:find("body done", 1, true) then
    finished = finished + 1
  else
    signalled = signalled + 1
    if result.signal ~= sig[2] then
      violation("ended with status %s signal %s, not by SIG%s", tostring(result.status),
                tostring(result.signal), sig[1])
    end
  end
  -- per child: signals got, exited
  local got, exited, order, last_exit, cleanup_at = {}, {}, {}, 0, nil
  local line_no = 0
  for line in text:gmatch("[^\n]+") do
    line_no = line_no + 1
    local what, pid = line:match("^(%a+) (%d+)$")
    if line:match("^got ") then
      local _, gpid = line:match("^got (%a+) (%d+)$")
      got[gpid] = (got[gpid] or 0) + 1
    elseif what == "start" then
      order[#order + 1] = pid
    elseif what == "exit" then
      exited[pid] = true
      last_exit = line_no
    elseif line == "cleanup" then
      cleanup_at = line_no
    end
  end
  children = children + #order
  for _, pid in ipairs(order) do
    if (got[pid] or 0) > 1 then violation("child %s got %d signals", pid, got[pid]) end
    if not exited[pid] then violation("child %s never logged its exit", pid) end
    if alive(pid) then violation("child %s is still running", pid) end
  end
  if not cleanup_at then violation("no cleanup ran")
  elseif cleanup_at < last_exit then violation("a cleanup ran before a child exited") end
  if violations > violations_before then bad_runs = bad_runs + 1 end
end
local took = os.time() - started
print(("# proc soak: %d runs (%d stopped by a signal, %d ended first), %d children, %d violations, ~%d s, seed %d")
      :format(ran, signalled, finished, children, violations, took, seed))
print(("%s 1 - proc soak: %d runs, %d violations"):format(violations == 0 and "ok" or "not ok", ran, violations))
print("1..1")
proc.run({ "rm", "-rf", work })
os.exit(violations == 0 and 0 or 1)
