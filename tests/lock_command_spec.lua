-- luaguard-lock (SPEC section 4a): flock(1)'s shape on certbot's fcntl lock,
-- against Debian's python3-certbot holding lock_dir, both ways; -w, -E, -q,
-- the command's status passed through, a forwarded SIGTERM.
local H = require "tests.helpers"

local LOCK = H.bin .. "/luaguard-lock"

describe("luaguard-lock", function()
  teardown(H.cleanup_tmp)

  it("runs the command holding DIR/.certbot.lock and passes its status through", function()
    local d = H.tmpdir()
    local r = H.run({ LOCK, d, "--", "sh", "-c", "test -e \"$1/.certbot.lock\" && echo held; exit 4", "sh", d })
    assert.are.equal(4, r.status, r.stderr)
    assert.are.equal("held\n", r.stdout)
    assert.is_false(H.exists(d .. "/.certbot.lock"))
    r = H.run({ LOCK, d, "sh", "-c", "kill -USR1 $$" })   -- "--" is optional
    assert.are.equal(128 + 10, r.status, r.stderr)
  end)

  it("excludes certbot's lock_dir: -w 0 fails at once with CODE (-E), -w waits", function()
    local d = H.tmpdir()
    local certbot = H.hold_with_certbot(d)
    local r = H.run({ LOCK, "-w", "0", d, "--", "echo", "ran" })
    assert.are.equal(1, r.status)
    assert.are.equal("", r.stdout)
    assert.matches("another instance is running %(held by process " .. certbot.pid .. "; waited", r.stderr)
    r = H.run({ LOCK, "-w", "0.3", "-E", "9", "-q", d, "--", "echo", "ran" })
    assert.are.equal(9, r.status)
    assert.are.equal("", r.stderr)
    -- released while a waiter waits: the command runs then
    os.execute(("(sleep 0.5; touch %s) &"):format(H.quote(certbot.stop_file)))
    r = H.run({ LOCK, "-w", "20", d, "--", "echo", "ran" })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("ran\n", r.stdout)
    assert.are.equal(0, certbot:wait(10))
  end)

  it("waits for the lock by default (no -w), silently when stderr is no terminal", function()
    local d = H.tmpdir()
    local certbot = H.hold_with_certbot(d)
    -- held past the 1 s after which a waiter at a terminal says so
    os.execute(("(sleep 1.5; touch %s) &"):format(H.quote(certbot.stop_file)))
    local t0 = H.now()
    local r = H.run({ LOCK, d, "--", "echo", "ran" })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("ran\n", r.stdout)
    assert.are.equal("", r.stderr)
    assert.is_true(H.now() - t0 >= 1.2, "it did not wait for the holder")
    assert.are.equal(0, certbot:wait(10))
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("dies by a signal that comes while it waits, the command never started", function()
    local d = H.tmpdir()
    local certbot = H.hold_with_certbot(d)
    local job = H.spawn({ LOCK, "-w", "20", d, "--", "touch", d .. "/ran" })
    H.wait_wchan(job:pid(), "^fcntl_setlk")        -- waiting in the kernel
    H.kill(job:pid(), "TERM")
    assert.are.equal(128 + 15, job:wait(10), job:stderr())
    assert.is_false(H.exists(d .. "/ran"))
    assert.are.equal(0, certbot:stop())
  end)

  it("gives a command at a terminal the terminal's foreground (its Ctrl-C is the command's)", function()
    local d = H.tmpdir()
    local r = H.run({ "script", "-qec", ("%s %s -- sh -c 'ps -o pgid=,tpgid= -p $$'"):format(LOCK, d), "/dev/null" })
    assert.are.equal(0, r.status, r.stderr)
    local pgid, tpgid = r.stdout:match("(%d+)%s+(%d+)")
    assert.is_not_nil(pgid, r.stdout)
    assert.are.equal(pgid, tpgid, "the command's group is not the terminal's foreground: " .. r.stdout)
  end)

  it("exits 71 when the command's status is lost (SIGCHLD ignored by its parent)", function()
    local d = H.tmpdir()
    local r = H.run({ "env", "--ignore-signal=CHLD", LOCK, d, "--", "true" })
    assert.are.equal(71, r.status, r.stderr)
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("is excluded by certbot the other way round", function()
    local d = H.tmpdir()
    local r = H.run({ LOCK, d, "--", H.python, "-c", [[
import sys
from certbot import errors
from certbot._internal import lock
try:
    lock.lock_dir(sys.argv[1])
    print("certbot got it")
except errors.LockError:
    print("certbot refused")
]], d })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("certbot refused\n", r.stdout)
  end)

  it("forwards SIGTERM once to the command and keeps the lock until it exited", function()
    local d = H.tmpdir()
    -- the command lingers after the signal until the test has probed the lock
    -- (at most 10 s), so the probe never races its exit
    local job = H.spawn({ LOCK, d, "--", "sh", "-c",
      "trap 'echo got TERM >> \"$1/log\"; n=0; while [ ! -e \"$1/go\" ] && [ $n -lt 200 ]; do " ..
      "sleep 0.05; n=$((n+1)); done; echo exit >> \"$1/log\"; exit 0' TERM; " ..
      "echo $$ > \"$1/ready\"; n=0; while [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done", "sh", d })
    H.wait_for(d .. "/ready")
    H.kill(job:pid(), "TERM")
    H.wait_for_file(d .. "/log", 10)
    local probe = H.run({ LOCK, "-w", "0", "-q", d, "--", "true" })
    H.write(d .. "/go", "")
    assert.are.equal(1, probe.status)
    assert.are.equal(143, job:wait(20), job:stderr())
    assert.are.equal("got TERM\nexit\n", H.read(d .. "/log"))
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("says once at a terminal who holds the lock, and nothing with -q", function()
    local d = H.tmpdir()
    local certbot = H.hold_with_certbot(d)
    -- held 3 s: the notice comes after 1 s of waiting, and a loaded CI took
    -- over 0.6 s to start script(1) and the command (1.6 s was too short)
    os.execute(("(sleep 3; touch %s) &"):format(H.quote(certbot.stop_file)))
    -- script(1) gives the command a terminal
    local r = H.run({ "script", "-qec", ("%s -w 20 %s -- true"):format(LOCK, d), "/dev/null" })
    assert.are.equal(0, r.status, r.stderr)
    local _, n = r.stdout:gsub("waiting for " .. d:gsub("%p", "%%%0") .. "/%.certbot%.lock %(held by pid " ..
                               certbot.pid .. "%)", "")
    assert.are.equal(1, n, r.stdout)
    assert.are.equal(0, certbot:wait(10))
    certbot = H.hold_with_certbot(d)
    os.execute(("(sleep 1.3; touch %s) &"):format(H.quote(certbot.stop_file)))
    r = H.run({ "script", "-qec", ("%s -q -w 20 %s -- true"):format(LOCK, d), "/dev/null" })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("", r.stdout)
    assert.are.equal(0, certbot:wait(10))
  end)

  it("explains usage errors (64), a command that cannot run (127, 126) and a missing directory (71)", function()
    local d = H.tmpdir()
    local r = H.run({ LOCK, "-x", d, "true" })
    assert.are.equal(64, r.status)
    assert.matches("unknown option %-x", r.stderr)
    assert.are.equal(64, H.run({ LOCK, "-w", "soon", d, "true" }).status)
    for _, bad in ipairs({ "-1", "nan" }) do             -- a number, but no number of seconds
      r = H.run({ LOCK, "-w", bad, d, "true" })
      assert.are.equal(64, r.status, r.stderr)
      assert.matches("%-w: not a number of seconds: " .. bad:gsub("%-", "%%-"), r.stderr)
    end
    r = H.run({ LOCK, "-E", "256", d, "true" })      -- an exit status is 0-255
    assert.are.equal(64, r.status)
    assert.matches("%-E: not an exit status %(0%-255%): 256", r.stderr)
    r = H.run({ LOCK, d })
    assert.are.equal(64, r.status)
    assert.matches("no command given\nTry 'luaguard%-lock %-%-help'", r.stderr)
    r = H.run({ LOCK })
    assert.are.equal(64, r.status)
    assert.matches("no directory given", r.stderr)
    for _, opt in ipairs({ "-w", "-E" }) do
      r = H.run({ LOCK, opt })
      assert.are.equal(64, r.status)
      assert.matches("option " .. opt:gsub("%-", "%%-") .. " needs a value", r.stderr)
    end
    for _, bad in ipairs({ "-1", "1.5" }) do        -- no exit status either
      r = H.run({ LOCK, "-E", bad, d, "true" })
      assert.are.equal(64, r.status, bad)
      assert.matches("%-E: not an exit status", r.stderr)
    end
    r = H.run({ LOCK, d, "--", "no-such-command-here" })
    assert.are.equal(127, r.status)
    assert.matches("no%-such%-command%-here: command not found", r.stderr)
    H.write(d .. "/plain", "echo hi\n")     -- not executable
    r = H.run({ LOCK, d, "--", d .. "/plain" })
    assert.are.equal(126, r.status)
    assert.matches("Permission denied", r.stderr)
    os.remove(d .. "/plain")
    r = H.run({ LOCK, d .. "/missing", "--", "true" })
    assert.are.equal(71, r.status)
    assert.matches("No such file or directory", r.stderr)
    for _, opt in ipairs({ "--help", "-h" }) do
      r = H.run({ LOCK, opt })
      assert.are.equal(0, r.status, opt .. ": " .. r.stderr)
      assert.matches("^usage: luaguard%-lock", r.stdout)
    end
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)
end)
