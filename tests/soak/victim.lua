-- tests/soak/victim.lua — the signal soak's victim (run by build/bin/soak_signals
-- through the host): holds a lock in a <close> variable and an ExitHandler
-- with five cleanups that each take a little time, then runs a body that a
-- signal must stop.
--   luaguard victim.lua DIR MODE
-- MODE: lua (a busy Lua loop), read (blocked in io.read on a silent pipe),
-- pcall (a loop that tries to swallow the SignalExit), wait (waiting for
-- DIR/busy.lock, which the driver holds).
-- Each cleanup appends its number to DIR/log; the driver expects 5 4 3 2 1.
local dir, mode = arg[1], arg[2]

local log = assert(io.open(dir .. "/log", "w"))
log:setvbuf("no")

local function spin(seconds)
  local stop = os.clock() + seconds
  while os.clock() < stop do end
end

local bodies = {
  lua = function()
    local x = 0
    while true do x = x + 1 end
  end,
  read = function()
    while true do io.read("l") end
  end,
  pcall = function()
    while true do
      pcall(function() while true do end end)
    end
  end,
  wait = function()
    lock.LockFile(dir .. "/busy.lock", { timeout = math.huge })
    error("took a lock the driver holds")
  end,
}
local body = assert(bodies[mode], "unknown mode")

local held <close> = lock.dir(dir)
local h <close> = ExitHandler()
for i = 1, 5 do
  h:register(function()
    log:write(i, "\n")     -- first: the driver watches for the first line
    spin(0.003)
  end)
end

local ready = assert(io.open(dir .. "/ready.tmp", "w"))
ready:close()
os.rename(dir .. "/ready.tmp", dir .. "/ready")
body()
