-- The guard's promise off the well-walked paths (issue 13): handlers closed
-- out of order, in coroutines, in module mode, at the REPL, with stdout a
-- closed pipe, through os.exit(n, true), and a deep nest stopped by a signal.
-- Each case failed before the deferral core became the state machine of
-- tests/model/deferral.pml.
local H = require "tests.helpers"

local SIG = { HUP = 1, INT = 2, QUIT = 3, TERM = 15, XCPU = 24, XFSZ = 25 }

local stock = H.run_stock

-- Run a shell command line (a pipeline); its first stage's status is written
-- by the shell itself, 128+N for death by signal N. A pipeline still running
-- after H.run_limit seconds is killed, its whole process group (timeout's
-- own; SIGKILL at once: a stage that ignores SIGTERM would outlive the shell,
-- and timeout stops once the shell is gone): then no status is written, and
-- the test fails saying so.
local function pipeline(line)
  local d = H.tmpdir()
  local status_file = d .. "/status"
  os.execute(("timeout -s KILL %d bash -c %s"):format(H.run_limit,
    H.quote(line .. "; echo ${PIPESTATUS[0]} > " .. H.quote(status_file))))
  local f = io.open(status_file)
  assert(f, ("the pipeline was still running after %d s: %s"):format(H.run_limit, line))
  f:close()
  return tonumber(H.read(status_file)), d
end

