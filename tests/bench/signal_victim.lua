-- tests/bench/signal_victim.lua — run by bench_signal_latency through the host:
-- an ExitHandler whose cleanup says "c" on stdout at once; "r" once armed;
-- then a body in Lua code (lua), blocked reading a silent stdin (read),
-- blocked waiting for a lock another process holds (lock), or waiting in
-- proc.run for a child that exits on SIGTERM (child: the figure then includes
-- forwarding the signal, the child's exit and its reaping).
local h <close> = ExitHandler()
local lock_dir
if arg[1] == "lock" then
  -- the holder: another host, holding the lock until its stdin (our pipe)
  -- closes; torn down after "c", so it costs the figure nothing
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. dir))
  local holder = assert(io.popen(("%s -e %q"):format(arg[-1], ([[
    local l = lock.dir(%q)
    io.open(%q, "w"):close()
    io.read("a")
    l:release()
  ]]):format(dir, dir .. "/held")), "w"))
  h:register(function()
    holder:close()
    os.remove(dir .. "/held")
    os.remove(dir)
  end)
  while not io.open(dir .. "/held") do os.execute("sleep 0.01") end
  lock_dir = dir
end
h:register(function()
  io.stdout:write("c\n")
  io.stdout:flush()
end)
io.stdout:write("r\n")
io.stdout:flush()
if arg[1] == "read" then
  while true do io.read("l") end
elseif arg[1] == "child" then
  proc.run({ "sleep", "1000" })
  error("the child ended without the signal")
elseif arg[1] == "lock" then
  lock.dir(lock_dir, { timeout = math.huge })
  error("the lock wait ended without the signal")
else
  local x = 0
  while true do x = x + 1 end
end
