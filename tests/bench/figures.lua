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
