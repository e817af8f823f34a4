#!/usr/bin/env luaguard
--[==[
oneoff.lua — operator one-off automation: change a setting in every *.conf
file under a tree, under the tree's lock, and roll every change back if the
run fails or is stopped (Ctrl-C, SIGTERM, a hangup).

  luaguard examples/oneoff.lua [TREE [OLD NEW [CHECK_COMMAND [ARG...]]]]

Walks TREE with LuaFileSystem and replaces OLD by NEW in each *.conf file,
then runs CHECK_COMMAND (say `nginx -t`; run by proc.run, without a shell):
if it fails, every change is rolled back.
Each file's original text is registered with an ErrorHandler before the file
is touched, so a failure or signal restores all of them, last changed first;
the process then ends by that signal (a shell sees 130 after Ctrl-C). With no
TREE it builds a demo tree under $TMPDIR; OLD and NEW default to
"listen 80" and "listen 8080".
]==]
local lfs = require "lfs"

local tree, old, new = arg[1], arg[2] or "listen 80", arg[3] or "listen 8080"
local check = #arg >= 4 and table.move(arg, 4, #arg, 1, {}) or nil

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  assert(f:close())
end

if not tree then                       -- a demo tree to work on
  tree = os.tmpname()
  os.remove(tree)
  assert(lfs.mkdir(tree))
  for _, site in ipairs({ "a", "b", "c" }) do
    assert(lfs.mkdir(tree .. "/" .. site))
    write(tree .. "/" .. site .. "/site.conf", "server {\n  listen 80;\n}\n")
  end
  print("demo tree: " .. tree)
end

-- every *.conf file under dir, depth first, in a stable order
local function conf_files(dir, found)
  found = found or {}
  local names = {}
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then names[#names + 1] = name end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local path = dir .. "/" .. name
    local mode = lfs.symlinkattributes(path, "mode")
    if mode == "directory" then conf_files(path, found)
    elseif mode == "file" and name:match("%.conf$") then found[#found + 1] = path end
  end
  return found
end

local held <close> = lock.dir(tree, { timeout = 10 })
local rollback <close> = ErrorHandler()

local changed = 0
for _, path in ipairs(conf_files(tree)) do
  local text = read(path)
  local updated, n = text:gsub(old:gsub("%p", "%%%0"), (new:gsub("%%", "%%%%")))
  if n > 0 then
    rollback:register(function()       -- registered before the file is touched
      write(path, text)
      print("rolled back " .. path)
    end)
    write(path, updated)
    changed = changed + 1
    print("changed " .. path)
    if os.getenv("ONEOFF_PAUSE") then io.read("l") end   -- lets a test stop us mid-run
  end
end
print(("%d file(s) changed"):format(changed))
if check then                          -- a failing check is an error: all rolled back
  proc.run(check, { check = true })
  print("check passed: " .. table.concat(check, " "))
end