describe("the guard's promise off the well-walked paths", function()
  teardown(H.cleanup_tmp)

  describe("SIGPIPE during cleanups", function()
    it("a cleanup writing to a closed stdout gets EPIPE (logged); the rollback still runs", function()
      local d = H.tmpdir()
      H.write(d .. "/backup", "old")
      H.write(d .. "/live", "new")
      local script = H.write(d .. "/s.lua", H.prelude .. [[
        local l <close> = lock.dir(arg[1])
        local h <close> = ErrorHandler(os.rename, arg[1] .. "/backup", arg[1] .. "/live")
        h:register(function()
          assert(io.stdout:write(("rolled back\n"):rep(20000)))
          assert(io.stdout:flush())
        end)
        os.execute("sleep 0.3")      -- head -c0 has exited: stdout is a closed pipe
        kill("TERM")
        spin()
      ]])
      local status = pipeline(("%s %s %s 2>%s | head -c0"):format(
        H.quote(H.host), H.quote(script), H.quote(d), H.quote(d .. "/err")))
      local err = H.read(d .. "/err") or ""
      assert.are.equal(128 + SIG.TERM, status, err)
      assert.matches("encountered exception during recovery: .*Broken pipe", err)
      assert.are.equal("old", H.read(d .. "/live"), "the backup was put back")
      assert.is_false(H.exists(d .. "/backup"))
      assert.is_false(H.exists(d .. "/.certbot.lock"), "the lock was released")
    end)

    it("takes SIGPIPE only while a handler is armed, and gives it back", function()
      local m = stock([[
        local before = caught(13)
        local h = ErrorHandler()
        local during = caught(13)
        h:close()
        print(before, during, caught(13))
      ]])
      assert.are.equal(0, m.status, m.stderr)
      assert.are.equal("false\ttrue\tfalse\n", m.stdout)
    end)

    it("an ignored SIGPIPE (inherited) stays ignored while a handler is armed, for children too", function()
      local r = H.run_prelude([[
        local function pipe_ignored(status)   -- SIGPIPE (13) in a SigIgn mask
          return (tonumber(status:match("SigIgn:%s*(%x+)"), 16) >> 12) & 1 == 1
        end
        local h <close> = ErrorHandler()
        print(caught(13), pipe_ignored(io.open("/proc/self/status"):read("a")),
              pipe_ignored(proc.run({"cat", "/proc/self/status"}, {stdout = "capture"}).stdout))
      ]], nil, { prefix = { "env", "--ignore-signal=PIPE" } })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("false\ttrue\ttrue\n", r.stdout)
    end)

    it("a body writing to a closed pipe still dies by SIGPIPE, as with lua5.4", function()
      local d = H.tmpdir()
      local script = H.write(d .. "/s.lua", [[
        local h <close> = ExitHandler(function() io.stderr:write("cleanup ran\n") end)
        os.execute("sleep 0.3")
        io.stdout:setvbuf("no")
        for i = 1, 100 do io.stdout:write("x\n") end
        io.stderr:write("NOT REACHED\n")
      ]])
      local status = pipeline(("%s %s 2>%s | head -c0"):format(
        H.quote(H.host), H.quote(script), H.quote(d .. "/err")))
      assert.are.equal(128 + 13, status, H.read(d .. "/err"))
      assert.is_nil((H.read(d .. "/err") or ""):find("NOT REACHED"))
    end)
  end)

  describe("handlers closed out of order", function()
    it("module mode: the oldest closes first, SIGTERM still runs the newer one's cleanup", function()
      local r = stock([[
        local a = ExitHandler(function() io.stderr:write("a cleanup\n") end)
        local b = ExitHandler(function() io.stderr:write("b cleanup\n") end)
        a:close()
        kill("TERM")
        local t = os.time()
        while os.time() - t < 5 do end
        print("NOT REACHED")
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      -- lua.c reports the SignalExit that reached it, then closes the state
      assert.matches("^a cleanup\nlua5.4: SignalExit: SIGTERM\n.*b cleanup\n$", r.stderr)
      assert.are.equal("", r.stdout)
    end)

    it("module mode: the oldest is garbage-collected first, same outcome", function()
      local r = stock([[
        local a = ExitHandler(function() io.stderr:write("a cleanup\n") end)
        local b = ExitHandler(function() io.stderr:write("b cleanup\n") end)
        a = nil
        collectgarbage()
        collectgarbage()
        kill("TERM")
        local t = os.time()
        while os.time() - t < 5 do end
        print("NOT REACHED")
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.matches("^a cleanup\nlua5.4: SignalExit: SIGTERM\n.*b cleanup\n$", r.stderr)
    end)

    it("the dispositions come back only when the last one closes, whatever the order", function()
      local r = stock([[
        local a, b, c = ErrorHandler(), ErrorHandler(), ErrorHandler()
        local out = {}
        b:close(); out[#out + 1] = tostring(caught(15))
        a:close(); out[#out + 1] = tostring(caught(15))
        c:close(); out[#out + 1] = tostring(caught(15))
        print(table.concat(out, " "))
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("true true false\n", r.stdout)
    end)
  end)

  describe("a signal during cleanups belongs to the handler whose cleanups run", function()
    it("an ErrorHandler armed by a cleanup and closed normally rolls nothing back", function()
      local r = H.run_prelude([[
        local outer <close> = ExitHandler(function()
          local inner <close> = ErrorHandler(function() print("ROLLBACK") end)
          kill("TERM")
          print("restore done")
        end)
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("restore done\n", r.stdout)
    end)

    it("the handler armed by the cleanup receives nothing; the outer one does", function()
      local r = H.run_prelude([[
        local outer
        local last <close> = ExitHandler(function()
          print("outer received", table.concat(outer:received(), ","))
        end)
        outer = ExitHandler(function()
          local inner = ExitHandler()
          kill("HUP")
          inner:close()
          print("inner received", #inner:received())
        end)
        outer:close()
        print("NOT REACHED: the re-routed SIGHUP stops the block")
      ]])
      assert.are.equal(128 + SIG.HUP, r.status, r.stderr)
      assert.are.equal("inner received\t0\nouter received\t1\n", r.stdout)
    end)
  end)

  describe("os.exit(n, true)", function()
    it("a SIGTERM during the cleanups it runs is re-delivered (143, not 0)", function()
      local r = H.run_prelude([[
        local h <close> = ExitHandler(function() kill("TERM"); print("cleanup done") end)
        os.exit(0, true)
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("cleanup done\n", r.stdout)
    end)

    it("a SIGTERM during exit()'s flush, after the state is gone, ends the process by it", function()
      local d = H.tmpdir()
      local script = H.write(d .. "/s.lua", H.prelude .. [[
        io.popen("(sleep 0.4; kill -TERM " .. PID .. ") >/dev/null 2>&1 &"):close()
        io.stdout:setvbuf("full", 1 << 21)
        io.stdout:write(("x"):rep(1 << 20))        -- more than the pipe holds
        os.exit(0, true)                            -- exit() then blocks flushing
      ]])
      local status = pipeline(("%s %s 2>%s | (sleep 1.5; cat >/dev/null)"):format(
        H.quote(H.host), H.quote(script), H.quote(d .. "/err")))
      assert.are.equal(128 + SIG.TERM, status, H.read(d .. "/err"))
    end)
  end)

  describe("module mode, coroutines", function()
    it("a guard's stop that ends its coroutine goes on in the thread that resumed it", function()
      -- resume returns the SignalExit (caught outside its guard): the inner
      -- handler stays armed in the dead coroutine, and the main thread is
      -- stopped at its next instruction, handlers closed innermost first
      local r = H.run_prelude([[
        local outer <close> = ExitHandler(function() print("outer cleanup") end)
        local co = coroutine.create(function()
          local inner <close> = ErrorHandler(function() print("inner cleanup") end)
          kill("TERM")
          spin()
        end)
        local ok = coroutine.resume(co)
        print("NOT REACHED: the block went on after resume", ok)
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("inner cleanup\nouter cleanup\n", r.stdout)
    end)

    it("coroutines made before the module loaded are freed while it tracks 16 others", function()
      -- the module's table of the state's coroutines (16 slots at first) is
      -- searched on every free of a coroutine-sized block: one it never saw
      -- must be found absent (a table let fill to the brim searched for ever
      -- there; the run's limit is short so that fails in seconds)
      local r = H.run_script(H.prelude .. [[
        local untracked = {}
        for i = 1, 50 do untracked[i] = coroutine.create(function() end) end
        local g = require "luaguard"
        local h <close> = g.ErrorHandler()
        local kept = {}
        for n = 1, 16 do
          kept[n] = coroutine.create(function() coroutine.yield() end)
          coroutine.resume(kept[n])
        end
        untracked = nil
        collectgarbage()
        print("freed beside", #kept)
      ]], nil, { interpreter = H.lua, limit = 10 })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("freed beside\t16\n", r.stdout)
    end)

    it("a coroutine made before 200 others that stay alive is still stopped while it runs", function()
      -- each coroutine the state makes is noted in a table that grows by
      -- doubling (the first ones moved at each growth); one not noted is only
      -- stopped when it yields, and spin() never does
      local r = H.run_prelude([[
        local spinner = coroutine.create(function() kill("TERM") spin() end)
        local kept = {}
        for n = 1, 200 do
          kept[n] = coroutine.create(function() coroutine.yield() end)
          coroutine.resume(kept[n])
        end
        local h <close> = ExitHandler(function() print("cleanup") end)
        coroutine.resume(spinner)
        print("NOT REACHED")
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("cleanup\n", r.stdout)
    end)

    it("a handler left armed in a suspended coroutine: SIGTERM stops the main thread", function()
      local r = stock([[
        local co = coroutine.create(function()
          local h = ExitHandler(function() io.stderr:write("co cleanup\n") end)
          coroutine.yield()
        end)
        coroutine.resume(co)
        kill("TERM")
        local t = os.time()
        while os.time() - t < 5 do end
        io.stderr:write("NOT REACHED\n")
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("co cleanup\n", r.stderr)
    end)

    it("a handler armed in a coroutine nothing else keeps: the handler keeps the thread (SIGTERM after a full GC)", function()
      -- the guard points at the thread it was armed on: freed, the stop would
      -- write into a dead lua_State, inside liblua, which ASan does not see:
      -- memcheck runs it (but not around the ASan build: the two do not mix)
      local memcheck = not H.asan_preload and { "valgrind", "-q", "--error-exitcode=99" } or nil
      local r = H.run_prelude([[
        local co = coroutine.create(function()
          local h = ErrorHandler(function() io.stderr:write("co cleanup\n") end)
          coroutine.yield(h)
        end)
        local _, h = coroutine.resume(co)
        co = nil
        collectgarbage()
        collectgarbage()
        local others = {}
        for i = 1, 1000 do others[i] = coroutine.create(print) end   -- reuse what was freed
        kill("TERM")
        spin()
      ]], nil, { prefix = memcheck, bare = true })
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.matches("^co cleanup\n[^\n]*SignalExit: SIGTERM\n$", r.stderr)
    end)

    it("the module first required in a coroutine: SIGTERM still stops the state's main thread", function()
      -- (the state's record is made by that first require, in the coroutine)
      local r = H.run_script(H.prelude .. [[
        local g
        coroutine.wrap(function() g = require "luaguard" end)()
        local co = coroutine.create(function()
          local h = g.ExitHandler(function() io.stderr:write("co cleanup\n") end)
          coroutine.yield()
        end)
        coroutine.resume(co)
        kill("TERM")
        spin()
      ]], nil, { interpreter = H.lua })
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("co cleanup\n", r.stderr)
    end)

    it("an ErrorHandler left in a finished coroutine runs its cleanup, as by the signal", function()
      local r = stock([[
        local co = coroutine.wrap(function()
          KEEP = ErrorHandler(function() io.stderr:write("rolled back\n") end)
        end)
        co()
        kill("TERM")
        local t = os.time()
        while os.time() - t < 5 do end
        io.stderr:write("NOT REACHED\n")
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("rolled back\n", r.stderr)
    end)

    it("the host: a guard in a suspended coroutine is closed before the script stops", function()
      local r = H.run_prelude([[
        local co = coroutine.create(function()
          local h <close> = ErrorHandler(function() print("co rollback") end)
          coroutine.yield()
        end)
        coroutine.resume(co)
        local main <close> = ErrorHandler(function() print("main rollback") end)
        kill("TERM")
        spin()
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("main rollback\nco rollback\n", r.stdout)
    end)

    it("a guard newer than the running block, in a suspended coroutine, closes first", function()
      local r = H.run_prelude([[
        local main <close> = ErrorHandler(function() print("main rollback") end)
        local co = coroutine.create(function()
          local h <close> = ErrorHandler(function() print("co rollback") end)
          coroutine.yield()
        end)
        coroutine.resume(co)
        kill("TERM")
        spin()
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("co rollback\nmain rollback\n", r.stdout)
    end)
  end)

  describe("a coroutine with no guard of its own, resumed inside a guarded block", function()
    -- made before the handler; in module mode, after the require (the
    -- state's coroutines are noted from the require on, not from the first arm)
    local MADE_BEFORE_THE_HANDLER = [[
      local co = coroutine.create(function()
        kill("TERM")
        local t = os.time()
        while os.time() - t < 5 do end
        print("NOT REACHED: the coroutine kept looping")
      end)
      local h <close> = ErrorHandler(function() print("rolled back") end)
      coroutine.resume(co)
      print("NOT REACHED: the block went on")
    ]]
    for _, way in ipairs({ { "", H.run_prelude }, { " (module mode, made after the require)", stock } }) do
      it("is stopped: the block's cleanup runs and the process dies by the signal" .. way[1], function()
        local r = way[2](MADE_BEFORE_THE_HANDLER)
        assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
        assert.are.equal("rolled back\n", r.stdout)
      end)
    end

    it("cannot swallow it with pcall in a loop (coroutine.wrap, module mode)", function()
      local r = stock([[
        local h <close> = ErrorHandler(function() print("rolled back") end)
        local step = coroutine.wrap(function()
          kill("TERM")
          local t = os.time()
          while os.time() - t < 5 do pcall(function() end) end
          print("NOT REACHED: swallowed")
        end)
        step()
        print("NOT REACHED: the block went on")
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("rolled back\n", r.stdout)
    end)

    it("stays stopped after a pcall caught the first SignalExit (module mode)", function()
      -- the signal lands inside pcall(kill): the first SignalExit is caught
      -- there, and the coroutine is stopped again at its next instruction
      local r = stock([[
        local h <close> = ErrorHandler(function() print("rolled back") end)
        local co = coroutine.create(function()
          print("caught once", (pcall(kill, "TERM")))
          print("NOT REACHED: the coroutine went on")
          spin()
        end)
        coroutine.resume(co)
        print("NOT REACHED: the block went on")
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("rolled back\n", r.stdout)
    end)

    it("every coroutine of the state is reached, after many others were freed", function()
      -- the state's table of coroutines is kept through frees (entries moved
      -- back after a removal): a signal hooks each live coroutine, which a
      -- cleanup can see with debug.gethook before any of them runs again
      local r = H.run_prelude([[
        local kept = {}
        do
          local dropped = {}
          for i = 1, 400 do
            local co = coroutine.create(function() coroutine.yield() end)
            if i % 2 == 0 then kept[#kept + 1] = co else dropped[#dropped + 1] = co end
          end
        end
        collectgarbage() collectgarbage()
        local h <close> = ErrorHandler(function()
          local unhooked = 0
          for _, co in ipairs(kept) do
            if debug.gethook(co) == nil then unhooked = unhooked + 1 end
          end
          print(#kept, "coroutines,", unhooked, "not reached")
        end)
        kill("TERM")
        spin()
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("200\tcoroutines,\t0\tnot reached\n", r.stdout)
    end)

    it("a coroutine nested two deep is stopped too", function()
      local r = H.run_prelude([[
        local h <close> = ExitHandler(function() print("cleanup") end)
        local outer = coroutine.wrap(function()
          local inner = coroutine.wrap(function()
            kill("HUP")
            spin()
          end)
          inner()
          print("NOT REACHED: outer coroutine went on")
        end)
        outer()
        print("NOT REACHED")
      ]])
      assert.are.equal(128 + SIG.HUP, r.status, r.stderr)
      assert.are.equal("cleanup\n", r.stdout)
    end)
  end)

  describe("a handler armed and closed while a SignalExit unwinds (in a __close)", function()
    -- Its close used to put the thread's own hook back, and with it went the
    -- return hook that catches a swallowing pcall: the pcall kept the SignalExit.
    local body = [[
      local outer <close> = ErrorHandler(function() print("outer cleanup") end)
      local ok = pcall(function()
        local c <close> = setmetatable({}, {__close = function()
          local h <close> = %s
        end})
        kill("TERM")
        spin()
      end)
      print("NOT REACHED: the pcall kept it", ok)
    ]]
    for _, case in ipairs({
      { "an ErrorHandler, host", H.run_prelude, "ErrorHandler(print, 'never')" },
      { "an ExitHandler with a cleanup, module mode", stock, "ExitHandler(print, 'exit cleanup')" },
    }) do
      it(case[1] .. ": the SignalExit is raised again after the pcall", function()
        local r = case[2](body:format(case[3]))
        assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
        local expected = case[3]:match("'exit cleanup'") and "exit cleanup\nouter cleanup\n" or "outer cleanup\n"
        assert.are.equal(expected, r.stdout)
      end)
    end

    it("the error that reaches the block's end is the SignalExit caught by the pcall", function()
      local r = H.run_prelude([[
        local seen
        local ok, err = pcall(function()
          local outer <close> = ErrorHandler()
          local t <close> = setmetatable({}, {__close = function(_, e)
            print(rawequal(e, seen), tostring(e))
          end})
          pcall(function()
            local c <close> = setmetatable({}, {__close = function(_, e)
              seen = e
              local h <close> = ErrorHandler()
            end})
            kill("TERM")
            spin()
          end)
          print("NOT REACHED: the pcall kept it")
        end)
        print("NOT REACHED: the script's pcall kept it", ok, err)
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("true\tSignalExit: SIGTERM\n", r.stdout)
    end)
  end)

  describe("a coroutine run by a __close while a SignalExit unwinds", function()
    it("runs to its end, a second signal meanwhile included: the block is stopped already", function()
      local r = H.run_prelude([[
        local h <close> = ErrorHandler(function() print("cleanup") end)
        local t <close> = setmetatable({}, {__close = function()
          local gen = coroutine.wrap(function()
            kill("HUP")                      -- a second signal, recorded by h
            for i = 1, 3 do coroutine.yield(i) end
          end)
          print("closing", gen(), gen(), gen())
        end})
        kill("TERM")
        spin()
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("closing\t1\t2\t3\ncleanup\n", r.stdout)
    end)
  end)

  describe("a SignalExit passed on from an inner handler to an outer one", function()
    -- a pcall around an inner handler's block that SIGTERM stops
    local INNER_STOPPED = [[
      pcall(function()
        local inner <close> = ErrorHandler(function() print("inner cleanup") end)
        kill("TERM")
        spin()
      end)
    ]]

    it("raised again after a pcall between the two swallows it: the same object", function()
      local r = H.run_prelude([[
        local seen
        pcall(function()
          local outer <close> = ErrorHandler(function() print("outer cleanup") end)
          local t <close> = setmetatable({}, {__close = function(_, e)
            print(rawequal(e, seen), tostring(e))
          end})
          pcall(function()
            local inner <close> = ErrorHandler(function() print("inner cleanup") end)
            local c <close> = setmetatable({}, {__close = function(_, e) seen = e end})
            kill("TERM")
            spin()
          end)
          print("NOT REACHED: the pcall kept it")
        end)
        print("NOT REACHED: the script's pcall kept it")
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("inner cleanup\ntrue\tSignalExit: SIGTERM\nouter cleanup\n", r.stdout)
    end)

    -- the inner handler closes in a coroutine resumed inside the outer block:
    -- the coroutine runs inside that block, and a pcall of its own that
    -- catches the SignalExit cannot keep it (it once ran on, deaf to SIGTERM)
    it("raised again in a coroutine resumed inside the outer block, after a pcall there swallows it", function()
      local r = H.run_prelude([[
        local outer <close> = ErrorHandler(function() print("outer cleanup") end)
        local co = coroutine.create(function()
          pcall(function()
            local mid <close> = setmetatable({}, {__close = function()
              io.write("mid1 ")
              io.write("mid2\n")
            end})
            local inner <close> = ErrorHandler(function() print("inner cleanup") end)
            kill("TERM")
            spin()
          end)
          print("NOT REACHED: the coroutine's pcall kept it")
          spin()
        end)
        print(coroutine.resume(co))
        print("NOT REACHED: the block went on")
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("inner cleanup\nmid1 mid2\nouter cleanup\n", r.stdout)
    end)

    it("raised again in such a coroutine under stock lua5.4 (module mode)", function()
      local r = stock([[
        local h <close> = ErrorHandler(function() print("outer cleanup") end)
        local co = coroutine.wrap(function()
          ]] .. INNER_STOPPED .. [[
          print("NOT REACHED: the coroutine's pcall kept it")
          spin()
        end)
        co()
        print("NOT REACHED: the block went on")
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("inner cleanup\nouter cleanup\n", r.stdout)
    end)

    it("raised again in each coroutine between the two, one resumed by another", function()
      local r = H.run_prelude([[
        local outer <close> = ErrorHandler(function() print("outer cleanup") end)
        local co1 = coroutine.create(function()
          local co2 = coroutine.create(function()
            ]] .. INNER_STOPPED .. [[
            print("NOT REACHED: the inner coroutine's pcall kept it")
            spin()
          end)
          local ok, e = coroutine.resume(co2)
          print("NOT REACHED: the outer coroutine went on", ok, e)
          spin()
        end)
        coroutine.resume(co1)
        print("NOT REACHED: the block went on")
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("inner cleanup\nouter cleanup\n", r.stdout)
    end)

    -- the outer handler sits in a suspended coroutine: its block cannot run,
    -- so the stop goes on as when no armed block runs (its handler closed as
    -- by the signal, which is then delivered again); it once waited there,
    -- the script running on to its end
    it("goes on to an outer handler in a suspended coroutine: closed as by the signal, main stopped", function()
      local r = H.run_prelude([[
        local S = coroutine.wrap(function()
          local outer <close> = ErrorHandler(function() print("outer cleanup") end)
          coroutine.yield()
        end)
        S()
        pcall(function()
          local mid <close> = setmetatable({}, {__close = function()
            io.write("mid1 ")
            io.write("mid2\n")
          end})
          local inner <close> = ErrorHandler(function() print("inner cleanup") end)
          kill("TERM")
          spin()
        end)
        print("NOT REACHED: the pcall kept it")
        spin()
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("inner cleanup\nmid1 mid2\nouter cleanup\n", r.stdout)
    end)

    it("the same from a coroutine, under stock lua5.4 (module mode)", function()
      local r = stock([[
        local S = coroutine.create(function()
          local outer <close> = ErrorHandler(function() print("outer cleanup") end)
          coroutine.yield()
        end)
        coroutine.resume(S)
        local co = coroutine.create(function()
          ]] .. INNER_STOPPED .. [[
          print("NOT REACHED: the coroutine went on")
          spin()
        end)
        coroutine.resume(co)
        print("NOT REACHED: the main thread went on")
        spin()
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("inner cleanup\nouter cleanup\n", r.stdout)
    end)

    -- `return pcall(...)` runs no instruction of the coroutine after the pcall:
    -- only the resume's return, in the outer block's thread, shows the swallow
    it("raised again when the coroutine whose pcall swallowed it returns at once", function()
      local r = H.run_prelude([[
        local outer <close> = ErrorHandler(function() print("outer cleanup") end)
        local co = coroutine.create(function()
          return pcall(function()
            local inner <close> = ErrorHandler(function() print("inner cleanup") end)
            kill("TERM")
            spin()
          end)
        end)
        local ok = coroutine.resume(co)
        print("NOT REACHED: the block went on", ok)
        spin()
      ]])
      assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
      assert.are.equal("inner cleanup\nouter cleanup\n", r.stdout)
    end)
  end)

  describe("the REPL", function()
    -- stdin: a FIFO this test keeps open and feeds; the REPL writes its pid
    -- to $PIDDIR/pid when a line asks it to.
    local function repl(args, lines, signal_after_pid, interpreter)
      local d = H.tmpdir()
      local fifo = d .. "/fifo"
      os.execute("mkfifo " .. H.quote(fifo))
      local argv = { interpreter or H.host }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      local job = H.spawn(argv, { stdin = fifo, env = { PIDDIR = d } })
      local writer = assert(io.open(fifo, "w"))
      writer:setvbuf("no")
      for _, line in ipairs(lines) do writer:write(line, "\n") end
      if signal_after_pid then
        local pid = tonumber(H.wait_for(d .. "/pid"):match("%d+"))
        H.sleep(0.2)
        H.kill(pid, signal_after_pid)
      end
      local status = job:poll(10)
      writer:close()
      -- the third answer: whether it ended with its input still open
      return status or job:wait(10), job, status ~= nil
    end

    local SAVE_PID = "io.open(os.getenv('PIDDIR') .. '/pid', 'w')"
                  .. ":write(io.open('/proc/self/stat'):read('n'), '\\n'):close()"
    local ARM = "h = ExitHandler(function() io.stderr:write('cleanup\\n') end)"
    local SELF_TERM = "io.popen('kill -TERM ' .. io.open('/proc/self/stat'):read('n')):close()"

    -- The same REPL on a terminal (script(1) gives it one): readline's own
    -- prompt, where a signal comes through readline's signal hook.
    local function on_terminal(args, lines, signal_after_pid)
      local words = { H.quote(H.host) }
      for _, a in ipairs(args) do words[#words + 1] = H.quote(a) end
      return repl({ "-qefc", table.concat(words, " "), "/dev/null" }, lines, signal_after_pid, "script")
    end

    it("on a terminal with no arguments: the version lines, then the REPL", function()
      local status, job = on_terminal({}, { "print(6 * 7 .. '!')", "os.exit(5)" })
      assert.are.equal(5, status, job:stderr())
      local out = job:stdout():gsub("\r", ""):gsub("\27%[%?%d+[hl]", "")   -- readline's bracketed paste
      assert.matches("\nluaguard %d+%.%d+%.%d+\nLua 5%.4%.%d+  Copyright", "\n" .. out)
      assert.matches("\n42!\n", out)
    end)

    it("on a terminal: readline keeps a history, as lua5.4's: the up arrow runs the last line again", function()
      local status, job = on_terminal({}, { "print(6 * 7 .. '!')", "\27[A", "os.exit(5)" })
      assert.are.equal(5, status, job:stderr())
      local _, runs = job:stdout():gsub("42!", "")   -- (the echoed lines hold no "42!")
      assert.are.equal(2, runs, job:stdout())
    end)

    -- readline ends its read at SIGTERM or SIGHUP itself; SIGINT it handles
    -- and goes on reading, and others only interrupt the read: those two come
    -- through its signal hook
    for _, sig in ipairs({ "TERM", "INT", "XCPU" }) do
      it(("on a terminal: SIG%s at readline's prompt runs the cleanup of a handler a line armed, then ends by it"):format(sig), function()
        local status, job, before_eof = on_terminal({ "-i" }, { ARM, SAVE_PID }, sig)
        assert.are.equal(128 + SIG[sig], status, job:stderr())
        assert.is_true(before_eof, "it waited for the end of its input")
        assert.matches("cleanup\r?\n", job:stdout() .. job:stderr())
      end)
    end

    it("a handler armed by -e: SIGTERM at the prompt runs its cleanup, then ends by it", function()
      local status, job, before_eof = repl({ "-e", ARM .. "; " .. SAVE_PID, "-i" }, {}, "TERM")
      assert.are.equal(128 + SIG.TERM, status, job:stderr())
      assert.is_true(before_eof, "it waited for the end of its input")
      assert.matches("cleanup\n", job:stderr())
    end)

    -- SIGINT as SIGTERM: lua.c's Ctrl-C handler, in place while a line runs,
    -- is what a handler armed by a line saves and gives back
    for _, sig in ipairs({ "TERM", "INT" }) do
      local self_kill = SELF_TERM:gsub("TERM", sig)

      it(("a handler armed by a line: SIG%s during a later line ends the session"):format(sig), function()
        local status, job = repl({ "-i" }, {
          ARM,
          self_kill .. "; for i = 1, 1e7 do end; print('line 2 went on')",
          "print('line 3 ran')",
        })
        assert.are.equal(128 + SIG[sig], status, job:stderr())
        assert.matches("cleanup\n", job:stderr())
        -- (readline echoes the input lines: only a line of output counts)
        assert.is_nil(job:stdout():find("\nline 2 went on\n", 1, true))
        assert.is_nil(job:stdout():find("\nline 3 ran\n", 1, true))
      end)

      it(("a handler armed by a line: SIG%s at the prompt runs its cleanup, then ends by it"):format(sig), function()
        local status, job, before_eof = repl({ "-i" }, { ARM, SAVE_PID }, sig)
        assert.are.equal(128 + SIG[sig], status, job:stderr())
        assert.is_true(before_eof, "it waited for the end of its input")
        assert.matches("cleanup\n", job:stderr())
      end)

      it(("a handler armed and closed in one line: SIG%s there runs its cleanup, then ends the session"):format(sig), function()
        local status, job = repl({ "-i" }, {
          "do local h <close> = ExitHandler(function() io.stderr:write('cleanup\\n') end); "
            .. self_kill .. "; for i = 1, 1e7 do end; print('line 1 went on') end",
          "print('line 2 ran')",
        })
        assert.are.equal(128 + SIG[sig], status, job:stderr())
        assert.matches("cleanup\n", job:stderr())
        assert.is_nil(job:stderr():find("interrupted!", 1, true))
        assert.is_nil(job:stdout():find("\nline 1 went on\n", 1, true))
        assert.is_nil(job:stdout():find("\nline 2 ran\n", 1, true))
      end)

      it(("a handler armed by a line and closed by the next: SIG%s at the prompt after is lua5.4's"):format(sig), function()
        -- SIGINT ends the session at the prompt, as lua5.4's does (no cleanup is left)
        local status, job, before_eof = repl({ "-i" }, { ARM, "h:close()", "print('closed')", SAVE_PID }, sig)
        assert.are.equal(128 + SIG[sig], status, job:stderr())
        assert.is_true(before_eof, "it waited for the end of its input")
        assert.matches("closed\n", job:stdout())
        assert.matches("^cleanup\n$", job:stderr())
      end)
    end

    it("a SIGINT handler a C module installs (SA_SIGINFO) during a line stays for the next lines", function()
      -- lua.c's own Ctrl-C handler is SA_SIGINFO too: the prompt must tell
      -- it from the module's, and leave the module's in place
      local d = H.tmpdir()
      H.write(d .. "/siginfo.c", [[
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <lua.h>
static void on_int(int sig, siginfo_t *si, void *uc) {
  static const char msg[] = "the module's handler\n";
  (void)sig; (void)si; (void)uc;
  if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
}
static int install(lua_State *L) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_int;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  lua_pushboolean(L, sigaction(SIGINT, &sa, NULL) == 0);
  return 1;
}
int luaopen_siginfo(lua_State *L);
int luaopen_siginfo(lua_State *L) { lua_pushcfunction(L, install); return 1; }
]])
      local cc = H.run({ "gcc", "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-shared", "-fPIC",
                         "-I/usr/include/lua5.4", d .. "/siginfo.c", "-o", d .. "/siginfo.so" })
      assert.are.equal(0, cc.status, cc.stderr)
      local status, job = repl({ "-i" }, {
        ("print('installed', package.loadlib(%q, 'luaopen_siginfo')()())"):format(d .. "/siginfo.so"),
        SELF_TERM:gsub("TERM", "INT") .. "; print('line 2 went on')",
        "os.exit(5)",
      })
      assert.are.equal(5, status, job:stderr())
      assert.matches("\ninstalled\ttrue\n", job:stdout())
      assert.matches("the module's handler\n", job:stderr())
      assert.is_nil(job:stderr():find("interrupted!", 1, true))
      assert.matches("\nline 2 went on\n", job:stdout())
    end)

    it("a child left running by a line: SIGTERM at the prompt stops it before the cleanup runs", function()
      local d = H.tmpdir()
      local log = d .. "/log"
      local status, job = repl({ "-i" }, {
        "h = ExitHandler(function() local f = io.open('" .. log .. "', 'a') f:write('cleanup\\n') f:close() end)",
        "P = proc.spawn({ 'sh', '-c', \"trap 'echo child got TERM >> " .. log .. "; exit 0' TERM; "
          .. "echo started >> " .. log .. "; sleep 30 & wait\" })",
        "while not io.open('" .. log .. "') do end",
        SAVE_PID,
      }, "TERM")
      assert.are.equal(128 + SIG.TERM, status, job:stderr())
      assert.are.equal("started\nchild got TERM\ncleanup\n", H.read(log))
    end)

    it("a line waiting in proc.run: SIGTERM reaches the child, then the cleanup, then the end", function()
      local d = H.tmpdir()
      local status, job = repl({ "-i" }, {
        ARM,
        SAVE_PID .. "; proc.run({ 'sh', '-c', \"trap 'echo got TERM >> " .. d .. "/log; exit 0' TERM; " ..
          "sleep 30 & wait\" }); print('line 2 went on')",
      }, "TERM")
      assert.are.equal(128 + SIG.TERM, status, job:stderr())
      assert.are.equal("got TERM\n", H.read(d .. "/log"))
      assert.matches("cleanup\n", job:stderr())
      assert.is_nil(job:stdout():find("\nline 2 went on\n", 1, true))
    end)

    it("with no handler, a line that sends itself SIGTERM: nothing after it runs", function()
      local status, job = repl({ "-i" }, {
        SELF_TERM .. "; for i = 1, 1e7 do end; print('line 1 went on')",
        "print('line 2 ran')",
      })
      assert.are.equal(128 + SIG.TERM, status, job:stderr())
      assert.is_nil(job:stdout():find("\nline 1 went on\n", 1, true))
      assert.is_nil(job:stdout():find("\nline 2 ran\n", 1, true))
    end)

    it("with no handler, SIGINT at the prompt after a line ends the session, as in lua5.4", function()
      -- lua.c's handler is in place only while a line runs: at the prompt
      -- SIGINT is at its default again (readline passes it on)
      for _, interpreter in ipairs({ H.host, H.lua }) do
        local status, job = repl({ "-i" }, { "print('first')", SAVE_PID }, SIG.INT, interpreter)
        assert.are.equal(128 + SIG.INT, status, interpreter .. ": " .. job:stderr())
      end
    end)

    it("with no handler, SIGINT interrupts a line as lua5.4 does and the session goes on", function()
      local status, job = repl({ "-i" }, {
        "io.popen('kill -INT ' .. io.open('/proc/self/stat'):read('n')):close(); while true do end",
        "print('goes on')",
        "os.exit(7)",
      })
      assert.are.equal(7, status, job:stderr())
      assert.matches("interrupted!", job:stderr())
      assert.matches("goes on\n", job:stdout())
    end)

    it("with no handler, a second SIGINT before the line stops ends the session, as in lua5.4", function()
      -- the line waits in C (pclose retries its wait): the first SIGINT can
      -- only mark the line; the second meets the default disposition. The
      -- shell signals once the host waits in pclose (its wchan): sent at once,
      -- the first could land in io.popen, whose return stops the line.
      local status, job = repl({ "-i" }, {
        "local p = io.open('/proc/self/stat'):read('n'); "
          .. "io.popen('n=0; until grep -q do_wait /proc/' .. p .. '/wchan || [ $n -ge 1000 ]; "
          .. "do sleep 0.01; n=$((n+1)); done; kill -INT ' .. p .. '; sleep 0.3; kill -INT ' .. p):close()",
        "print('goes on')",
        "os.exit(7)",
      })
      assert.are.equal(128 + SIG.INT, status, job:stderr())
      assert.is_nil(job:stdout():find("\ngoes on\n", 1, true))
    end)
  end)

  describe("a deep nest stopped by a signal", function()
    it("tears 4,000 nested handlers down in about the time an error takes", function()
      local function run(stop)
        local r = H.run_prelude(([[
          local N, ran = 4000, 0
          local t0 = os.clock()
          local function nest(k)
            if k == 0 then %s end
            local h <close> = ErrorHandler(function() ran = ran + 1 end)
            nest(k - 1)
          end
          local ok = pcall(nest, N)
          io.stderr:write(ran, " ", os.clock() - t0, "\n")
        ]]):format(stop))
        return r
      end
      local e0 = io.popen("date +%s.%N"):read("n")
      local by_error = run("error('stop')")
      local error_elapsed = io.popen("date +%s.%N"):read("n") - e0
      assert.are.equal(0, by_error.status, by_error.stderr)
      local n_err, t_err = by_error.stderr:match("^(%d+) ([%d.e-]+)")
      assert.are.equal("4000", n_err)
      -- the signal: the process dies by it after the 4,000 cleanups, so the
      -- time is read from the outside
      local t0 = io.popen("date +%s.%N"):read("n")
      local by_signal = H.run_prelude([[
        local N, ran = 4000, 0
        local function nest(k)
          if k == 0 then kill("TERM"); spin() end
          local h <close> = ErrorHandler(function() ran = ran + 1 end)
          nest(k - 1)
        end
        local last <close> = ExitHandler(function() io.stderr:write(ran, "\n") end)
        nest(N)
      ]])
      local elapsed = io.popen("date +%s.%N"):read("n") - t0
      assert.are.equal(128 + SIG.TERM, by_signal.status, by_signal.stderr)
      assert.matches("^4000\n", by_signal.stderr)
      -- quadratic or worse took 43 s here; linear takes well under a second,
      -- about what the error's run took (under memcheck both take seconds)
      assert.is_true(elapsed < math.max(5, 10 * error_elapsed), ("4,000 nested handlers took %.2f s "
        .. "to tear down (the error's run: %.2f s, its teardown %.3f s)"):format(elapsed, error_elapsed,
        tonumber(t_err)))
    end)
  end)
end)
