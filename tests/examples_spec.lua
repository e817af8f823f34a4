-- The examples run as written (examples/renew.lua is the README's first command).
local H = require "tests.helpers"

describe("examples/renew.lua", function()
  teardown(H.cleanup_tmp)
  local script = H.root .. "/examples/renew.lua"
  local tree = H.cert_tree

  it("runs on a demo tree with no arguments", function()
    local r = H.run({ H.host, script }, { env = { TMPDIR = H.tmpdir() } })
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("demo tree: ", r.stdout)
    assert.matches("renewal done", r.stdout)
    assert.matches("removed temporary files", r.stdout)
  end)

  it("swaps in the new certificate and releases the lock", function()
    local d = tree()
    local r = H.run({ H.host, script, d })
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("^%-%-%-%-%-NEW CERTIFICATE", H.read(d .. "/live/cert.pem"))
    assert.is_false(H.exists(d .. "/.certbot.lock"))
    assert.is_false(H.exists(d .. "/live/cert.pem.bak"))
  end)

  it("restores the backup when the reload fails", function()
    local d = tree()
    local r = H.run({ H.host, script, d, "false" })
    assert.are.equal(1, r.status)
    assert.matches("reload command \"false\" failed", r.stderr)
    assert.matches("restored the previous certificate", r.stdout)
    assert.are.equal("OLD\n", H.read(d .. "/live/cert.pem"))
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("restores the backup and dies by SIGTERM when stopped mid-deploy", function()
    local d = tree()
    local fifo = d .. "/pause"
    os.execute("mkfifo " .. H.quote(fifo))
    local job = H.spawn({ H.host, script, d }, { env = { RENEW_PAUSE = "1" }, stdin = fifo })
    local writer = assert(io.open(fifo, "w"))
    local deadline = os.time() + 10
    while not (H.read(d .. "/live/cert.pem") or ""):find("NEW") and os.time() < deadline do
      H.sleep(0.01)
    end
    H.sleep(0.1)
    H.kill(job:pid(), "TERM")
    local status = job:wait(10)
    writer:close()
    assert.are.equal(128 + 15, status, job:stderr())
    assert.matches("restored the previous certificate", job:stdout())
    assert.are.equal("OLD\n", H.read(d .. "/live/cert.pem"))
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("runs a reload command given as words, without a shell", function()
    local d = tree()
    local r = H.run({ H.host, script, d, "sh", "-c", "echo \"reloading $0\"", "nginx" })
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("reloading nginx\nreloaded; renewal done", r.stdout)
  end)

  it("forwards SIGTERM to a reload in progress and restores the backup only once it exited", function()
    local d = tree()
    local job = H.spawn({ H.host, script, d, "sh", "-c",
      "trap 'sleep 0.3; echo reload-exit >> \"$0/log\"; exit 0' TERM; echo > \"$0/reloading\"; " ..
      "n=0; while [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done", d })
    H.wait_for(d .. "/reloading")
    H.kill(job:pid(), "TERM")
    assert.are.equal(128 + 15, job:wait(20), job:stderr())
    assert.are.equal("reload-exit\n", H.read(d .. "/log"))
    assert.matches("restored the previous certificate", job:stdout())
    assert.are.equal("OLD\n", H.read(d .. "/live/cert.pem"))
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("refuses to run while certbot's lock on the directory is held", function()
    local d = tree()
    local holder = H.spawn_script(H.prelude .. "local l = lock.dir(arg[1]); ready(arg[2]); wait_for(arg[3])",
                                  { d, d .. "/ready", d .. "/stop" })
    H.wait_for(d .. "/ready")
    local r = H.run({ H.host, script, d }, { env = { RENEW_LOCK_WAIT = "0.5" } })
    H.write(d .. "/stop", "")
    holder:wait()
    assert.are.equal(1, r.status)
    assert.matches("another instance is running", r.stderr)
    assert.are.equal("OLD\n", H.read(d .. "/live/cert.pem"))
  end)
end)

describe("examples/oneoff.lua", function()
  teardown(H.cleanup_tmp)
  local script = H.root .. "/examples/oneoff.lua"

  local function tree()
    local d = H.tmpdir()
    for _, site in ipairs({ "a", "b", "c" }) do
      os.execute("mkdir -p " .. H.quote(d .. "/" .. site))
      H.write(d .. "/" .. site .. "/site.conf", "listen 80;\n")
    end
    H.write(d .. "/a/notes.txt", "listen 80;\n")   -- not a .conf: left alone
    return d
  end

  it("runs on a demo tree with no arguments", function()
    local r = H.run({ H.host, script }, { env = { TMPDIR = H.tmpdir() } })
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("demo tree: ", r.stdout)
    assert.matches("3 file%(s%) changed", r.stdout)
  end)

  it("changes every .conf file under the tree and releases the lock", function()
    local d = tree()
    local r = H.run({ H.host, script, d })
    assert.are.equal(0, r.status, r.stderr)
    for _, site in ipairs({ "a", "b", "c" }) do
      assert.are.equal("listen 8080;\n", H.read(d .. "/" .. site .. "/site.conf"))
    end
    assert.are.equal("listen 80;\n", H.read(d .. "/a/notes.txt"))
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("rolls every change back when the check command fails", function()
    local d = tree()
    local r = H.run({ H.host, script, d, "listen 80", "listen 8080", "sh", "-c", "echo bad config >&2; exit 1" })
    assert.are.equal(1, r.status)
    assert.matches("sh exited with status 1", r.stderr)
    assert.matches("bad config", r.stderr)
    for _, site in ipairs({ "a", "b", "c" }) do
      assert.are.equal("listen 80;\n", H.read(d .. "/" .. site .. "/site.conf"))
    end
    r = H.run({ H.host, script, d, "listen 80", "listen 8080", "true" })
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("check passed: true", r.stdout)
  end)

  it("rolls every change back on Ctrl-C mid-run and dies by SIGINT (130)", function()
    local d = tree()
    local fifo = d .. "/pause"
    os.execute("mkfifo " .. H.quote(fifo))
    local job = H.spawn({ H.host, script, d }, { env = { ONEOFF_PAUSE = "1" }, stdin = fifo })
    local writer = assert(io.open(fifo, "w"))
    writer:setvbuf("no")
    writer:write("\n")                 -- let it go on to the second file
    local deadline = os.time() + 10
    while H.read(d .. "/b/site.conf") ~= "listen 8080;\n" and os.time() < deadline do
      H.sleep(0.01)
    end
    H.kill(job:pid(), "INT")
    local status = job:wait(10)
    writer:close()
    assert.are.equal(128 + 2, status, job:stderr())
    assert.matches("rolled back .*/b/site%.conf\nrolled back .*/a/site%.conf\n", job:stdout())
    for _, site in ipairs({ "a", "b", "c" }) do
      assert.are.equal("listen 80;\n", H.read(d .. "/" .. site .. "/site.conf"))
    end
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)
end)

describe("examples/embed_lua_app.lua", function()
  teardown(H.cleanup_tmp)

  it("runs from stock lua5.4 with require 'luaguard', twice", function()
    local d = H.tmpdir()
    local script = H.root .. "/examples/embed_lua_app.lua"
    for _ = 1, 2 do
      local r = H.run_script(H.read(script), { d }, { interpreter = H.lua })
      assert.are.equal(0, r.status, r.stderr)
      assert.matches("published " .. d:gsub("%p", "%%%0") .. "/report.txt", r.stdout)
    end
    assert.matches("^luaguard %d+%.%d+%.%d+\ngenerated ", H.read(d .. "/report.txt"))
    local left = {}
    for name in require("lfs").dir(d) do
      if name ~= "." and name ~= ".." then left[#left + 1] = name end
    end
    assert.are.same({ "report.txt" }, left)
  end)
end)

describe("examples/embed_host.c", function()
  teardown(H.cleanup_tmp)
  local host = H.bin .. "/embed_host"

  it("is built by premake and runs a script with the luaguard global", function()
    local d = H.tmpdir()
    local r = H.run_script([[
      local l <close> = luaguard.lock.dir(arg[1])
      local h <close> = luaguard.ExitHandler(print, "cleanup ran")
      print(tostring(l):match("<%a+>"), select("#", ...))
    ]], { d }, { interpreter = host })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("<acquired>\t1\ncleanup ran\n", r.stdout)
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)

  it("closes the script's <close> variables on SIGTERM, then dies by it", function()
    local d = H.tmpdir()
    local job = H.spawn_script(H.prelude .. [[
      local l <close> = luaguard.lock.dir(arg[1])
      local h <close> = luaguard.ExitHandler(print, "cleanup ran")
      ready(arg[1] .. "/ready")
      spin()
    ]], { d }, { interpreter = host })
    H.wait_for(d .. "/ready")
    H.kill(job:pid(), "TERM")
    assert.are.equal(128 + 15, job:wait(10), job:stderr())
    assert.are.equal("cleanup ran\n", job:stdout())
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)
end)

describe("examples/systemd units", function()
  teardown(H.cleanup_tmp)
  local unit_dir = H.root .. "/examples/systemd"

  -- the units as installed, with the paths pointing at this tree
  local function local_units()
    local d = H.tmpdir()
    local service = H.read(unit_dir .. "/luaguard-renew.service")
      :gsub("/usr/local/bin/luaguard", H.host)
      :gsub("/usr/local/share/luaguard/examples/renew%.lua", H.root .. "/examples/renew.lua")
    H.write(d .. "/luaguard-renew.service", service)
    H.write(d .. "/luaguard-renew.timer", H.read(unit_dir .. "/luaguard-renew.timer"))
    return d, service
  end

  it("pass systemd-analyze verify", function()
    local d = local_units()
    local r = H.run({ "systemd-analyze", "verify", d .. "/luaguard-renew.service",
                      d .. "/luaguard-renew.timer" })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("", r.stderr)
  end)

  it("stop as the unit says: SIGTERM to the main process, rollback, death by SIGTERM", function()
    local _, service = local_units()
    assert.matches("\nKillMode=mixed\n", service)
    assert.matches("\nKillSignal=SIGTERM\n", service)
    assert.matches("\nSuccessExitStatus=SIGTERM\n", service)
    -- the unit's own command line, on a demo tree, with a reload that blocks
    local config = H.tmpdir()
    os.execute("mkdir -p " .. H.quote(config .. "/live"))
    H.write(config .. "/live/cert.pem", "OLD\n")
    local exec = service:match("\nExecStart=([^\n]+)")
    local argv = {}
    for word in exec:gsub('"[^"]*"', function(q) return q:sub(2, -2):gsub(" ", "\0") end):gmatch("%S+") do
      argv[#argv + 1] = word:gsub("%z", " ")
    end
    assert.are.equal(H.host, argv[1])
    assert.are.same({ "systemctl", "reload", "nginx" }, { argv[4], argv[5], argv[6] })
    -- the reload is still running at stop: it gets the SIGTERM too (it is in
    -- a process group of its own), and the rollback waits for it to exit
    argv = { argv[1], argv[2], config, "sleep", "30" }
    local job = H.spawn(argv)
    local deadline = os.time() + 10
    while not (H.read(config .. "/live/cert.pem") or ""):find("NEW") and os.time() < deadline do
      H.sleep(0.01)
    end
    H.sleep(0.2)
    H.kill(job:pid(), "TERM")            -- what KillMode=mixed sends the main process
    assert.are.equal(128 + 15, job:wait(10), job:stderr())
    assert.are.equal("OLD\n", H.read(config .. "/live/cert.pem"))
    assert.is_false(H.exists(config .. "/.certbot.lock"))
  end)
end)
