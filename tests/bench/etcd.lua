-- tests/bench/etcd.lua — a 3-member etcd cluster on loopback for scripts/bench
-- (the tests' own tests/etcd_cluster.lua), run by lua5.4 from the root:
--   lua5.4 tests/bench/etcd.lua start FILE   writes endpoints, pids and its dir to FILE
--   lua5.4 tests/bench/etcd.lua stop FILE    stops it by pid, removes its dir
package.path = "./?.lua;" .. package.path
local C = require "tests.etcd_cluster"
local what, file = arg[1], arg[2]
if what == "start" then
  local c = C.start { members = 3 }
  local pids = {}
  for i, m in ipairs(c.members) do pids[i] = m.pid end
  local f = assert(io.open(file, "w"))
  f:write(table.concat(c.endpoints, ","), "\n", table.concat(pids, " "), "\n", c.dir, "\n")
  f:close()
else
  local f = assert(io.open(file))
  local _, pids, dir = f:read("l", "l", "l")
  f:close()
  for pid in pids:gmatch("%d+") do os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
  os.execute("sleep 1; rm -rf '" .. dir .. "'")
end
