-- tests/soak/participant.lua — one participant of the lock contention soak
-- (build/bin/soak_contention runs it through the host):
--   luaguard participant.lua DIR ID CYCLES
-- Read-increment-write of DIR/counter under lock.dir(DIR) until this
-- participant has CYCLES increments in the file. The file records the total
-- and each participant's own count, so a participant restarted after a
-- SIGKILL goes on from what it really completed, and one whose increment was
-- overwritten (a lost update) notices: its count in the file falls behind.
-- Writes "H id pid" to stdout once it holds the lock and "R id pid" just
-- before it releases; the driver checks that no two are ever inside at once.
-- SOAK_NO_LOCK=1 skips the lock: the driver's own check that it sees lost updates.
local dir, id, cycles = arg[1], arg[2], tonumber(arg[3])
local nolock = os.getenv("SOAK_NO_LOCK") == "1"

local function read_state()
  local state = { total = 0, counts = {} }
  local f = io.open(dir .. "/counter")
  if not f then return state end
  state.total = f:read("n") or 0
  for name, count in f:read("a"):gmatch("(%S+) (%d+)") do state.counts[name] = tonumber(count) end
  f:close()
  return state
end

local function write_state(state)
  local tmp = dir .. "/counter." .. id
  local f = assert(io.open(tmp, "w"))
  f:write(state.total, "\n")
  for name, count in pairs(state.counts) do f:write(name, " ", count, "\n") end
  assert(f:close())
  assert(os.rename(tmp, dir .. "/counter"))   -- the increment happens here, at once
end

local pid = io.open("/proc/self/stat"):read("n")

local function say(what)
  io.stdout:write(what, " ", id, " ", pid, "\n")
  io.stdout:flush()
end

local mine
while true do
  local held <close> = not nolock and lock.dir(dir, { timeout = 120 }) or nil
  say("H")
  local state = read_state()
  local recorded = state.counts[id] or 0
  mine = mine or recorded
  if recorded ~= mine then
    io.stderr:write(("participant %s: lost update: completed %d increments, the file records %d\n")
      :format(id, mine, recorded))
    os.exit(3)
  end
  if mine >= cycles then say("R") break end
  state.total = state.total + 1
  state.counts[id] = mine + 1
  write_state(state)
  mine = mine + 1
  say("R")
  if held then held:release() end
  -- a little work outside the lock, so the others get their turns
  local stop = os.clock() + math.random() * 0.0005
  while os.clock() < stop do end
end
