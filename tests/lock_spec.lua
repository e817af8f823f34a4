-- lock.dir / lock.LockFile (SPEC section 3), against real processes: other
-- luaguard processes, certbot's own lock (Debian's python3-certbot), killed
-- holders, and a counter harness that must see overlaps when the lock is naive.
local H = require "tests.helpers"
local lfs = require "lfs"

local lua = H.run_prelude

-- A luaguard process holding dir's lock until 'stop' appears.
local function hold_with_luaguard(dir)
  local d = H.tmpdir()
  local job = H.spawn_script(H.prelude .. [[
    local l = lock.dir(arg[1])
    ready(arg[2])
    wait_for(arg[3])
    l:release()
  ]], { dir, d .. "/ready", d .. "/stop" })
  local pid = tonumber(H.wait_for(d .. "/ready"):match("%d+"))
  job.pid = pid
  job.stop_file = d .. "/stop"
  function job:stop() H.write(d .. "/stop", "") return self:wait() end
  return job
end

local hold_with_certbot = H.hold_with_certbot

local function certbot_try(dir)
  return H.run({ H.python, "-c", [[
import sys
from certbot import errors
from certbot._internal import lock
try:
    lock.lock_dir(sys.argv[1]).release()
    print("acquired")
except errors.LockError as e:
    print("LockError")
]], dir })
end

