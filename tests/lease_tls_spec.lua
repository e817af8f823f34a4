-- lock.lease over TLS (a CA, certificates, authentication) and the fleet
-- example, each against an etcd cluster of its own started and stopped here
-- (tests/etcd_cluster.lua). Apart from tests/lease_spec.lua so that the two
-- run side by side (scripts/test's groups): both mostly wait on etcd.
local H = require "tests.helpers"
local C = require "tests.etcd_cluster"

describe("lock.lease over TLS", function()
  local c, d
  -- Under --valgrind these runs go outside memcheck (bare): there the host's
  -- TLS handshake alone takes longer than the 2 s a connection to the last
  -- endpoint gets (etcdctl's dial timeout, lg_etcd.c's CONNECT_LAST_MS).
  local OUTSIDE_MEMCHECK = { bare = true }
  setup(function()
    d = H.tmpdir()
    -- a CA, a server certificate for 127.0.0.1 and a client certificate
    -- signed by it, and a CA of nobody's
    local sh = ([[
      cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca \
        -keyout ca.key -out ca.pem &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca \
        -keyout other.key -out other.pem &&
      openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr &&
      printf 'subjectAltName=IP:127.0.0.1\n' > san.ext &&
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile san.ext -out server.pem &&
      openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr &&
      openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -out client.pem
    ]]):format(H.quote(d))
    local r = H.run({ "sh", "-c", sh })
    assert(r.status == 0, r.stderr)
    c = C.start { members = 1, scheme = { "https" }, cacert = d .. "/ca.pem",
                  -- (auth tokens unused for 2 s expire: a connection idle
                  -- that long must authenticate again, see the auth test)
                  extra = { { "--cert-file", d .. "/server.pem", "--key-file", d .. "/server.key",
                              "--auth-token-ttl", "2" } } }
  end)
  teardown(function()
    if c then c:stop() end
    H.cleanup_tmp()
  end)

  it("works with the right CA, and a wrong CA gets a clear EtcdError", function()
    local r = H.run_prelude(([[
      local l <close> = lock.lease("tls", {endpoints = {%q}, cacert = %q})
      print(tostring(l))
      local ok, e = pcall(lock.lease, "tls2", {endpoints = {%q}, cacert = %q})
      assert(not ok and e.kind == "EtcdError", tostring(e))
      print(tostring(e))
      local ok2, e2 = pcall(lock.lease, "tls3", {endpoints = {%q}})
      assert(not ok2 and e2.kind == "EtcdError", tostring(e2))
    ]]):format(c.endpoints[1], d .. "/ca.pem", c.endpoints[1], d .. "/other.pem", c.endpoints[1]), nil, OUTSIDE_MEMCHECK)
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("LeaseLock%(tls%) <acquired %d+>", r.stdout)
    assert.matches("EtcdError: " .. c.endpoints[1]:gsub("%p", "%%%0") .. ": .*certificate", r.stdout)
  end)

  it("waits 2 s for a slow TLS handshake at the last endpoint left, 1 s where another is left", function()
    -- a proxy passes each connection's first reply (the server's hello) on
    -- 1.4 s late: alone, the endpoint is used; listed first, before the
    -- member itself, it is passed over after a second
    local proxy, port, ctl = c:proxy(1, 1.4)
    local r = H.run_prelude(([[
      local slow, ca = "https://127.0.0.1:%s", %q
      local function now() return io.open("/proc/uptime"):read("n") end
      local t0 = now()
      local l = lock.lease("slow-tls", {endpoints = {slow}, cacert = ca})
      local alone = now() - t0
      l:release()
      local t1 = now()
      local l2 = lock.lease("slow-tls", {endpoints = {slow, %q}, cacert = ca})
      local first = now() - t1
      l2:release()
      print(alone, first)
    ]]):format(port, d .. "/ca.pem", c.endpoints[1]), nil, { bare = true })   -- (timings: never under memcheck)
    ctl:close()
    proxy:wait(10)
    assert.are.equal(0, r.status, r.stderr)
    local alone, first = r.stdout:match("^([%d.]+)\t([%d.]+)\n$")
    alone, first = tonumber(alone), tonumber(first)
    assert.is_true(alone ~= nil and alone >= 1.4, "alone: used after " .. tostring(alone) .. " s")
    assert.is_true(first ~= nil and first >= 0.95, "listed first: passed over after " .. tostring(first) .. " s")
    -- (under ASan the member's own handshake and requests, after the second,
    -- take as long as waiting for the slow one would: the release pass tells)
    if not H.asan_preload then
      assert.is_true(first < 1.4, "listed first: passed over after " .. first .. " s, not used")
    end
  end)

  describe("where members require a client certificate", function()
    local cc
    setup(function()
      cc = C.start { members = 1, scheme = { "https" }, cacert = d .. "/ca.pem",
                     cert = d .. "/client.pem", key = d .. "/client.key",
                     extra = { { "--cert-file", d .. "/server.pem", "--key-file", d .. "/server.key",
                                 "--client-cert-auth", "--trusted-ca-file", d .. "/ca.pem" } } }
    end)
    teardown(function() if cc then cc:stop() end end)

    it("presents cert and key; without them the handshake fails with a clear EtcdError", function()
      local r = H.run_prelude(([[
        local ep, ca, cert, key = %q, %q, %q, %q
        local l <close> = lock.lease("cc", {endpoints = {ep}, cacert = ca, cert = cert, key = key})
        print(tostring(l))
        local ok, e = pcall(lock.lease, "cc2", {endpoints = {ep}, cacert = ca, timeout = 0})
        print(ok, e.kind, e.endpoint == ep)
      ]]):format(cc.endpoints[1], d .. "/ca.pem", d .. "/client.pem", d .. "/client.key"), nil, OUTSIDE_MEMCHECK)
      assert.are.equal(0, r.status, r.stderr)
      assert.matches("^LeaseLock%(cc%) <acquired %d+>\nfalse\tEtcdError\ttrue\n$", r.stdout)
    end)
  end)

  -- (last here: it turns authentication on for this cluster)
  it("authenticates with user and password: a user with a role on the prefix locks, others get EtcdError", function()
    for _, args in ipairs({
      { "user", "add", "root:rootpw" },
      { "role", "add", "locker" },
      { "role", "grant-permission", "locker", "--prefix=true", "readwrite", "luaguard/lock/" },
      { "user", "add", "locker:lockpw" },
      { "user", "grant-role", "locker", "locker" },
      { "auth", "enable" },
    }) do
      local r = c:etcdctl(args)
      assert(r.status == 0, table.concat(args, " ") .. ": " .. r.stderr)
    end
    -- ttl 8: renewals every 2.7 s, each past the token's 2 s (so the thread
    -- authenticates again too), with room for a slow one (ASan under load,
    -- memcheck: with ttl 3 such a renewal came too late and the lease was lost)
    local ttl = 8
    local r = H.run_prelude(([[
      local ep, ca, ttl = %q, %q, %d
      local function try(opts)
        opts.endpoints, opts.cacert = {ep}, ca
        local ok, e = pcall(lock.lease, "auth", opts)
        if ok then e:release() return "locked" end
        return e.kind .. " " .. tostring(e.code) .. " " .. tostring(e.message)
      end
      local l <close> = lock.lease("auth", {endpoints = {ep}, cacert = ca, user = "locker",
                                             password = "lockpw", ttl = ttl})
      nap(ttl + 0.5)                    -- past the ttl: the thread's renewals authenticate too
      -- and past the token's 2 s: the kept connections the tries below
      -- reuse, idle that long, get "invalid auth token" and authenticate
      -- again (without that, "no permission" gets the token's error)
      print(tostring(l), l:check())
      l:release()
      print("wrong password:", try({user = "locker", password = "nope"}))
      print("no user:", try({}))
      print("no permission:", try({user = "locker", password = "lockpw", prefix = "elsewhere/"}))
      print("root:", try({user = "root", password = "rootpw", prefix = "elsewhere/"}))
    ]]):format(c.endpoints[1], d .. "/ca.pem", ttl), nil, OUTSIDE_MEMCHECK)
    assert.are.equal(0, r.status, r.stderr)
    local lines = {}
    for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.matches("^LeaseLock%(auth%) <acquired %d+>\ttrue$", lines[1])
    assert.matches("^wrong password:\tEtcdError %d+ .*authentication failed", lines[2])
    assert.matches("^no user:\tEtcdError %d+ .*user name is empty", lines[3])
    assert.matches("^no permission:\tEtcdError %d+ .*permission denied", lines[4])
    assert.are.equal("root:\tlocked", lines[5])
    local left = c:etcdctl({ "get", "--prefix", "--keys-only", "" }, { user = "root:rootpw" })
    assert.are.equal(0, left.status, left.stderr)
    assert.is_nil(left.stdout:find("luaguard/lock/", 1, true), left.stdout)
    assert.is_nil(left.stdout:find("elsewhere/", 1, true), left.stdout)
  end)
end)

