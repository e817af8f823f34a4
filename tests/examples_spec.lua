-- The examples run as written (examples/renew.lua is the README's first command).
local H = require "tests.helpers"

describe("examples/renew.lua", function()
  teardown(H.cleanup_tmp)
  local script = H.root .. "/examples/renew.lua"

  local function tree()
    local d = H.tmpdir()
    os.execute("mkdir -p " .. H.quote(d .. "/live"))
    H.write(d .. "/live/cert.pem", "OLD\n")
    return d
  end

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

  it("refuses to run while certbot's lock on the directory is held", function()
    local d = tree()
    local holder = H.spawn_script(H.prelude .. "local l = lock.dir(arg[1]); ready(arg[2]); wait_for(arg[3])",
                                  { d, d .. "/ready", d .. "/stop" })
    H.wait_for(d .. "/ready")
    local r = H.run({ H.host, script, d })
    H.write(d .. "/stop", "")
    holder:wait()
    assert.are.equal(1, r.status)
    assert.matches("another instance is running", r.stderr)
    assert.are.equal("OLD\n", H.read(d .. "/live/cert.pem"))
  end)
end)
