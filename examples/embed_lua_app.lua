#!/usr/bin/env lua5.4
--[==[
embed_lua_app.lua — a plain lua5.4 application using luaguard as a module:
no special host, no globals (require returns everything).

  lua5.4 examples/embed_lua_app.lua [WORK_DIR]

It publishes a small report into WORK_DIR (a demo directory under $TMPDIR
when none is given): it locks the directory, writes the report to a temporary
file, and renames it into place. The ExitHandler removes the temporary file
whatever happens; the ErrorHandler puts the previous report back if anything
fails. With luaguard installed (scripts/install PREFIX) set, as the README
says, LUA_PATH and LUA_CPATH; from a build tree:
  LUA_CPATH="build/lib/lua/?.so;;" LUA_PATH="lua/?.lua;lua/?/init.lua;;" lua5.4 examples/embed_lua_app.lua
]==]
local luaguard = require "luaguard"

local dir = arg[1]
if not dir then
  dir = os.tmpname()
  os.remove(dir)
  luaguard.proc.run({ "mkdir", dir }, { check = true })
end

local report = dir .. "/report.txt"
local temp = report .. ".tmp"
local previous = report .. ".previous"

local function publish(lines)
  local held <close> = luaguard.lock.dir(dir, { timeout = 5 })   -- dir/.certbot.lock
  local tidy <close> = luaguard.ExitHandler(os.remove, temp)
  local had_one = os.rename(report, previous)
  local undo <close> = luaguard.ErrorHandler(function()
    if had_one then os.rename(previous, report) end
    print("kept the previous report")
  end)
  local f = assert(io.open(temp, "w"))
  for _, line in ipairs(lines) do assert(f:write(line, "\n")) end
  assert(f:close())
  assert(os.rename(temp, report))
  if had_one then os.remove(previous) end
end

publish({ "luaguard " .. luaguard._VERSION:match("%S+$"), "generated " .. os.date("!%Y-%m-%dT%H:%M:%SZ") })
print("published " .. report)