describe("examples/renew_fleet.lua", function()
  local c
  local script = H.root .. "/examples/renew_fleet.lua"
  local tree = H.cert_tree
  -- one member: the fleet's lease needs no more, and stopping it is the loss
  setup(function() c = C.start { members = 1 } end)
  teardown(function()
    if c then c:stop() end
    H.cleanup_tmp()
  end)

  it("renews under the fleet's lease and the directory's lock, and leaves neither", function()
    local d = tree()
    local r = H.run({ H.host, script, "example.org", d },
                    { env = c:env() })
    assert.are.equal(0, r.status, r.stderr)
    local token = r.stdout:match("fleet lock on example.org, token (%d+)")
    assert.is_not_nil(token, r.stdout)
    assert.matches("installed the new certificate\nreloaded; renewal done", r.stdout)
    assert.are.equal(token, H.read(d .. "/live/token"))
    assert.matches("token " .. token, H.read(d .. "/live/cert.pem"))
    assert.is_false(H.exists(d .. "/.certbot.lock"))
    assert.are.same({}, c:keys("luaguard/lock/example.org"))
  end)

  it("refuses to write over a newer holder's work (the fence)", function()
    local d = tree()
    H.write(d .. "/live/token", "999999999")
    local r = H.run({ H.host, script, "example.net", d },
                    { env = c:env() })
    assert.are.equal(1, r.status)
    assert.matches("the store holds token 999999999, newer than ours", r.stderr)
    assert.are.equal("OLD\n", H.read(d .. "/live/cert.pem"))
  end)

  it("restores the backup and fails with LeaseLost when the lease goes mid-deploy", function()
    local d = tree()
    local job = H.spawn({ H.host, script, "example.com", d, "sh", "-c", "sleep 30" },
                        { env = { LUAGUARD_ETCD_ENDPOINTS = c.endpoints[1], FLEET_LEASE_TTL = "2" } })
    local deadline = H.now() + 10
    while not job:stdout():find("installed") and H.now() < deadline do H.sleep(0.05) end
    c:signal_member(1, "STOP")
    assert.are.equal(1, job:wait(20))
    c:signal_member(1, "CONT")
    assert.matches("LeaseLost: example.com %(token %d+%)", job:stderr())
    assert.matches("restored the previous certificate", job:stdout())
    assert.are.equal("OLD\n", H.read(d .. "/live/cert.pem"))
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)
end)
