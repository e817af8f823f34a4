-- Behaviours that single-line faults planted in the core once changed without
-- any test noticing (issue 18). Each test here failed against such a fault.
local H = require "tests.helpers"

local SIG = { HUP = 1, INT = 2, QUIT = 3, TERM = 15 }

describe("behaviours a planted fault once changed unnoticed", function()
  teardown(H.cleanup_tmp)

  it("a plain <close> between two nested ErrorHandlers closes whole on SIGTERM", function()
    local r = H.run_prelude([[
      local outer <close> = ErrorHandler(function() io.write("outer ") end)
      do
        local mid <close> = setmetatable({}, { __close = function()
          io.write("mid1 ")
          local s = 0
          for i = 1, 100000 do s = s + i end
          io.write("mid2 ")
        end })
        local inner <close> = ErrorHandler(function() io.write("inner ") end)
        kill("TERM")
        spin()
      end
    ]])
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("inner mid1 mid2 outer ", r.stdout)
  end)

  it("a LockFile's constructor timeout is the default of a later acquire()", function()
    local d, w = H.tmpdir(), H.tmpdir()
    local holder = H.spawn_script(H.prelude .. [[
      wait_for(arg[2])
      local l = lock.dir(arg[1])
      ready(arg[3])
      os.execute("sleep 1")
      l:release()
    ]], { d, w .. "/go", w .. "/held" })
    local r = H.run_prelude([[
      local l = lock.dir(arg[1], { timeout = 5 })
      l:release()
      io.open(arg[2], "w"):close()
      wait_for(arg[3])
      local t0 = os.time()
      local ok, e = pcall(l.acquire, l)
      print(ok, tostring(e), l:is_locked())
      l:release()
    ]], { d, w .. "/go", w .. "/held" })
    assert.are.equal(0, holder:wait(), holder:stderr())
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("true\tnil\ttrue\n", r.stdout)
  end)

  it("a holder whose pid cannot be known (an OFD lock) is named by no pid", function()
    local d, w = H.tmpdir(), H.tmpdir()
    local holder = H.spawn({ H.python, "-c", [[
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1] + "/.certbot.lock", os.O_RDWR | os.O_CREAT, 0o600)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
open(sys.argv[2], "w").write("%d\n" % os.getpid())
while not os.path.exists(sys.argv[3]): time.sleep(0.01)
]], d, w .. "/ready", w .. "/stop" })
    H.wait_for(w .. "/ready")
    local r = H.run_prelude([[
      local ok, e = pcall(lock.dir, arg[1])
      print(e.kind, e.pid, tostring(e))
    ]], { d })
    H.write(w .. "/stop", "")
    assert.are.equal(0, holder:wait(), holder:stderr())
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("^LockError\tnil\tcould not lock .*another instance is running", r.stdout)
    assert.is_nil(r.stdout:find("process", 1, true), r.stdout)
  end)

  it("a finalizer reading a pipe when SIGTERM comes during lua_close finishes the read, then dies", function()
    local r = H.run_prelude([[
      local pipe = io.popen("sleep 0.5; echo data")
      G = setmetatable({}, { __gc = function() io.write("read: ", pipe:read("a")) end })
      io.popen("(sleep 0.2; kill -TERM " .. PID .. ") >/dev/null 2>&1 &"):close()
    ]])
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("read: data\n", r.stdout)
  end)

  it("a lock held in a global: SIGTERM removes the file and runs finalizers before dying", function()
    local d = H.tmpdir()
    local r = H.run_prelude([[
      HELD = lock.dir(arg[1])
      G = setmetatable({}, { __gc = function() print("finalizer ran") end })
      kill("TERM")
      spin()
    ]], { d })
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("finalizer ran\n", r.stdout)
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("a script with stdin redirected does not run stdin afterwards (as lua5.4)", function()
    local r = H.run_script("print('script ran')", nil, { stdin = "print('STDIN RAN')\n" })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("script ran\n", r.stdout)
  end)

  it("a finalizer running when a signal comes finishes; the block stops after it", function()
    local r = H.run_prelude([[
      G = setmetatable({}, { __gc = function()
        kill("TERM")
        local s = 0
        for i = 1, 1e6 do s = s + i end
        print("finalizer done")
      end })
      G = nil
      collectgarbage()
      print("NOT REACHED")
    ]])
    assert.are.equal(128 + SIG.TERM, r.status, r.stderr)
    assert.are.equal("finalizer done\n", r.stdout)
  end)
end)
