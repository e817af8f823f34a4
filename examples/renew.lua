#!/usr/bin/env luaguard
--[==[
renew.lua — a certificate-renewal workflow in the shape certbot users know.

  luaguard examples/renew.lua [CONFIG_DIR [RELOAD_COMMAND [ARG...]]]

Locks CONFIG_DIR (lock.dir: the same file certbot locks), backs up the live
certificate, stages the new one, swaps it in and reloads the service. Any
failure or termination signal restores the backup (ErrorHandler); temporary
files go in every case (ExitHandler). With no CONFIG_DIR it builds a demo tree
under $TMPDIR first; RELOAD_COMMAND (run without a shell, by proc.run)
defaults to the harmless `true`. A signal that arrives while the reload runs
reaches the reload too, and the backup is restored only once it has exited.
]==]
local lfs = require "lfs"

local config = arg[1]
local reload = #arg >= 2 and table.move(arg, 2, #arg, 1, {}) or { "true" }

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read(path)
  local f = assert(io.open(path))
  local text = f:read("a")
  f:close()
  return text
end

local function copy(from, to) write(to, read(from)) end

if not config then                       -- a demo tree to work on
  config = os.tmpname()
  os.remove(config)
  assert(lfs.mkdir(config))
  assert(lfs.mkdir(config .. "/live"))
  write(config .. "/live/cert.pem", "-----OLD CERTIFICATE-----\n")
  print("demo tree: " .. config)
end

local live = config .. "/live/cert.pem"
local backup = config .. "/live/cert.pem.bak"
local staged = config .. "/live/cert.pem.new"

-- wait up to RENEW_LOCK_WAIT seconds (10) for certbot or another run to finish
local wait = tonumber(os.getenv("RENEW_LOCK_WAIT")) or 10
local lock_held <close> = lock.dir(config, { timeout = wait })
print("locked " .. config)

local temp <close> = ExitHandler(function()
  os.remove(staged)
  print("removed temporary files")
end)

copy(live, backup)
local restore <close> = ErrorHandler(function()
  os.rename(backup, live)
  print("restored the previous certificate")
end)

write(staged, "-----NEW CERTIFICATE " .. os.date("!%Y-%m-%dT%H:%M:%SZ") .. "-----\n")
assert(os.rename(staged, live))
print("installed the new certificate")

if os.getenv("RENEW_PAUSE") then         -- lets a test signal us mid-deploy
  io.read("l")
end

local r = proc.run(reload)
if r.status ~= 0 then
  error(("reload command %q failed (%s)"):format(table.concat(reload, " "),
        r.signal and ("signal " .. r.signal) or ("exit " .. tostring(r.status))), 0)
end
os.remove(backup)
print("reloaded; renewal done")