describe("lock", function()
  teardown(H.cleanup_tmp)

  it("returns a held LockFile on dir/.certbot.lock and shows its state", function()
    local d = H.tmpdir()
    local r = lua([[
      local l = lock.dir(arg[1])
      print(tostring(l), l:is_locked())
      l:release()
      print(tostring(l), l:is_locked())
    ]], { d })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal(("LockFile(%s/.certbot.lock) <acquired>\ttrue\n"
                   .. "LockFile(%s/.certbot.lock) <released>\tfalse\n"):format(d, d), r.stdout)
  end)

  it("names dir/.certbot.lock once whether or not the directory ends in a slash", function()
    local d = H.tmpdir()
    local r = lua([[
      local l = lock.dir(arg[1] .. "/")
      print(tostring(l))
      l:release()
    ]], { d })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal(("LockFile(%s/.certbot.lock) <acquired>\n"):format(d), r.stdout)
  end)

  it("locks a file directly under / (the parent is / itself), and removes it", function()
    -- (the suite runs as root, as scripts/setup needs; a user who may not
    -- create in / gets the OSError that says so, checked as well)
    local path = ("/luaguard-test-%d.lock"):format(math.random(1e9))
    local r = lua([[
      local ok, l = pcall(lock.LockFile, arg[1])
      if not ok then print(l.kind, l.errno) return end
      print(tostring(l))
      l:release()
      print(io.open(arg[1]) == nil)
    ]], { path })
    os.remove(path)
    assert.are.equal(0, r.status, r.stderr)
    if H.is_root then
      assert.are.equal(("LockFile(%s) <acquired>\ntrue\n"):format(path), r.stdout)
    else
      assert.are.equal("OSError\t13\n", r.stdout)
    end
  end)

  it("releases quietly a held file someone deleted by hand", function()
    local d = H.tmpdir()
    local r = lua([[
      local l = lock.LockFile(arg[1] .. "/my.lock")
      os.remove(arg[1] .. "/my.lock")
      l:release()
      print(l:is_locked(), io.open(arg[1] .. "/my.lock") == nil)
    ]], { d })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("false\ttrue\n", r.stdout)
    assert.are.equal("", r.stderr)
  end)

  it("locks in a directory it may write and search but not list (mode 0300)", function()
    -- its descriptor of the directory needs no read right (O_PATH); as root
    -- every right is granted, so the host runs as nobody, in nobody's directory
    local d = H.tmpdir() .. "/wx"
    assert(lfs.mkdir(d))
    local opts
    if H.is_root then
      os.execute("chown 65534:65534 " .. H.quote(d))
      opts = { prefix = H.as_nobody }
    end
    os.execute("chmod 0300 " .. H.quote(d))
    local r = H.run_script(H.prelude .. [[
      local l = lock.dir(arg[1])
      print(l:is_locked(), exists(arg[1] .. "/.certbot.lock"))
      l:release()
      print(l:is_locked(), exists(arg[1] .. "/.certbot.lock"))
    ]], { d }, opts)
    os.execute("chmod 0755 " .. H.quote(d))
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("true\ttrue\nfalse\tfalse\n", r.stdout)
  end)

  it("creates the file with mode 0600 and removes it on release", function()
    local d = H.tmpdir()
    local r = lua([[
      local lfs = require "lfs"
      local l = lock.LockFile(arg[1] .. "/my.lock")
      print(lfs.attributes(arg[1] .. "/my.lock", "permissions"))
      l:release()
      print((lfs.attributes(arg[1] .. "/my.lock", "mode")))
    ]], { d })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("rw-------\nnil\n", r.stdout)
  end)

  it("removes the file before unlocking it (certbot's order), as strace shows", function()
    -- unlock first and a third process could lock a file about to vanish
    local d = H.tmpdir()
    local trace = d .. "/trace"
    local r = H.run({ "strace", "-o", trace, "-e", "trace=openat,unlinkat,close,fcntl",
                H.host, "-e", "lock.dir(os.getenv('LOCKDIR')):release()" },
              -- LeakSanitizer cannot run under ptrace; the rest of ASan still does
              { env = { LOCKDIR = d, ASAN_OPTIONS = os.getenv("ASAN_OPTIONS")
                        and os.getenv("ASAN_OPTIONS") .. ":detect_leaks=0" or false } })
    assert.are.equal(0, r.status, r.stderr)
    local lines = {}
    for line in io.lines(trace) do lines[#lines + 1] = line end
    local fd, opened, locked, unlinked, closed
    for i, line in ipairs(lines) do
      if not fd then
        -- (through the directory's descriptor: openat(N, ".certbot.lock", ...))
        fd = line:match('^openat%([%w_]+, "[^"]*%.certbot%.lock", [^)]*%)%s+=%s+(%d+)')
        if fd then opened = i end
      elseif not locked and line:find("^fcntl%(" .. fd .. ", F_SETLK") then locked = i
      elseif not unlinked and line:find('^unlinkat%([%w_]+, "[^"]*%.certbot%.lock", 0%)%s+=%s+0') then unlinked = i
      elseif not closed and line:find("^close%(" .. fd .. "%)") then closed = i end
    end
    assert.is_truthy(opened and locked and unlinked and closed,
      "open/lock/unlink/close not all seen:\n" .. table.concat(lines, "\n"))
    assert.is_true(opened < locked and locked < unlinked and unlinked < closed,
      ("order: open %d, lock %d, unlink %d, close %d"):format(opened, locked, unlinked, closed))
  end)

  it("leaves a program it starts no descriptor of the lock: neither the file's nor its directory's", function()
    local d, out = H.tmpdir(), H.tmpdir() .. "/fds"
    local r = lua([[
      local l = lock.dir(arg[1])
      assert(os.execute("ls -l /proc/self/fd/ > " .. arg[2]))
      print(l:is_locked())
    ]], { d, out })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("true\n", r.stdout)
    local listing = H.read(out)
    assert.matches("%-> /dev/null", listing)        -- the listing is of the right thing
    assert.is_nil(listing:find(d, 1, true), listing)
  end)

  it("makes acquire on a held lock and release on a released one do nothing", function()
    local d = H.tmpdir()
    local r = lua([[
      local l = lock.dir(arg[1])
      l:acquire(); l:acquire()
      print(l:is_locked())
      l:release(); l:release()
      print(l:is_locked())
      l:acquire()
      print(l:is_locked(), io.open(arg[1] .. "/.certbot.lock") ~= nil)
      l:release()
    ]], { d })
    assert.are.equal("true\nfalse\ntrue\ttrue\n", r.stdout, r.stderr)
  end)

  it("releases a <close> variable at scope end and a collected LockFile", function()
    local d = H.tmpdir()
    local r = lua([[
      local path = arg[1] .. "/.certbot.lock"
      do
        local l <close> = lock.dir(arg[1])
        print(io.open(path) ~= nil)
      end
      print(io.open(path) ~= nil)
      lock.dir(arg[1])             -- dropped at once
      collectgarbage(); collectgarbage()
      print(io.open(path) ~= nil, pcall(lock.dir, arg[1]))
    ]], { d })
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("^true\nfalse\nfalse\ttrue\tLockFile%(", r.stdout)
  end)

  it("releases a lock left held at exit, and one in a <close> on error", function()
    local d = H.tmpdir()
    local r = lua("lock.dir(arg[1]) _G.keep = true", { d })
    assert.are.equal(0, r.status)
    assert.is_false(H.exists(d .. "/.certbot.lock"))
    r = lua("local l <close> = lock.dir(arg[1]); error('fail')", { d })
    assert.are.equal(1, r.status)
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("refuses a lock held by another process: LockError with path and pid", function()
    local d = H.tmpdir()
    local holder = hold_with_luaguard(d)
    local r = lua([[
      local ok, err = pcall(lock.dir, arg[1])
      print(ok, err.kind, err.path, err.pid)
      print(tostring(err))
    ]], { d })
    holder:stop()
    local ok, kind, path, pid = r.stdout:match("^(%S+)\t(%S+)\t(%S+)\t(%S+)\n")
    assert.are.equal("false", ok, r.stderr)
    assert.are.equal("LockError", kind)
    assert.are.equal(d .. "/.certbot.lock", path)
    assert.are.equal(tostring(holder.pid), pid)
    local msg = r.stdout:match("\n(.*)\n$")
    assert.matches(d .. "/.certbot.lock", msg, 1, true)
    assert.matches("another instance is running", msg, 1, true)
    assert.matches(tostring(holder.pid), msg, 1, true)
    assert.is_nil(msg:find("delete") or msg:find("remove"))
  end)

  it("waits about as long as the timeout asks, then fails", function()
    local d = H.tmpdir()
    local holder = hold_with_luaguard(d)
    local r = lua([[
      local start = io.popen("date +%s.%N"):read("n")
      local ok, err = pcall(lock.dir, arg[1], { timeout = 0.4 })
      local stop = io.popen("date +%s.%N"):read("n")
      print(ok, err.kind, string.format("%.2f", stop - start), string.format("%.2f", err.waited))
    ]], { d })
    holder:stop()
    local ok, kind, elapsed, waited = r.stdout:match("^(%S+)\t(%S+)\t(%S+)\t(%S+)")
    assert.are.equal("false", ok, r.stderr)
    assert.are.equal("LockError", kind)
    assert.is_true(tonumber(elapsed) >= 0.4 and tonumber(elapsed) < 2, "elapsed " .. elapsed)
    assert.is_true(tonumber(waited) >= 0.4, "waited " .. waited)
  end)

  it("two processes waiting for each other's lock (a cycle the kernel refuses): a LockError at the timeout", function()
    -- A holds a and waits for b; B holds b, then waits for a: B's F_SETLKW
    -- would close the cycle, the kernel says EDEADLK, and B waits by naps
    -- until its timeout (then A gets b)
    local d = H.tmpdir()
    local a = H.spawn_script(H.prelude .. [[
      local mine = lock.LockFile(arg[1] .. "/a")
      ready(arg[1] .. "/a_holds")
      wait_for(arg[1] .. "/b_holds")
      local ok, e = pcall(lock.LockFile, arg[1] .. "/b", { timeout = 10 })
      print("A", ok and "acquired" or e.kind)
    ]], { d })
    local b = H.spawn_script(H.prelude .. [[
      local mine = lock.LockFile(arg[1] .. "/b")
      ready(arg[1] .. "/b_holds")
      wait_for(arg[1] .. "/a_holds")
      nap(0.3)                                   -- A is in its wait by now
      local ok, e = pcall(lock.LockFile, arg[1] .. "/a", { timeout = 1 })
      print("B", ok and "acquired" or e.kind, ok or e.errno, ok or e.waited >= 1)
    ]], { d })
    assert.are.equal(0, b:wait(20), b:stderr())
    assert.are.equal(0, a:wait(20), a:stderr())
    assert.are.equal("B\tLockError\tnil\ttrue\n", b:stdout())
    assert.are.equal("A\tacquired\n", a:stdout())
  end)

  it("gets the lock soon after the holder releases while waiting", function()
    local d = H.tmpdir()
    local holder = hold_with_luaguard(d)
    local w = H.tmpdir()
    local waiter = H.spawn_script(H.prelude .. [[
      ready(arg[2])
      local l = lock.dir(arg[1], { timeout = 20 })
      print("got", l:is_locked())
    ]], { d, w .. "/ready" })
    H.wait_for(w .. "/ready")
    H.sleep(0.2)
    assert.are.equal(0, holder:stop())
    assert.are.equal(0, waiter:wait(10), waiter:stderr())
    assert.are.equal("got\ttrue\n", waiter:stdout())
  end)

  describe("a wait blocks in the kernel (F_SETLKW)", function()
    it("and is woken by the holder's unlock, not by polling (strace counts the tries)", function()
      local d = H.tmpdir()
      local holder = hold_with_luaguard(d)
      local trace = H.tmpdir() .. "/trace"
      os.execute(("(sleep 1; touch %s) &"):format(H.quote(holder.stop_file)))
      local r = H.run({ "strace", "-f", "-e", "trace=fcntl", "-o", trace, H.host, "-e",
                        ("local l = lock.dir(%q, {timeout = 20}); print(l:is_locked())"):format(d) },
                      { bare = true, env = { ASAN_OPTIONS = os.getenv("ASAN_OPTIONS")
                          and os.getenv("ASAN_OPTIONS") .. ":detect_leaks=0" or false } })
      assert.are.equal(0, holder:wait(10))
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("true\n", r.stdout)
      local tries, blocked = 0, 0
      for line in io.lines(trace) do
        if line:find("F_SETLK,", 1, true) then tries = tries + 1 end
        if line:find("F_SETLKW", 1, true) then blocked = blocked + 1 end
      end
      -- polling with naps of at most 4 ms would try about 250 times in that second
      assert.is_true(blocked >= 1, "no F_SETLKW in the trace")
      assert.is_true(tries <= 3, tries .. " F_SETLK tries in a 1 s wait")
    end)

    it("calls opts.waiting once after a second, with the path, the holder's pid and the time waited", function()
      local d = H.tmpdir()
      local holder = hold_with_luaguard(d)
      local r = lua([[
        local calls = 0
        local l = lock.dir(arg[1], { timeout = 20, waiting = function(info)
          calls = calls + 1
          print(info.path, info.pid, string.format("%.1f", info.waited), l)
          io.open(arg[2], "w"):close()     -- the holder lets go now
        end })
        print(calls, l:is_locked())
      ]], { d, holder.stop_file })
      assert.are.equal(0, holder:wait(10))
      assert.are.equal(0, r.status, r.stderr)
      local path, pid, waited, rest = r.stdout:match("^(%S+)\t(%d+)\t(%S+)\tnil\n(.*)$")
      assert.are.equal(d .. "/.certbot.lock", path, r.stdout)
      assert.are.equal(holder.pid, tonumber(pid))
      assert.is_true(tonumber(waited) >= 1 and tonumber(waited) < 3, "waited " .. tostring(waited))
      assert.are.equal("1\ttrue\n", rest)
    end)

    -- With no handler armed, SIGINT is lua.c's: a hook asks the chunk to stop
    -- at its next instruction. A lock wait ends for it too, or Ctrl-C would
    -- wait for the lock (20 s here, forever with math.huge).
    it("with no handler armed, ends at lua5.4's Ctrl-C (SIGINT), under lua5.4 and in the REPL", function()
      local d = H.tmpdir()
      local holder = hold_with_luaguard(d)
      local w = H.tmpdir()
      local wait_line = ("local ok, e = pcall(lock.dir, %q, { timeout = 20, waiting = function() "
        .. "io.open(%q, 'w'):write(io.open('/proc/self/stat'):read('n'), '\\n'):close() end }); "
        .. "print('not interrupted', ok, e)"):format(d, w .. "/waiting")
      local function sigint_when_waiting(job)
        local pid = tonumber(H.wait_for(w .. "/waiting", 10):match("%d+"))
        -- back in the kernel's wait: SIGINT while opts.waiting still runs
        -- is an error of opts.waiting, which the chunk's pcall catches
        H.wait_wchan(pid, "^fcntl_setlk")
        H.kill(pid, "INT")
        local status = job:poll(10)   -- the wait's own end is 20 s away
        os.remove(w .. "/waiting")
        assert(status, "the wait went on after SIGINT")
        return status
      end
      -- stock lua5.4, the module: the -e chunk stops with lua.c's message
      local stock = H.spawn({ H.lua, "-e", "lock = require('luaguard').lock; " .. wait_line },
                            { env = H.module_env })
      assert.are.equal(1, sigint_when_waiting(stock), stock:stderr())
      assert.matches("^lua5.4: %(command line%):1: interrupted!\n", stock:stderr())
      assert.are.equal("", stock:stdout())
      -- the REPL: the line stops as lua5.4's would, the session goes on
      local stdin = H.write(w .. "/stdin", wait_line .. "\nprint('goes on')\nos.exit(7)\n")
      local repl = H.spawn({ H.host, "-i" }, { stdin = stdin })
      assert.are.equal(7, sigint_when_waiting(repl), repl:stderr())
      assert.matches("stdin:1: interrupted!", repl:stderr())
      assert.matches("\ngoes on\n", repl:stdout())
      assert.is_nil(repl:stdout():find("\nnot interrupted\t", 1, true))   -- (readline echoes the line)
      assert.are.equal(0, holder:stop())
    end)

    it("stops when opts.waiting raises: the same error goes on, nothing held, nothing left", function()
      local d = H.tmpdir()
      local holder = hold_with_luaguard(d)
      local r = lua([[
        local mine = setmetatable({}, { __tostring = function() return "mine" end })
        local lf
        local ok, err = pcall(function()
          lf = lock.LockFile(arg[1] .. "/.certbot.lock", { timeout = 20, waiting = function() error(mine) end })
        end)
        print(ok, err == mine, lf)
        -- the constructor's waiting is acquire's default; acquire's own replaces it
        local called
        ok, err = pcall(lock.dir, arg[1], { timeout = 1.2, waiting = setmetatable({}, { __call = function() called = true end }) })
        print(ok, err.kind, called)
      ]], { d })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("false\ttrue\tnil\nfalse\tLockError\ttrue\n", r.stdout)
      assert.are.equal(0, holder:stop())
      assert.is_false(H.exists(d .. "/.certbot.lock"))
    end)

    it("refuses a waiting that cannot be called, before it locks anything", function()
      local d = H.tmpdir()
      local r = lua([[
        print(pcall(lock.dir, arg[1], { waiting = 5 }))
        local l = lock.dir(arg[1]); l:release()
        print(pcall(l.acquire, l, { waiting = "no" }))
        print(l:is_locked())
      ]], { d })
      assert.are.equal(0, r.status, r.stderr)
      assert.matches("^false\tbad argument #2 to '[%w._?]+' %(waiting must be a function%)\n" ..
                     "false\tbad argument #2 to '[%w._?]+' %(waiting must be a function%)\nfalse\n$", r.stdout)
      assert.is_false(H.exists(d .. "/.certbot.lock"))
    end)
  end)

  it("waits forever with math.huge until the holder goes", function()
    local d = H.tmpdir()
    local holder = hold_with_luaguard(d)
    local waiter = H.spawn_script("local l = lock.dir(arg[1], {timeout = math.huge}); print(l:is_locked())", { d })
    H.sleep(0.3)
    assert.is_nil(waiter:poll(0))
    holder:stop()
    assert.are.equal(0, waiter:wait(10))
    assert.are.equal("true\n", waiter:stdout())
  end)

  it("is freed by the kernel when the holder is SIGKILLed (the file stays)", function()
    local d = H.tmpdir()
    local holder = hold_with_luaguard(d)
    H.kill(holder.pid, "KILL")
    assert.are.equal(128 + 9, holder:wait())
    assert.is_true(H.exists(d .. "/.certbot.lock"))
    local r = lua("local l = lock.dir(arg[1]); print(l:is_locked()); l:release()", { d })
    assert.are.equal("true\n", r.stdout, r.stderr)
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("excludes certbot's own lock_dir, both ways", function()
    local d = H.tmpdir()
    local certbot = hold_with_certbot(d)
    local r = lua("local ok, e = pcall(lock.dir, arg[1]); print(ok, e.kind, e.pid)", { d })
    assert.are.equal(("false\tLockError\t%d\n"):format(certbot.pid), r.stdout, r.stderr)
    assert.are.equal(0, certbot:stop())
    local mine = hold_with_luaguard(d)
    assert.are.equal("LockError\n", certbot_try(d).stdout)
    mine:stop()
    assert.are.equal("acquired\n", certbot_try(d).stdout)
  end)

  it("ends at once a wait begun by a plain __close while a signal's stop unwinds the block", function()
    -- the stop is in flight through that block: a wait there would only
    -- hold the stop up to its timeout (10 s) before the cleanups run
    local d = H.tmpdir()
    local certbot = hold_with_certbot(d)
    local r = lua([[
      local t0 = os.time()
      do
        local outer <close> = ErrorHandler(function() print("outer cleanup", os.time() - t0 < 5) end)
        local mid <close> = setmetatable({}, { __close = function()
          pcall(lock.dir, arg[1], { timeout = 10 })
        end })
        local inner <close> = ErrorHandler(function() print("inner cleanup") end)
        kill("TERM")
        spin()
      end
    ]], { d })
    assert.are.equal(0, certbot:stop())
    assert.are.equal(128 + 15, r.status, r.stderr)
    assert.are.equal("inner cleanup\nouter cleanup\ttrue\n", r.stdout)
  end)

  it("excludes a second LockFile on the same path in one process, keeping the first", function()
    local d = H.tmpdir()
    local w = H.tmpdir()
    local job = H.spawn_script(H.prelude .. [[
      local a = lock.LockFile(arg[1] .. "/x.lock")
      local ok, err = pcall(lock.LockFile, arg[1] .. "/x.lock")
      print(ok, err.kind, err.pid == PID, a:is_locked())
      local ok2 = pcall(lock.LockFile, arg[1] .. "/x.lock", { timeout = 0.05 })
      print(ok2)
      io.stdout:flush()
      ready(arg[2])
      wait_for(arg[3])
      a:release()
      local b = lock.LockFile(arg[1] .. "/x.lock")
      print(b:is_locked())
    ]], { d, w .. "/ready", w .. "/stop" })
    H.wait_for(w .. "/ready")
    -- the refused attempts must not have dropped the first one's lock
    local r = lua("print(pcall(lock.LockFile, arg[1] .. '/x.lock'))", { d })
    H.write(w .. "/stop", "")
    assert.are.equal(0, job:wait(), job:stderr())
    assert.matches("^false\t", r.stdout)
    assert.are.equal("false\tLockError\ttrue\ttrue\nfalse\ntrue\n", job:stdout())
  end)

  it("makes nine system calls per lock cycle, no more (strace)", function()
    -- open the directory, open the file, fstat, lock, stat the path (the
    -- re-check); at release stat the path (still ours?), unlink, close both.
    -- scripts/bench measures it against the floor of the same calls.
    local d = H.tmpdir()
    local trace = d .. "/trace"
    local r = H.run({ "strace", "-o", trace, H.host, "-e",
                      ("for _ = 1, 3 do lock.dir(%q):release() end"):format(d) },
                    { bare = true, env = { ASAN_OPTIONS = os.getenv("ASAN_OPTIONS")
                        and os.getenv("ASAN_OPTIONS") .. ":detect_leaks=0" or false } })
    assert.are.equal(0, r.status, r.stderr)
    local calls, inside, closes = {}, false, 0
    for line in io.lines(trace) do
      local name = line:match("^(%w+)%(")
      if line:find(('"%s", O_'):format(d), 1, true) then inside, closes = true, 0 end
      if inside and name then calls[#calls + 1] = name end
      if inside and name == "close" then
        closes = closes + 1
        if closes == 2 then inside = false end
      end
    end
    local cycle = "openat openat newfstatat fcntl newfstatat newfstatat unlinkat close close"
    assert.are.equal((cycle .. " "):rep(3):sub(1, -2), table.concat(calls, " "))
  end)

  describe("release removes only its own file, through the directory it locked in", function()
    -- A holds; the world changes under it; B takes the lock that is there
    -- now; A's release must not remove B's live file, or a third process
    -- could lock while B holds.
    local function holder_then(setup, lock_path, b_path, c_dir)
      local w = H.tmpdir()
      local a = H.spawn_script(H.prelude .. [[
        local l = lock.LockFile(arg[1]); ready(arg[2]); wait_for(arg[3]); l:release()
        ready(arg[4])
      ]], { lock_path, w .. "/a_ready", w .. "/a_release", w .. "/a_done" })
      H.wait_for(w .. "/a_ready")
      setup()
      local b = H.spawn_script(H.prelude .. [[
        local l = lock.LockFile(arg[1]); ready(arg[2]); wait_for(arg[3]); l:release()
      ]], { b_path, w .. "/b_ready", w .. "/b_stop" })
      H.wait_for(w .. "/b_ready")
      H.write(w .. "/a_release", "")
      H.wait_for(w .. "/a_done")
      assert.are.equal(0, a:wait(), a:stderr())
      local still = H.exists(b_path)
      local c = lua(([[
        local ok, e = pcall(lock.dir, %q)
        print(ok and "acquired" or e.kind)
      ]]):format(c_dir))
      H.write(w .. "/b_stop", "")
      assert.are.equal(0, b:wait(), b:stderr())
      return still, c.stdout
    end

    it("a directory renamed while held (absolute path)", function()
      local root = H.tmpdir()
      local d = root .. "/live"
      lfs.mkdir(d)
      local still, c = holder_then(function()
        assert(os.rename(d, root .. "/old"))
        lfs.mkdir(d)
      end, d .. "/.certbot.lock", d .. "/.certbot.lock", d)
      assert.is_true(still, "B's lock file is still there")
      assert.are.equal("LockError\n", c, "a third process is refused while B holds")
      assert.is_false(H.exists(root .. "/old/.certbot.lock"), "A removed its own file")
    end)

    it("a symlink re-pointed while held (current -> releases/N)", function()
      local root = H.tmpdir()
      lfs.mkdir(root .. "/r1")
      lfs.mkdir(root .. "/r2")
      os.execute(("ln -s r1 %s"):format(H.quote(root .. "/current")))
      local still, c = holder_then(function()
        os.execute(("ln -sfn r2 %s"):format(H.quote(root .. "/current")))
      end, root .. "/current/.certbot.lock", root .. "/current/.certbot.lock", root .. "/current")
      assert.is_true(still, "B's lock file (in r2) is still there")
      assert.are.equal("LockError\n", c, "a third process is refused while B holds")
      assert.is_false(H.exists(root .. "/r1/.certbot.lock"), "A removed its own file, in r1")
    end)

    it("a held file deleted by hand and the name taken by another process", function()
      local d = H.tmpdir()
      local still, c = holder_then(function()
        os.remove(d .. "/.certbot.lock")
      end, d .. "/.certbot.lock", d .. "/.certbot.lock", d)
      assert.is_true(still, "B's lock file is still there")
      assert.are.equal("LockError\n", c, "a third process is refused while B holds")
    end)
  end)

  describe("an error of the check after locking (certbot's test_unexpected_os_err)", function()
    -- LeakSanitizer cannot run under ptrace; the rest of ASan still does
    local function no_lsan()
      local asan = os.getenv("ASAN_OPTIONS")
      return { ASAN_OPTIONS = asan and asan .. ":detect_leaks=0" or false }
    end

    -- The re-check's newfstatat is found in a first traced run, then made to
    -- fail with EIO (strace's fault injection) in a second, identical run.
    local function recheck_index(path)
      local d = H.tmpdir()
      local trace = d .. "/trace"
      local r = H.run({ "strace", "-o", trace, "-e", "trace=newfstatat,fcntl", H.host, "-e",
                        ("lock.LockFile(%q):release()"):format(path) }, { bare = true, env = no_lsan() })
      assert.are.equal(0, r.status, r.stderr)
      local n, after_lock = 0, false
      for line in io.lines(trace) do
        if line:find("F_SETLK", 1, true) then after_lock = true
        elseif line:match("^newfstatat%(") then
          n = n + 1
          if after_lock then return n end
        end
      end
      error("no re-check found in the trace")
    end

    local function with_eio(path, when)
      return H.run({ "timeout", "10", "strace", "-qq", "-o", "/dev/null", "-e", "trace=newfstatat",
                     "-e", "inject=newfstatat:error=EIO:when=" .. when, H.host, "-e", ([[
        local ok, e = pcall(lock.LockFile, %q)
        print(ok, type(e) == "table" and e.kind, type(e) == "table" and e.errno)
        print(tostring(e))
      ]]):format(path) }, { bare = true, env = no_lsan() })
    end

    it("is an OSError with its errno, at once, nothing left behind", function()
      local d = H.tmpdir()
      local path = d .. "/x.lock"
      local n = recheck_index(path)
      -- that call and every second one after it: each re-check fails, each
      -- fstat of a new attempt succeeds (a retry loop would spin forever)
      local r = with_eio(path, n .. "+2")
      assert.are.equal(0, r.status, r.stderr)
      assert.matches("^false\tOSError\t5\n", r.stdout)
      assert.matches("x.lock: Input/output error", r.stdout)
      -- nothing locked remains; the file itself may stay (the lock is not
      -- ours to vouch for), and a later attempt works
      local again = lua(("lock.LockFile(%q):release(); print('ok')"):format(path))
      assert.are.equal("ok\n", again.stdout, again.stderr)
    end)

    it("a single transient error is an OSError too, not a silent success", function()
      local d = H.tmpdir()
      local path = d .. "/x.lock"
      local n = recheck_index(path)
      local r = with_eio(path, tostring(n))
      assert.are.equal(0, r.status, r.stderr)
      assert.matches("^false\tOSError\t5\n", r.stdout)
    end)
  end)

  it("releases a relative lock path where it was taken, after a chdir", function()
    local d, elsewhere = H.tmpdir(), H.tmpdir()
    H.write(elsewhere .. "/x.lock", "a stranger's file")
    local r = lua([[
      local lfs = require "lfs"
      lfs.chdir(arg[1])
      local l = lock.LockFile("x.lock")
      lfs.chdir(arg[2])
      l:release()
    ]], { d, elsewhere })
    assert.are.equal(0, r.status, r.stderr)
    assert.is_false(H.exists(d .. "/x.lock"))
    assert.are.equal("a stranger's file", H.read(elsewhere .. "/x.lock"))
  end)

  it("refuses at once, not after the timeout, a lock this Lua state already holds", function()
    -- waiting could never end: nothing else in the state runs while it waits
    local r = lua([[
      local a <close> = lock.dir(arg[1])
      local t0 = os.time()
      local ok, e = pcall(lock.dir, arg[1], { timeout = math.huge })
      print(ok, e.kind, e.pid == PID, os.time() - t0 <= 1, a:is_locked())
      print(tostring(e))
    ]], { H.tmpdir() })
    assert.are.equal(0, r.status, r.stderr)
    local first, second = r.stdout:match("^([^\n]*)\n([^\n]*)\n$")
    assert.are.equal("false\tLockError\ttrue\ttrue\ttrue", first)
    assert.matches("another instance is running %(another LockFile of this Lua state holds it", second)
  end)

  it("refuses at once a lock this Lua state holds from a coroutine (one state, one context)", function()
    -- a coroutine is the same Lua state: while main waits, it cannot run to
    -- release; timeout 5 would be a wait that only ends by the timeout
    local r = lua([[
      local co = coroutine.wrap(function()
        local a <close> = lock.dir(arg[1])
        coroutine.yield(a:is_locked())
      end)
      local held = co()
      local t0 = os.time()
      local ok, e = pcall(lock.dir, arg[1], { timeout = 5 })
      print(held, ok, os.time() - t0 <= 1)
      print(tostring(e))
    ]], { H.tmpdir() })
    assert.are.equal(0, r.status, r.stderr)
    local first, second = r.stdout:match("^([^\n]*)\n([^\n]*)\n$")
    assert.are.equal("true\tfalse\ttrue", first)
    assert.matches("another LockFile of this Lua state holds it", second)
  end)

  it("opens another user's lock file in a sticky directory (fs.protected_regular)", function()
    -- O_CREAT on a file we do not own in a sticky world-writable directory is
    -- refused (EACCES) under protected_regular; the lock retries without it.
    -- Needs root (as scripts/test runs): it turns the sysctl on and back.
    local knob = "/proc/sys/fs/protected_regular"
    local original = assert(H.read(knob), "cannot read " .. knob)
    local d = H.tmpdir()
    os.execute("chmod 1777 " .. H.quote(d))
    assert.are.equal(0, H.run({ "runuser", "-u", "nobody", "--", "touch", d .. "/.certbot.lock" }).status)
    finally(function() H.write(knob, original) end)
    H.write(knob, "1\n")
    local r = lua([[
      local l = lock.dir(arg[1])
      print(l:is_locked())
      l:release()
      print(io.open(arg[1] .. "/.certbot.lock") == nil)
    ]], { d })
    assert.are.equal("true\ntrue\n", r.stdout, r.stderr)
  end)

  -- N processes incrementing a counter file under the lock: none lost. The
  -- same harness with a naive participant must see the overlap, or it proves
  -- nothing.
  describe("counter harness", function()
    local function participant_script()
      return [[
        local lfs = require "lfs"
        local dir, n = arg[1], tonumber(arg[2])
        local overlaps = 0
        for _ = 1, n do
          local l <close> = lock.dir(dir, { timeout = math.huge })
          if not lfs.mkdir(dir .. "/inside") then overlaps = overlaps + 1 end
          local f = io.open(dir .. "/counter"); local v = f and f:read("n") or 0
          if f then f:close() end
          f = io.open(dir .. "/counter.tmp", "w"); f:write(v + 1, "\n"); f:close()
          os.rename(dir .. "/counter.tmp", dir .. "/counter")
          lfs.rmdir(dir .. "/inside")
        end
        print(overlaps)
      ]]
    end

    local function run_harness(commands)
      local d = H.tmpdir()
      local jobs = {}
      for i, argv in ipairs(commands) do
        local full = {}
        for k, a in ipairs(argv) do full[k] = a end
        full[#full + 1] = d
        full[#full + 1] = "150"
        jobs[i] = H.spawn(full)
      end
      local overlaps = 0
      for _, job in ipairs(jobs) do
        assert.are.equal(0, job:wait(120), job:stderr())
        overlaps = overlaps + (tonumber(job:stdout():match("%d+")) or 0)
      end
      local count = tonumber(H.read(d .. "/counter"):match("%d+"))
      return count, overlaps
    end

    it("loses no increment with 4 luaguard processes", function()
      local script = H.write(H.tmpdir() .. "/p.lua", participant_script())
      local argv = { H.host, script }
      local count, overlaps = run_harness({ argv, argv, argv, argv })
      assert.are.equal(0, overlaps)
      assert.are.equal(600, count)
    end)

    it("sees overlaps when participants skip the inode re-check", function()
      local naive = { H.bin .. "/lock_probe", "naive-counter" }
      local count, overlaps = run_harness({ naive, naive, naive, naive })
      assert.is_true(overlaps > 0 or count < 600,
        ("a naive lock went unnoticed: count %d, overlaps %d"):format(count, overlaps))
    end)
  end)
end)
