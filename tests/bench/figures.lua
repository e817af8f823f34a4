-- tests/bench/figures.lua — the Lua side of scripts/bench, run by the host.
-- Each mode does a fixed amount of work and prints CPU seconds per operation
-- (os.clock: user + system), or for the memory modes the RSS growth in KiB.
--   luaguard figures.lua loop armed|bare N
--   luaguard figures.lua lock DIR N
--   luaguard figures.lua handler N exit|error
--   luaguard figures.lua memory handler|lock N [DIR]
--   luaguard figures.lua spawn proc|execute N   (no figure: timed from outside)
local mode = arg[1]

local function per_op(n, f)
  local start = os.clock()
  f(n)
  return (os.clock() - start) / n
end

local function rss_kib()
  local f = assert(io.open("/proc/self/statm"))
  local _, resident = f:read("n", "n")
  f:close()
  return resident * 4   -- pages of 4 KiB
end

local function cycle_lock(dir, n)
  for _ = 1, n do lock.dir(dir):release() end
end

local function cleanup() end
local function cycle_handler(n, kind)
  local new = kind == "error" and ErrorHandler or ExitHandler
  for _ = 1, n do
    local h <close> = new()
    h:register(cleanup)
  end
end

if mode == "loop" then
  -- the same CPU-bound loop, inside an armed handler or bare
  local n = tonumber(arg[3])
  local function loop(count)
    local x = 0
    for i = 1, count do x = x + i % 7 end
    return x
  end
  if arg[2] == "armed" then
    local h <close> = ErrorHandler()
    print(per_op(n, loop))
  else
    print(per_op(n, loop))
  end
elseif mode == "lock" then
  print(per_op(tonumber(arg[3]), function(n) cycle_lock(arg[2], n) end))
elseif mode == "handler" then
  -- exit (ExitHandler: its cleanup runs at close) or error (ErrorHandler: discarded)
  print(per_op(tonumber(arg[2]), function(n) cycle_handler(n, arg[3]) end))
elseif mode == "spawn" then
  -- proc.run({"true"}) or os.execute("true") (a shell, then true), N times
  local n = tonumber(arg[3])
  if arg[2] == "proc" then
    local argv = { "true" }
    for _ = 1, n do assert(proc.run(argv).status == 0) end
  else
    local command = arg[2] == "execute_path" and "/bin/true" or "true"
    for _ = 1, n do assert(os.execute(command)) end
  end
elseif mode == "lease" then
  -- N uncontended lock.lease(name) + release() cycles against ENDPOINT (timed
  -- from outside: a wall figure); prints the HTTP requests of one cycle
  local endpoint, name, n = arg[2], arg[3], tonumber(arg[4])
  local requests
  for _ = 1, n do
    local l = lock.lease(name, { endpoints = { endpoint } })
    l:release()
    requests = l:requests()             -- this lock's, from its grant to its revoke
  end
  io.stderr:write(("requests per cycle: %d\n"):format(requests))
elseif mode == "lease_handoff" then
  -- one side of a hand-off: 'hold' takes the lock N times, each time writing
  -- the time just before its release; 'wait' takes it after each release and
  -- prints the gaps (wall clock, date(1): an upper bound)
  local side, endpoint, name, n, dir = arg[2], arg[3], arg[4], tonumber(arg[5]), arg[6]
  local function now_ns() local p = io.popen("date +%s%N"); local t = p:read("n"); p:close(); return t end
  local function exists(path) local f = io.open(path) if f then f:close() end return f ~= nil end
  for i = 1, n do
    if side == "hold" then
      local l = lock.lease(name, { endpoints = { endpoint }, timeout = 30 })
      io.open(dir .. "/held." .. i, "w"):close()
      while not exists(dir .. "/waiting." .. i) do os.execute("sleep 0.005") end
      os.execute("sleep 0.05")               -- the waiter is in lock/lock by now
      local t = now_ns()
      l:release()
      local f = io.open(dir .. "/released." .. i, "w"); f:write(t, "\n"); f:close()
      while not exists(dir .. "/got." .. i) do os.execute("sleep 0.005") end
    else
      while not exists(dir .. "/held." .. i) do os.execute("sleep 0.005") end
      io.open(dir .. "/waiting." .. i, "w"):close()
      local l = lock.lease(name, { endpoints = { endpoint }, timeout = 30 })
      local t = now_ns()
      l:release()
      local f = io.open(dir .. "/got." .. i, "w"); f:write(t, "\n"); f:close()
    end
  end
elseif mode == "memory" then
  local n = tonumber(arg[3])
  local work = arg[2] == "lock" and function(count) cycle_lock(arg[4], count) end or cycle_handler
  work(10000)                      -- warm up: allocator and GC settle
  collectgarbage("collect")
  local before = rss_kib()
  work(n)
  collectgarbage("collect")
  print(rss_kib() - before)
else
  error("unknown mode " .. tostring(mode))
end
