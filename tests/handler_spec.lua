-- ErrorHandler / ExitHandler (SPEC section 4) and the host's frame (section
-- 2), with real processes, real kill, real exit statuses. Scripts send signals
-- to themselves with kill(1) through io.popen (os.execute's system() ignores
-- SIGINT and SIGQUIT while it waits).
local H = require "tests.helpers"

local SIG = { HUP = 1, INT = 2, QUIT = 3, TERM = 15, XCPU = 24, XFSZ = 25 }

local host = H.run_prelude

local stock = H.run_stock

-- The caught-signal mask of this process, for the six: "before/during/after".
local SIGCGT = [[
local function caught()
  for line in io.lines("/proc/self/status") do
    local hex = line:match("^SigCgt:%s*(%x+)")
    if hex then
      local mask, out = tonumber(hex, 16), {}
      for _, s in ipairs({1, 2, 3, 15, 24, 25}) do
        out[#out + 1] = ((mask >> (s - 1)) & 1 == 1) and tostring(s) or "-"
      end
      return table.concat(out, ",")
    end
  end
end
]]

for _, kind in ipairs({ "ErrorHandler", "ExitHandler" }) do
  describe(kind .. " (certbot's error_handler_test)", function()
    teardown(H.cleanup_tmp)

    it("runs the cleanup once, with its bound arguments, when the block fails", function()
      local r = stock(([[
        local calls = {}
        local ok, err = pcall(function()
          local h <close> = %s(function(...) calls[#calls + 1] = table.concat({...}, ",") end, 42, "foo")
          error("ValueError", 0)
        end)
        print(ok, err, #calls, calls[1])
      ]]):format(kind))
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("false\tValueError\t1\t42,foo\n", r.stdout)
    end)

    it("stops the body on a signal and runs the cleanup once (with_signal)", function()
      -- an outer handler plays certbot's signal_receiver; its cleanup reports
      local r = stock(([[
        local calls, should_be_42 = 0, 42
        local receiver <close> = ErrorHandler()
        receiver:register(function()
          print(should_be_42, calls, table.concat(receiver:received(), ","))
        end)
        local inner = %s(function() calls = calls + 1 end)
        inner:run(function()
          kill("TERM")
          should_be_42 = should_be_42 * 10
        end)
        io.stderr:write("NOT REACHED\n")
      ]]):format(kind))
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.is_nil(r.stderr:find("NOT REACHED"))
      assert.are.equal("42\t1\t15\n", r.stdout)
    end)

    it("restores the dispositions it replaced once the last handler closes", function()
      local r = stock(SIGCGT .. ([[
        local before = caught()
        local h = %s(function() end)
        local during = caught()
        h:close()
        print(before, during, caught())
      ]]):format(kind))
      assert.are.equal(0, r.status, r.stderr)
      local before, during, after = r.stdout:match("^(%S+)\t(%S+)\t(%S+)\n$")
      assert.are.equal("1,2,3,15,24,25", during)
      assert.are.equal(before, after)
      assert.are_not.equal(during, before)
    end)

    it("logs a failing cleanup and still runs the others (test_bad_recovery)", function()
      local r = stock(([[
        local init_calls, bad_calls = 0, 0
        local ok, err = pcall(function()
          local h <close> = %s(function() init_calls = init_calls + 1 end)
          h:register(function() bad_calls = bad_calls + 1; error("cleanup broke") end)
          error("ValueError", 0)
        end)
        print(ok, err, init_calls, bad_calls)
      ]]):format(kind))
      assert.are.equal(0, r.status)
      assert.are.equal("false\tValueError\t1\t1\n", r.stdout)
      assert.matches("cleanup broke", r.stderr)
    end)

    it("defers a signal sent from a cleanup; re-delivers after, in arrival order", function()
      -- certbot's test_bad_recovery_with_signal: the body gets sig2 (XFSZ),
      -- a cleanup sends sig1 (TERM); the receiver sees [sig2, sig1]
      local r = stock(([[
        local init_calls, bad_calls = 0, 0
        local receiver <close> = ErrorHandler(function() end)
        local h = %s(function() init_calls = init_calls + 1 end)
        h:register(function() bad_calls = bad_calls + 1; kill("TERM"); io.stderr:write("cleanup went on\n") end)
        local ok = pcall(h.run, h, function() kill("XFSZ") end)
        print("not reached")
      ]]):format(kind) .. "")
      assert.are.equal(128 + SIG.XFSZ, r.status, r.stderr)
      assert.matches("cleanup went on", r.stderr)
      r = stock(([[
        local receiver <close> = ErrorHandler(function() end)
        receiver:register(function() print(table.concat(receiver:received(), ",")) end)
        local h = %s(function() io.stdout:write("init ") end)
        h:register(function() kill("TERM") end)
        h:run(function() kill("XFSZ") end)
      ]]):format(kind))
      assert.are.equal(128 + SIG.XFSZ, r.status, r.stderr)
      assert.are.equal("init 25,15\n", r.stdout)
    end)

    it("runs nothing on os.exit (test_sysexit_ignored)", function()
      local r = host(([[
        local h <close> = %s(function() print("cleanup ran") end)
        os.exit(0)
      ]]):format(kind))
      assert.are.equal(0, r.status)
      assert.are.equal("", r.stdout)
    end)

    it("on a normal exit runs " .. (kind == "ErrorHandler" and "nothing" or "every cleanup"), function()
      local r = stock(([[
        local calls = {}
        do
          local h <close> = %s(function() calls[#calls + 1] = "init" end)
          h:register(function() calls[#calls + 1] = "func" end)
        end
        print(table.concat(calls, ","))
      ]]):format(kind))
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal(kind == "ErrorHandler" and "\n" or "func,init\n", r.stdout)
    end)

    it("on os.exit(n, true) closes as on a normal exit", function()
      local r = host(([[
        local h <close> = %s(function() print("cleanup ran") end)
        os.exit(3, true)
      ]]):format(kind))
      assert.are.equal(3, r.status)
      assert.are.equal(kind == "ErrorHandler" and "" or "cleanup ran\n", r.stdout)
    end)
  end)
end

describe("cleanup guards", function()
  teardown(H.cleanup_tmp)

  it("runs three cleanups last registered first", function()
    local r = host([[
      local h <close> = ExitHandler(io.write, "1 ")
      h:register(io.write, "2 "):register(io.write, "3 ")
    ]])
    assert.are.equal("3 2 1 ", r.stdout, r.stderr)
  end)

  it("hands a cleanup all its arguments, in order, 250 of them", function()
    local r = host([[
      local args = {}
      for i = 1, 250 do args[i] = i end
      local h <close> = ExitHandler(function(...)
        local n, in_order = select("#", ...), true
        for i = 1, n do in_order = in_order and select(i, ...) == i end
        print(n, in_order)
      end, table.unpack(args))
    ]])
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("250\ttrue\n", r.stdout)
  end)

  for name, number in pairs(SIG) do
    it("dies by SIG" .. name .. " (status " .. 128 + number .. ") after the cleanups", function()
      local d = H.tmpdir()
      local r = host([[
        local l <close> = lock.dir(arg[1])
        local h <close> = ExitHandler(function() io.write("cleaned ") end)
        kill(arg[2])
        io.write("NOT REACHED")
      ]], { d, name })
      assert.are.equal(128 + number, r.status, r.stderr)
      assert.are.equal("cleaned ", r.stdout)
      assert.is_false(H.exists(d .. "/.certbot.lock"))
    end)
  end

  it("leaves an ignored SIGHUP ignored (nohup) and still handles SIGTERM", function()
    local d = H.tmpdir()
    local script = H.write(d .. "/s.lua", H.prelude .. [[
      local h <close> = ExitHandler(function() io.write("cleaned ") end)
      kill("HUP")
      io.write("survived HUP ")
      kill("TERM")
      io.write("NOT REACHED")
    ]])
    local r = H.run({ "env", "--ignore-signal=HUP", H.host, script })
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("survived HUP cleaned ", r.stdout)
  end)

  it("nests: inner cleanups, then outer; the outer received every signal, in order", function()
    -- in the host: under stock lua5.4 the SIGINT saved at arming is lua.c's
    -- own handler, which the re-delivery rightly chains to
    local r = host([[
      local outer <close> = ErrorHandler(function() end)
      outer:register(function() print("outer cleanup", table.concat(outer:received(), ",")) end)
      local inner <close> = ExitHandler(function() print("inner cleanup"); kill("HUP") end)
      kill("INT")
    ]])
    assert.are.equal(128 + SIG.INT, r.status, r.stderr)
    assert.are.equal("inner cleanup\nouter cleanup\t2,1\n", r.stdout)
  end)

  it("arms and closes a nested handler without a system call, cleanups or not (strace)", function()
    -- the host's outer frame installs the six handlers (and the kick's) once;
    -- what runs inside never touches them again: not for arming, not for
    -- closing, not for running cleanups (our handler has SA_RESTART already)
    local function signal_calls(code)
      local trace = H.tmpdir() .. "/trace"
      local r = H.run({ "strace", "-o", trace, "-e", "trace=rt_sigaction,rt_sigprocmask,timer_create,timer_settime,timer_delete",
                        H.host, "-e", code },
                      { bare = true, env = { ASAN_OPTIONS = os.getenv("ASAN_OPTIONS")
                          and os.getenv("ASAN_OPTIONS") .. ":detect_leaks=0" or false } })
      assert.are.equal(0, r.status, r.stderr)
      local n = 0
      for line in io.lines(trace) do
        if line:find("^rt_sig") or line:find("^timer_") then n = n + 1 end
      end
      return n
    end
    local empty = signal_calls("local x = 1")
    local nested = signal_calls([[
      local f = function() end
      for _ = 1, 1000 do
        local h <close> = ErrorHandler(f)
        h:register(f)
      end]])
    assert.are.equal(empty, nested)
    local exits = signal_calls([[
      local f = function() end
      for _ = 1, 100 do
        local h <close> = ExitHandler(f)
      end]])
    assert.are.equal(empty, exits)
    local failing = signal_calls([[
      local f = function() end
      for _ = 1, 100 do
        pcall(function() local h <close> = ErrorHandler(f); error("x") end)
      end]])
    assert.are.equal(empty, failing)
  end)

  it("lets a later SIGTERM kill the process after a normal ErrorHandler exit", function()
    local r = stock([[
      local ran = false
      do local h <close> = ErrorHandler(function() ran = true end) end
      kill("TERM")
      print("NOT REACHED", ran)
    ]])
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("", r.stdout)
  end)

  it("cuts a read on a silent pipe short on SIGTERM", function()
    -- stdin is a FIFO whose writer (this test) stays silent
    local d = H.tmpdir()
    local fifo = d .. "/fifo"
    os.execute("mkfifo " .. H.quote(fifo))
    local job = H.spawn_script(H.prelude .. [[
      local h <close> = ExitHandler(function() print("cleaned") end)
      ready(arg[1])
      io.read("a")
      print("NOT REACHED")
    ]], { d .. "/ready" }, { stdin = fifo })
    local writer = assert(io.open(fifo, "w"))
    local pid = tonumber(H.wait_for(d .. "/ready"):match("%d+"))
    H.sleep(0.1)
    local t0 = io.popen("date +%s.%N"):read("n")
    H.kill(pid, "TERM")
    local status = job:wait(10)
    local elapsed = io.popen("date +%s.%N"):read("n") - t0
    writer:close()
    assert.are.equal(128 + SIG.TERM, status, job:stderr())
    assert.are.equal("cleaned\n", job:stdout())
    assert.is_true(elapsed < 1, ("took %.2f s"):format(elapsed))
  end)

  it("stops a lock wait at once on SIGTERM", function()
    local d = H.tmpdir()
    local w = H.tmpdir()
    local holder = H.spawn_script(H.prelude .. [[
      local l = lock.dir(arg[1]); ready(arg[2]); wait_for(arg[3])
    ]], { d, w .. "/hready", w .. "/stop" })
    H.wait_for(w .. "/hready")
    local waiter = H.spawn_script(H.prelude .. [[
      local h <close> = ExitHandler(function() print("cleaned") end)
      ready(arg[2])
      local l = lock.dir(arg[1], { timeout = math.huge })
      print("NOT REACHED")
    ]], { d, w .. "/wready" })
    local pid = tonumber(H.wait_for(w .. "/wready"):match("%d+"))
    H.sleep(0.2)
    H.kill(pid, "TERM")
    assert.are.equal(128 + SIG.TERM, waiter:wait(5), waiter:stderr())
    -- the wait ended with a SignalExit (not an OSError EINTR), the cleanup ran
    assert.are.equal("cleaned\n", waiter:stdout())
    assert.matches("^[^\n]*: SignalExit: SIGTERM\n", waiter:stderr())
    assert.is_nil(waiter:stderr():find("interrupted while waiting", 1, true))
    H.write(w .. "/stop", "")
    assert.are.equal(0, holder:wait())
  end)

  it("refuses a non-callable cleanup at register time", function()
    local r = host([[
      local h <close> = ErrorHandler()
      print(select(2, pcall(function() h:register(5) end)))
      print(select(2, pcall(function() ErrorHandler({}) end)))
      local callable = setmetatable({}, { __call = function(self, x) io.write("called ", x, "\n") end })
      local e <close> = ExitHandler(callable, "with arg")
      local none <close> = ExitHandler(nil)       -- nil alone: no cleanup
      print(tostring(h))
      print(tostring(none))
    ]])
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("", r.stderr)
    local l1, l2, l3, l4, l5 = r.stdout:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n$")
    assert.matches("bad argument #1 to 'register' %(callable expected, got number%)", l1)
    assert.matches("bad argument #1 to .*%(callable expected, got table%)", l2)
    assert.are.equal("ErrorHandler (0 cleanups, armed)", l3)
    assert.are.equal("ExitHandler (0 cleanups, armed)", l4)
    assert.are.equal("called with arg", l5)
  end)

  it("lets go of its cleanups once closed: their arguments are collected while it lives on", function()
    local r = host([[
      local weak = setmetatable({}, { __mode = "k" })
      local handlers = {}
      for _, kind in ipairs({ "ErrorHandler", "ExitHandler" }) do
        local arg = {}
        weak[arg] = kind
        local h = _G[kind](function() end, arg)
        h:close()
        handlers[#handlers + 1] = h        -- the handler stays reachable
      end
      collectgarbage()
      collectgarbage()
      print(next(weak) == nil, #handlers)
    ]])
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("true\t2\n", r.stdout)
  end)

  it("run returns the body's results, or re-raises its error after the cleanups", function()
    local r = host([[
      local h = ExitHandler(io.write, "cleanup ")
      print(h:run(function(a, b) return a + b, "two" end, 40, 2))
      local e0 = setmetatable({}, { __tostring = function() return "E0" end })
      local h2 = ErrorHandler(io.write, "cleanup2 ")
      local ok, e = pcall(h2.run, h2, function() error(e0) end)
      print(ok, e == e0)
      print(tostring(h), tostring(h2))
    ]])
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("cleanup 42\ttwo\ncleanup2 false\ttrue\n"
                  .. "ExitHandler (0 cleanups, closed)\tErrorHandler (0 cleanups, closed)\n", r.stdout)
  end)

  it("propagates the closing error unchanged (same object)", function()
    local r = stock([[
      local e0 = {}
      local ok, e = pcall(function()
        local h <close> = ErrorHandler(function() end)
        local x <close> = ExitHandler(function() end)
        error(e0)
      end)
      print(ok, e == e0)
    ]])
    assert.are.equal("false\ttrue\n", r.stdout, r.stderr)
  end)

  it("raises a SignalExit: kind, signal, name, tostring", function()
    local r = host([[
      local h <close> = ErrorHandler(function() end)
      xpcall(function() kill("TERM") end, function(e)
        print(e.kind, e.signal, e.name, tostring(e))
        return e
      end)
    ]])
    assert.are.equal(128 + SIG.TERM, r.status)
    assert.are.equal("SignalExit\t15\tSIGTERM\tSignalExit: SIGTERM\n", r.stdout)
  end)

  it("cannot be swallowed by a pcall inside the block", function()
    local r = host([[
      local h <close> = ExitHandler(function() print("cleaned") end)
      local ok, e = pcall(function() kill("TERM"); spin() end)
      print("SWALLOWED", ok, e)
      spin()
    ]])
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("cleaned\n", r.stdout)
  end)

  it("cannot be swallowed by a pcall straight around a wait that the signal cuts short", function()
    -- raised from C (proc.run's wait, a lock's): pcall calls the C function
    -- itself, no Lua function between them
    for _, call in ipairs({
      'pcall(proc.run, {"sh", "-c", "kill -TERM " .. PID .. "; sleep 5"})',
      'pcall(lock.dir, D, {timeout = 20})',
    }) do
      local d = H.tmpdir()
      local holder = H.spawn_script(H.prelude .. "local l = lock.dir(arg[1]); ready(arg[2]); nap(30)",
                                    { d, d .. "/ready" })
      H.wait_for(d .. "/ready")
      local r = host(([[
        D = %q
        local h <close> = ExitHandler(function() print("cleaned") end)
        if D ~= "" and not %s then io.popen("sleep 0.3; kill -TERM " .. PID .. " 2>/dev/null") end
        local ok, e = %s
        print("SWALLOWED", ok, e)
        spin()
      ]]):format(d, tostring(call:find("proc") ~= nil), call))
      holder:abandon()
      assert.are.equal(128 + SIG.TERM, r.status, call .. ": " .. r.stderr)
      assert.are.equal("cleaned\n", r.stdout, call)
    end
  end)

  it("runs cleanups once when a second signal lands in a message handler", function()
    for _ = 1, 5 do
      local r = host([[
        local n = 0
        local h <close> = ExitHandler(function() n = n + 1; print("cleanup", n) end)
        xpcall(function() kill("TERM") end, function(e)
          kill("INT")
          local s = 0
          for i = 1, 20000 do s = s + i end
          return e
        end)
        spin()
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("cleanup\t1\n", r.stdout)
    end
  end)

  it("runs an ErrorHandler's cleanups when __close gets a message handler's result", function()
    -- xpcall's handler runs before <close> variables close: __close receives
    -- the traceback string, not the SignalExit; the handler still knows
    local r = host([[
      local ok, e = xpcall(function()
        local h <close> = ErrorHandler(function() print("cleanup ran") end)
        kill("TERM")
      end, debug.traceback)
      print("NOT REACHED", ok)
    ]])
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("cleanup ran\n", r.stdout)
  end)

  it("h:close(err) with any error value, false too, runs an ErrorHandler's cleanups; nil is none", function()
    -- error(false) raises false: to __close and to close(err) it is an error;
    -- nil is what __close gets on a normal exit
    local r = host([[
      local h = ErrorHandler(function() print("rolled back") end)
      h:close(false)
      local h2 = ErrorHandler(function() print("not run") end)
      h2:close()
      ErrorHandler(function() print("not run either") end):close(nil)
      print(pcall(function()
        local h3 <close> = ErrorHandler(function() print("rolled back by <close>") end)
        error(false)
      end))
    ]])
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("rolled back\nrolled back by <close>\nfalse\tfalse\n", r.stdout)
  end)

  it("a message handler that calls pcall runs to its end; the stop goes on after", function()
    -- the return hook that catches a swallowing pcall leaves alone a pcall
    -- inside the message handler run for the SignalExit itself (raised here
    -- from C, a wait cut short: hooks run in the message handler then)
    local r = host([[
      local h <close> = ErrorHandler(function() print("cleanup") end)
      xpcall(function()
        proc.run({"sh", "-c", "kill -TERM " .. PID .. "; sleep 5"})
      end, function(e)
        print("message handler")
        print(pcall(tostring, e))
        print("the message handler goes on")
        return e
      end)
      print("NOT REACHED")
    ]])
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("message handler\ntrue\tSignalExit: SIGTERM\nthe message handler goes on\ncleanup\n",
                     r.stdout)
  end)

  it("closes a collected handler as on a normal exit and restores dispositions", function()
    local r = stock(SIGCGT .. [[
      local before = caught()
      ExitHandler(print, "exit handler collected")
      ErrorHandler(print, "NOT PRINTED")
      collectgarbage(); collectgarbage()
      print(before == caught())
    ]])
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("exit handler collected\ntrue\n", r.stdout)
  end)

  it("closes pending <close> variables and dies by the signal with no handler of its own", function()
    local d = H.tmpdir()
    local r = host([[
      local l <close> = lock.dir(arg[1])
      local x <close> = setmetatable({}, { __close = function(_, e) print("closed with", e) end })
      print("before")
      kill("INT")
      print("NOT REACHED")
    ]], { d })
    assert.are.equal(128 + SIG.INT, r.status, r.stderr)
    assert.are.equal("before\nclosed with\tSignalExit: SIGINT\n", r.stdout)
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("interrupts a guarded body running in a coroutine.wrap", function()
    local r = host([[
      local body = coroutine.wrap(function()
        local h <close> = ExitHandler(function() print("coroutine cleanup") end)
        kill("TERM")
        spin()
      end)
      local outer <close> = ExitHandler(function() print("outer cleanup") end)
      body()
      print("NOT REACHED")
    ]])
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("coroutine cleanup\nouter cleanup\n", r.stdout)
  end)

  it("keeps the script's own debug hook", function()
    local r = stock([[
      local calls = 0
      local function myhook() calls = calls + 1 end
      debug.sethook(myhook, "", 1000)
      local outer <close> = ErrorHandler(function() print("outer sees", debug.gethook() == myhook) end)
      local h <close> = ExitHandler(function() print("cleanup sees", debug.gethook() == myhook) end)
      kill("TERM")
    ]])
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("cleanup sees\ttrue\nouter sees\ttrue\n", r.stdout)
  end)

  it("leaves a debug hook the block set itself in place when the handler closes", function()
    -- the hook saved at arm goes back only over luaguard's own
    local r = stock([[
      local function myhook() end
      local new = {ErrorHandler = ErrorHandler, ExitHandler = ExitHandler}
      for _, kind in ipairs({"ErrorHandler", "ExitHandler"}) do
        do
          local h <close> = new[kind]()
          debug.sethook(myhook, "", 100)
        end
        print(kind, debug.gethook() == myhook)
        debug.sethook()
      end
      local ok = pcall(function()
        local h <close> = ErrorHandler()
        debug.sethook(myhook, "", 100)
        error("boom")
      end)
      print("error", ok, debug.gethook() == myhook)
    ]])
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("ErrorHandler\ttrue\nExitHandler\ttrue\nerror\tfalse\ttrue\n", r.stdout)
  end)

  it("does not cut short a blocking read inside a cleanup", function()
    local r = host([[
      local h <close> = ExitHandler(function()
        local p = io.popen("sleep 0.3; echo done")
        kill("HUP")
        print("cleanup read", p:read("a"))
      end)
      kill("TERM")
    ]])
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("cleanup read\tdone\n\n", r.stdout)
  end)

  it("does not cut short a normal exit's cleanup blocked in a read when a signal comes from outside", function()
    -- the signal lands while read() is blocked (not before it, as a self-kill
    -- would): SA_RESTART restarts it, and no kick runs for a cleanup
    local r = host([[
      do
        local h <close> = ExitHandler(function()
          local p = io.popen("sleep 0.5; echo done")
          io.popen(("sleep 0.15; kill -HUP %d; sleep 0.1; kill -TERM %d"):format(PID, PID))
          print("cleanup read", p:read("a"))
        end)
      end
      print("NOT REACHED")
    ]])
    assert.are.equal(128 + SIG.HUP, r.status, r.stderr)
    assert.are.equal("cleanup read\tdone\n\n", r.stdout)
  end)

  it("returns a new list from received(), in arrival order", function()
    local r = stock([[
      local h = ErrorHandler()
      local a, b = h:received(), h:received()
      print(#a, a ~= b)
    ]])
    assert.are.equal("0\ttrue\n", r.stdout, r.stderr)
  end)

  it("logs signals and cleanup calls with LUAGUARD_DEBUG=1", function()
    local r = host([[
      local h <close> = ExitHandler(function() end)
      h:register(print, "printed")
      kill("TERM")
    ]], nil, { env = { LUAGUARD_DEBUG = "1" } })
    assert.are.equal(128 + SIG.TERM, r.status)
    assert.are.equal("printed\n", r.stdout)
    assert.matches("encountered signals: SIGTERM", r.stderr)
    -- each cleanup named by where it was defined, last registered first
    assert.matches("calling registered function %[C%]\n[^\n]*calling registered function [^\n]*%.lua\n", r.stderr)
  end)

  it("logs every signal the handler received, in arrival order, with LUAGUARD_DEBUG=1", function()
    local r = host([[
      local h <close> = ExitHandler(function() end)
      io.popen(("kill -HUP %d; kill -TERM %d"):format(PID, PID)):close()   -- both before the next instruction
      spin()
    ]], nil, { env = { LUAGUARD_DEBUG = "1" } })
    assert.are.equal(128 + SIG.HUP, r.status, r.stderr)
    assert.matches("encountered signals: SIGHUP, SIGTERM\n", r.stderr)
  end)
end)
