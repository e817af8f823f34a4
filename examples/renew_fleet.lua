#!/usr/bin/env luaguard
--[==[
renew_fleet.lua — renewal on a fleet that shares one certificate store: at
most one machine renews a name at a time, whatever the store's file locking.

  LUAGUARD_ETCD_ENDPOINTS=http://etcd1:2379,http://etcd2:2379,http://etcd3:2379 \
    luaguard examples/renew_fleet.lua NAME CONFIG_DIR [RELOAD_COMMAND [ARG...]]

1. The fleet's lock: lock.lease(NAME) on etcd (waits up to FLEET_LOCK_WAIT
   seconds, 60 by default, for another machine's renewal of NAME; the lease
   lives FLEET_LEASE_TTL seconds, 15, unless renewed, as it is every third).
2. Then this machine's lock: lock.dir(CONFIG_DIR), the file certbot locks.
3. Then the renewal, with a backup restored on any failure (ErrorHandler).

Every write to the shared store is fenced: the lease's token (etcd's create
revision of the lock key, larger for every new holder) is written next to
the certificate, and the write is refused if the store already holds a
newer token: a machine that was paused past its lease (and so lost it)
cannot overwrite the work of the one that took over. Should the lease be
lost while this runs, the block stops as for a signal: the reload command
is stopped, the backup is restored, and the run fails with LeaseLost.
]==]
local name, config = arg[1], arg[2]
if not name or not config then
  io.stderr:write("usage: renew_fleet.lua NAME CONFIG_DIR [RELOAD_COMMAND [ARG...]]\n")
  os.exit(64)
end
local reload = #arg >= 3 and table.move(arg, 3, #arg, 1, {}) or { "true" }

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local fleet <close> = lock.lease(name, { timeout = tonumber(os.getenv("FLEET_LOCK_WAIT")) or 60,
                                         ttl = tonumber(os.getenv("FLEET_LEASE_TTL")) or 15 })
local token = fleet:token()
print(("fleet lock on %s, token %d"):format(name, token))

local here <close> = lock.dir(config)
local live, backup = config .. "/live/cert.pem", config .. "/live/cert.pem.bak"
local token_file = config .. "/live/token"

-- the fence: a store already written by a newer holder is left alone
local stored = tonumber(read(token_file) or "0") or 0
if stored > token then
  error(("the store holds token %d, newer than ours (%d): not writing"):format(stored, token), 0)
end

write(backup, read(live) or "")
local restore <close> = ErrorHandler(function()
  os.rename(backup, live)
  print("restored the previous certificate")
end)

fleet:check()             -- still ours, right before the write
write(live, ("-----NEW CERTIFICATE for %s, token %d-----\n"):format(name, token))
write(token_file, tostring(token))
print("installed the new certificate")

if os.getenv("RENEW_PAUSE") then         -- lets a test act mid-deploy
  io.read("l")
end

local r = proc.run(reload)
if r.status ~= 0 then
  error(("reload command %q failed (exit %s)"):format(table.concat(reload, " "),
                                                   tostring(r.status)), 0)
end
os.remove(backup)
print("reloaded; renewal done")
