-- tests/bench/signal_victim.lua — run by bench_signal_latency through the host:
-- an ExitHandler whose cleanup says "c" on stdout at once; "r" once armed;
-- then a body in Lua code (lua) or blocked reading a silent stdin (read).
local h <close> = ExitHandler(function()
  io.stdout:write("c\n")
  io.stdout:flush()
end)
io.stdout:write("r\n")
io.stdout:flush()
if arg[1] == "read" then
  while true do io.read("l") end
else
  local x = 0
  while true do x = x + 1 end
end
