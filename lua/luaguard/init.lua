--- luaguard: directory locks and cleanup guards for Lua 5.4.
--
--   local g = require "luaguard"
--   local l <close> = g.lock.dir("/etc/letsencrypt")      -- held, or raises
--   local h <close> = g.ErrorHandler(restore, backup)     -- armed at once
--   h:register(os.remove, tmpfile)
--
-- This facade sits over the C core 'luaguard.core' (luasystem's shape). The
-- host (the luaguard program) and libluaguard compile this very file in; stock
-- lua5.4 finds it on LUA_PATH and the core on LUA_CPATH. It sets no globals:
-- only the host creates 'lock', 'ErrorHandler' and 'ExitHandler'.

local core = require "luaguard.core"

-- lock.lease / lock.LeaseLock live in luaguard.lease (luaguard/lease.so, with
-- libcurl), loaded on first use: the first look-up of either puts both in
-- place, so even the first call is the C function itself.
local lock = setmetatable({}, {
  __index = function(t, name)
    if name ~= "lease" and name ~= "LeaseLock" then return nil end
    local lease = require "luaguard.lease"
    rawset(t, "lease", lease.lease)
    rawset(t, "LeaseLock", lease.LeaseLock)
    return lease[name]
  end,
})

local M = {
  _VERSION = "luaguard " .. core._VERSION,

  lock = lock,

  --- ErrorHandler([fn, ...]) -> armed handler: its cleanups run, last
  -- registered first, when it is closed by an error or a handled signal.
  ErrorHandler = core.ErrorHandler,
  --- ExitHandler([fn, ...]) -> armed handler whose cleanups run on every close.
  ExitHandler = core.ExitHandler,

  --- proc.run(argv [, opts]) -> {status, signal, stdout, stderr, timed_out, pid};
  -- proc.spawn(argv [, opts]) -> Process (wait, kill, pid, <close>). argv is a
  -- table of strings, run without a shell. A handled signal that stops a
  -- guarded block stops its children first (forwarded once, grace, SIGKILL).
  proc = core.proc,
}

--- lock.dir(dir [, {timeout = s}]) -> held LockFile on dir/.certbot.lock,
-- the file certbot itself locks, so the two exclude each other.
lock.dir = core.lock_dir
--- lock.LockFile(path [, {timeout = s}]) -> held LockFile on path.
-- timeout: seconds to wait for a holder elsewhere (0, the default: fail
-- at once; math.huge: forever); waiting: called once, {path, pid, waited},
-- when a wait passes 1 s. Errors are tables: kind "LockError"
-- (path, pid, waited) or "OSError" (errno, path); tostring gives the text.
lock.LockFile = core.LockFile
--- lock.lease(name [, opts]) -> held LeaseLock on etcd (lock.LeaseLock too),
-- by the metatable above: opts endpoints, ttl, timeout, prefix, cacert, cert,
-- key, user, password. Errors: LockError (name, holder, lease, waited),
-- EtcdError (endpoint, code, message), LeaseLost (name, key, token) when the
-- lease goes while held.

return M
