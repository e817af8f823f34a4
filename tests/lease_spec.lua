-- lock.lease (SPEC section 4b) against a real 3-member etcd cluster on
-- loopback, started and stopped here (tests/etcd_cluster.lua): etcd's own
-- lock protocol (etcdctl lock excludes us and we it), the token, the wait,
-- errors, and losing the lease: through the guard, as a signal stops a block.
local H = require "tests.helpers"
local C = require "tests.etcd_cluster"

local lua = H.run_prelude

describe("lock.lease", function()
  local c, failed, n = nil, false, 0
  -- every test its own lock name
  local function name() n = n + 1; return ("t%d_%d"):format(n, math.random(1e6)) end
  local function env(extra) return c:env(extra) end
  local function ok_or_show(r, status)
    assert.are.equal(status or 0, r.status, r.stdout .. r.stderr)
  end

  setup(function() c = C.start { members = 3 } end)
  teardown(function()
    if c then c:stop(failed) end
    H.cleanup_tmp()
  end)
  after_each(function()
    -- a test that stopped a member leaves it running again for the next
    for i, m in ipairs(c.members) do
      os.execute(("kill -CONT %d 2>/dev/null"):format(m.pid))
      if not os.execute(("kill -0 %d 2>/dev/null"):format(m.pid)) then c:start_member(i) end
    end
    assert.is_true(c:wait_healthy(20), "the cluster is healthy again")
  end)

  it("acquires with a token that grows, releases, and leaves nothing under the prefix", function()
    local nm = name()
    local r = lua(([[
      local a = lock.lease(%q)
      assert(a:is_locked() and a:check())
      local t1, key = a:token(), a:key()
      assert(math.type(t1) == "integer" and t1 > 0, tostring(t1))
      assert(key:find("^luaguard/lock/%s/%%x+$"), key)
      assert(tostring(a) == ("LeaseLock(%s) <acquired %%d>"):format(t1), tostring(a))
      a:release(); a:release()
      assert(not a:is_locked() and tostring(a) == "LeaseLock(%s) <released>")
      assert(a:token() == nil and a:key() == nil)
      local b <close> = lock.LeaseLock(%q)
      assert(b:token() > t1, "a new holder's token is larger")
      a:acquire()   -- held by b: fails at once (timeout 0)
    ]]):format(nm, nm, nm, nm, nm), nil, { env = env() })
    assert.are.equal(1, r.status, r.stderr)
    assert.matches("LeaseLock%(" .. nm .. "%): held by luaguard/lock/" .. nm .. "/%x+ %(lease %d+%); another instance is running", r.stderr)
    assert.are.same({}, c:keys("luaguard/lock/" .. nm))
  end)

  it("excludes etcdctl lock, and etcdctl lock excludes it", function()
    local nm = name()
    local d = H.tmpdir()
    -- etcdctl holds while its command runs (until the stop file appears)
    local holder = H.spawn({ "etcdctl", "--endpoints", table.concat(c.endpoints, ","), "lock", "--",
                             "luaguard/lock/" .. nm, "sh", "-c",
                             ("touch %s/held; n=0; while [ ! -e %s/stop ] && [ $n -lt 3000 ]; do sleep 0.02; n=$((n+1)); done"):format(d, d) },
                           { env = { ETCDCTL_API = "3" } })
    H.wait_for_file(d .. "/held", 10)
    local r = lua(([[
      local ok, e = pcall(lock.lease, %q)
      assert(not ok and e.kind == "LockError", tostring(e))
      assert(e.name == %q and e.holder:find("^luaguard/lock/%s/") and e.lease:match("^%%d+$"), tostring(e))
      assert(type(e.waited) == "number")
      io.open(%q, "w"):close()            -- the holder goes
      local l <close> = lock.lease(%q, {timeout = 10})
      print("got", l:token())
    ]]):format(nm, nm, nm, d .. "/stop", nm), nil, { env = env() })
    ok_or_show(r)
    assert.matches("got\t%d+", r.stdout)
    assert.are.equal(0, holder:wait(10))
    -- now the other way round: we hold, etcdctl waits
    d = H.tmpdir()
    local job = c:hold(nm, d)
    local waiter = H.spawn({ "etcdctl", "--endpoints", table.concat(c.endpoints, ","), "lock", "--",
                             "luaguard/lock/" .. nm, "touch", d .. "/etcdctl_got" },
                           { env = { ETCDCTL_API = "3" } })
    H.sleep(1)
    assert.is_false(H.exists(d .. "/etcdctl_got"), "etcdctl waits while we hold")
    H.write(d .. "/stop", "")
    assert.are.equal(0, job:wait(10))
    assert.are.equal(0, waiter:wait(10))
    assert.is_true(H.exists(d .. "/etcdctl_got"))
  end)

  it("gives up at its timeout with a LockError and leaves no waiter's key, nor its lease, nor its thread", function()
    local nm = name()
    local d = H.tmpdir()
    local job = c:hold(nm, d)
    local before = c:leases()
    local r = lua(([[
      collectgarbage("stop")   -- the failed LeaseLock stays uncollected: its thread must be gone anyway
      local ok, e = pcall(lock.lease, %q, {timeout = 0.5, ttl = 2})
      assert(not ok and e.kind == "LockError", tostring(e))
      assert(e.waited >= 0.5 and e.waited < 3, e.waited)
      nap(0.3)        -- past ttl/3 (0.67 s): a keep-alive thread left running renews now
      local threads = 0
      for t in require("lfs").dir("/proc/self/task") do
        if t:match("^%%d+$") then threads = threads + 1 end
      end
      assert(threads == 1, threads .. " threads after the failed attempt")
    ]]):format(nm), nil, { env = env() })
    ok_or_show(r)
    assert.are.equal(1, #c:keys("luaguard/lock/" .. nm), "only the holder's key is left")
    -- the attempt's lease is revoked as it gives up, not left to its ttl (2 s)
    for id in pairs(c:leases()) do assert.is_true(before[id], "a lease left: " .. id) end
    H.write(d .. "/stop", "")
    assert.are.equal(0, job:wait(10))
    assert.are.same({}, c:keys("luaguard/lock/" .. nm), "and it goes with its holder")
  end)

  it("with timeout 0 fails at once without queueing: no waiter's key is ever written", function()
    local nm = name()
    local d = H.tmpdir()
    local job = c:hold(nm, d)
    local function revision()
      local r = c:etcdctl({ "get", "luaguard", "-w", "json" })
      assert(r.status == 0, r.stderr)
      return tonumber(r.stdout:match('"revision":(%d+)'))
    end
    local before = revision()
    local r = lua(([[
      local ok, e = pcall(lock.lease, %q, {timeout = 0})
      assert(not ok and e.kind == "LockError", tostring(e))
    ]]):format(nm), nil, { env = env() })
    ok_or_show(r)
    -- a waiter's key would be a put and a delete: two revisions (how long it
    -- took is no measure: lock/lock's least wait is 0.25 s, an ASan run under
    -- load took 0.28 s without it)
    assert.are.equal(before, revision(), "the cluster's revision moved: a waiter's key was written")
    H.write(d .. "/stop", "")
    assert.are.equal(0, job:wait(10))
  end)

  it("is lost at the next renewal when someone else revokes the lease", function()
    local nm = name()
    local d = H.tmpdir()
    -- ttl 6: a renewal every 2 s; the lease's life by the holder's count
    -- would last up to 5.2 s after the last one
    local job = H.spawn_script(H.prelude .. ([[
      local l = lock.lease(%q, {ttl = 6})
      local h <close> = ErrorHandler(function()
        io.open(%q, "w"):write(io.open("/proc/uptime"):read("n"), "\n"):close()
      end)
      ready(%q)
      for _ = 1, 3000 do nap(0.01) end   -- until the loss stops it
    ]]):format(nm, d .. "/lost", d .. "/held"), nil, { env = env() })
    H.wait_for(d .. "/held")
    c:revoke_lease_of("luaguard/lock/" .. nm .. "/")
    local revoked = tonumber(H.read("/proc/uptime"):match("^[%d.]+"))
    local lost = tonumber(H.wait_for(d .. "/lost", 15))
    assert.are.equal(1, job:wait(10), job:stderr())
    assert.matches("LeaseLost: " .. nm, job:stderr())
    -- the release at exit finds the lease gone: known lost, so not a failure to report
    assert.is_nil(job:stderr():find("revoking the lease failed", 1, true), job:stderr())
    assert.is_true(lost - revoked < 2.8, ("lost %.2f s after the revoke: not at the next renewal")
      :format(lost - revoked))
  end)

  it("takes the lock again at acquire() after a loss, with a larger token", function()
    -- module mode with no handler armed: the loss stops nothing, is_locked()
    -- says it, at the next renewal (ttl 6: every 2 s), not when the holder's
    -- own count of the lease's life would run out (over 3 s after the revoke)
    local nm = name()
    local d = H.tmpdir()
    local job = H.spawn_script(H.prelude .. ([[
      local lock = require("luaguard").lock
      local l = lock.lease(%q, {ttl = 6})
      local first = l:token()
      ready(%q)
      local deadline = os.time() + 15
      while l:is_locked() and os.time() < deadline do nap(0.02) end
      io.open(%q, "w"):write(io.open("/proc/uptime"):read("n"), "\n"):close()
      local ok, e = pcall(l.check, l)
      print("lost", not l:is_locked(), ok)
      -- the error names what was lost (SPEC: LeaseLost {name, key, token})
      print(e.kind, e.name, e.token == first, e.key:find("^luaguard/lock/" .. e.name .. "/") ~= nil)
      -- token() and key() need the lease alive too: the same error
      local okt, et = pcall(l.token, l)
      local okk, ek = pcall(l.key, l)
      print("token", okt, et == e, "key", okk, ek == e)
      l:acquire()
      print("again", l:is_locked(), l:token() > first)
      l:release()
    ]]):format(nm, d .. "/held", d .. "/lost"), nil, { env = env(H.module_env), interpreter = H.lua })
    H.wait_for(d .. "/held")
    c:revoke_lease_of("luaguard/lock/" .. nm .. "/")
    local revoked = tonumber(H.read("/proc/uptime"):match("^[%d.]+"))
    local lost = tonumber(H.wait_for(d .. "/lost", 20))
    assert.are.equal(0, job:wait(20), job:stderr())
    assert.is_true(lost - revoked < 2.8, ("is_locked() false %.2f s after the revoke: not at the next renewal")
      :format(lost - revoked))
    assert.are.equal("lost\ttrue\tfalse\nLeaseLost\t" .. nm .. "\ttrue\ttrue\n"
                     .. "token\tfalse\ttrue\tkey\tfalse\ttrue\nagain\ttrue\ttrue\n", job:stdout())
    assert.are.same({}, c:keys("luaguard/lock/" .. nm))
  end)

  it("acquire() after a release waits as long as the constructor's timeout says", function()
    local nm = name()
    local d = H.tmpdir()
    local b = H.spawn_script(H.prelude .. ([[
      local l = lock.LeaseLock(%q, {timeout = 10})
      l:release()
      ready(%q)
      wait_for(%q)                       -- another process holds it now, for 1 s
      l:acquire()
      print("acquired", l:is_locked())
      l:release()
    ]]):format(nm, d .. "/released", d .. "/a_holds"), nil, { env = env() })
    H.wait_for(d .. "/released")
    local a = H.spawn_script(H.prelude .. ([[
      local l = lock.lease(%q)
      ready(%q)
      nap(1)
      l:release()
    ]]):format(nm, d .. "/a_holds"), nil, { env = env() })
    assert.are.equal(0, a:wait(20), a:stderr())
    assert.are.equal(0, b:wait(20), b:stderr())
    assert.are.equal("acquired\ttrue\n", b:stdout())
  end)

  it("lost while an inner handler's cleanups run: the outer block stops once they end", function()
    -- deferred as a signal is: the cleaning frame keeps the stop, and its
    -- close hands it on to the next frame of the state
    local nm = name()
    local d = H.tmpdir()
    local job = H.spawn_script(H.prelude .. ([[
      local l = lock.lease(%q, {ttl = 2})
      local outer <close> = ErrorHandler(function() print("outer cleanup") end)
      pcall(function()
        local inner <close> = ErrorHandler(function()
          ready(%q)
          local deadline = os.time() + 10
          while l:is_locked() and os.time() < deadline do nap(0.05) end
          print("the inner cleanup saw the loss", not l:is_locked())
        end)
        error("the inner block fails")
      end)
      print("NOT REACHED: the outer block went on")
      nap(5)
    ]]):format(nm, d .. "/cleaning"), nil, { env = env() })
    H.wait_for(d .. "/cleaning")
    c:revoke_lease_of("luaguard/lock/" .. nm .. "/")
    assert.are.equal(1, job:wait(20), job:stderr())
    assert.are.equal("the inner cleanup saw the loss\ttrue\nouter cleanup\n", job:stdout())
    assert.matches("LeaseLost: " .. nm, job:stderr())
  end)

  it("says which endpoint failed when the cluster cannot be reached", function()
    local r = lua([[
      local ok, e = pcall(lock.lease, "x", {endpoints = {"http://127.0.0.1:1", "http://127.0.0.1:2"}})
      assert(not ok and e.kind == "EtcdError", tostring(e))
      print(tostring(e))
      assert(e.endpoint:find("^http://127.0.0.1:[12]$") and type(e.code) == "number" and e.message ~= "")
      assert(tostring(e):find(e.endpoint, 1, true))
    ]], nil, { env = env() })
    ok_or_show(r)
  end)

  it("passes over a member that takes the connection but never answers (stopped), after 3 s", function()
    -- a follower, stopped: the kernel still accepts its connections, so only
    -- the attempt's limit moves on (1 s to connect, then 2 s for the answer)
    local other = c:leader() or 1
    local silent = other % 3 + 1
    c:signal_member(silent, "STOP")
    local r = lua(([[
      local t0 = io.open("/proc/uptime"):read("n")
      local l <close> = lock.lease(%q, {endpoints = {%q, %q}, timeout = 1})
      print(tostring(l):match("<acquired") ~= nil, io.open("/proc/uptime"):read("n") - t0)
    ]]):format(name(), c.endpoints[silent], c.endpoints[other]), nil, { env = env() })
    c:signal_member(silent, "CONT")
    ok_or_show(r)
    local acquired, took = r.stdout:match("^(%S+)\t([%d.]+)")
    assert.are.equal("true", acquired, r.stdout)
    assert.is_true(tonumber(took) >= 2.9 and tonumber(took) < 6, "took " .. tostring(took) .. " s")
  end)

  it("counts its requests, the thread's renewals too: grant, lock, range; a renewal each ttl/3; delete, revoke", function()
    local r = lua(([[
      local l = lock.lease(%q, {ttl = 3, timeout = 1})
      local acquired = l:requests()
      nap(2.5)                         -- renewals at 1 and 2 s
      local renewals = l:requests() - acquired
      l:release()
      print(acquired, renewals >= 1 and renewals <= 3, l:requests() - acquired - renewals)
    ]]):format(name()), nil, { env = env() })
    ok_or_show(r)
    assert.are.equal("3\ttrue\t2\n", r.stdout)
  end)

  it("checks its key after lock/lock with one range request while another client keeps writing", function()
    -- the member that answered the lock is at least as new as its answer:
    -- a store newer still (others' writes since) is no reason to ask again
    -- linearizably (only a member behind the answer is). A comparison the
    -- wrong way round asked again in about one acquisition of four here.
    local put = '/v3/kv/put {"key":"d3JpdGVy","value":"eA=="}'
    local writer = H.spawn({ "timeout", "8", "sh", "-c",
      ("yes %s | %s %s %s >/dev/null"):format(H.quote(put), H.python, H.quote(H.root .. "/tests/etcd_post.py"),
                                              c.endpoints[1]) })
    local before, deadline = c:revision(), H.now() + 10
    while c:revision() < before + 50 and H.now() < deadline do H.sleep(0.05) end
    assert.is_true(c:revision() >= before + 50, "the writer writes")
    local r = lua(([[
      local counts = {}
      for i = 1, 16 do
        local l = lock.lease(%q .. i, {endpoints = {%q}, ttl = 3, timeout = 1})
        counts[#counts + 1] = l:requests()
        l:release()
      end
      print(table.concat(counts, " "))
    ]]):format(name(), c.endpoints[1]), nil, { env = env() })
    H.kill(writer:pid(), "TERM")      -- timeout passes it on to its command's group
    assert.is_not_nil(writer:wait(5), "the writer stopped")
    ok_or_show(r)
    assert.are.equal(("3 "):rep(15) .. "3\n", r.stdout)
  end)

  it("keeps a released lease's connection for the next lease of the same endpoints (strace counts connects)", function()
    -- three leases one after the other: the caller's connection is opened
    -- once and kept (the keep-alive threads, which first renew at ttl/3,
    -- connect to nothing in that time)
    local port = c.endpoints[1]:match(":(%d+)$")
    local trace = H.tmpdir() .. "/trace"
    local nm = name()
    local r = H.run({ "strace", "-f", "-e", "trace=connect", "-o", trace, H.host, "-e", ([[
      for i = 1, 3 do lock.lease(%q, {endpoints = {%q}}):release() end
    ]]):format(nm, c.endpoints[1]) }, { bare = true, env = env({   -- (LeakSanitizer cannot run traced)
      ASAN_OPTIONS = os.getenv("ASAN_OPTIONS") and os.getenv("ASAN_OPTIONS") .. ":detect_leaks=0" or false }) })
    assert.are.equal(0, r.status, r.stderr)
    local connects = 0
    for line in io.lines(trace) do
      if line:find("connect(", 1, true) and line:find("htons(" .. port .. ")", 1, true) then
        connects = connects + 1
      end
    end
    assert.are.equal(1, connects, "connects to the endpoint for three leases")
  end)

  it("tries the endpoints in turn: one that cannot be reached is passed over", function()
    local nm = name()
    local r = lua(([[
      local l <close> = lock.lease(%q, {endpoints = {"http://127.0.0.1:1", %q}})
      print(tostring(l))
    ]]):format(nm, c.endpoints[2]), nil, { env = env() })
    ok_or_show(r)
    assert.matches("LeaseLock%(" .. nm .. "%) <acquired %d+>", r.stdout)
  end)

  it("says so when an endpoint answers HTTP but not as etcd (no JSON)", function()
    local server = H.spawn({ H.python, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1" })
    local deadline = H.now() + 10
    while not server:stdout():find("port %d+") and H.now() < deadline do H.sleep(0.02) end
    local port = server:stdout():match("port (%d+)")
    local r = port and lua(([[
      local ok, e = pcall(lock.lease, "x", {endpoints = {"http://127.0.0.1:%s"}, timeout = 0})
      print(ok, e.kind, e.code, e.endpoint, e.message)
      print(tostring(e))
    ]]):format(port), nil, { env = env() })
    server:abandon()
    assert(port, "no port from http.server: " .. server:stdout() .. server:stderr())
    ok_or_show(r)
    local first, second = r.stdout:match("^([^\n]*)\n([^\n]*)\n$")
    assert.are.equal(("false\tEtcdError\t501\thttp://127.0.0.1:%s\tHTTP 501, not JSON"):format(port), first)
    assert.matches("http://127.0.0.1:" .. port, second, 1, true)
    assert.matches("HTTP 501, not JSON", second, 1, true)
  end)

  -- An HTTP endpoint that is not etcd: every POST gets 'status' and 'body',
  -- and is counted on its stdout ("POST /v3/..."). Its job and URL.
  local function not_etcd(status, body)
    local server = H.spawn({ H.python, "-u", "-c", [[
import sys, http.server
status, body = int(sys.argv[1]), sys.argv[2].encode()
class Reply(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print("POST", self.path, flush=True)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
s = http.server.HTTPServer(("127.0.0.1", 0), Reply)
print("port", s.server_address[1], flush=True)
s.serve_forever()
]], tostring(status), body })
    local deadline = H.now() + 10
    while not server:stdout():find("port %d+") and H.now() < deadline do H.sleep(0.02) end
    local port = server:stdout():match("port (%d+)")
    assert(port, "no port from the fake endpoint: " .. server:stderr())
    return server, "http://127.0.0.1:" .. port
  end

  it("says so when an endpoint answers 200 with nothing at all", function()
    local server, url = not_etcd(200, "")
    local r = lua(([[
      local ok, e = pcall(lock.lease, "x", {endpoints = {%q}, timeout = 0})
      print(ok, e.kind, e.code, e.endpoint, e.message)
    ]]):format(url), nil, { env = env() })
    server:abandon()
    ok_or_show(r)
    assert.are.equal(("false\tEtcdError\t200\t%s\tHTTP 200, not JSON\n"):format(url), r.stdout)
  end)

  it("passes over an endpoint that takes no connection within a second (its SYNs unanswered)", function()
    -- a listening socket whose accept queue is full: the kernel drops new
    -- SYNs, so a connect there neither succeeds nor fails; only curl's
    -- connect timeout (1 s) moves on, before the request's own limit (2 s)
    local hole = H.spawn({ H.python, "-u", "-c", [[
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
port = s.getsockname()[1]
fill = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(("127.0.0.1", port))
    except BlockingIOError: pass
    fill.append(c)
time.sleep(0.2)
print("port", port, flush=True)
time.sleep(60)
]] })
    local deadline = H.now() + 10
    while not hole:stdout():find("port %d+") and H.now() < deadline do H.sleep(0.02) end
    local port = hole:stdout():match("port (%d+)")
    assert(port, "no port from the full listener: " .. hole:stderr())
    local r = lua(([[
      local gettime = require("system").gettime
      local t0 = gettime()
      local l <close> = lock.lease(%q, {endpoints = {"http://127.0.0.1:%s", %q}})
      print(("%%.2f"):format(gettime() - t0))
    ]]):format(name(), port, c.endpoints[1]), nil, { env = env() })
    hole:abandon()
    ok_or_show(r)
    local took = tonumber(r.stdout:match("^([%d.]+)"))
    -- at least the connect timeout (the full listener was tried first), and
    -- well short of the request's 2 s (it was curl's 1 s that ended it);
    -- under memcheck the rest is too slow to tell the two apart
    local most = H.valgrind_logs and 30 or 1.75
    assert.is_true(took ~= nil and took >= 0.95 and took < most, r.stdout)
  end)

  it("says so when an endpoint's authentication answers without a token", function()
    local server, url = not_etcd(200, "{}")
    local r = lua(([[
      local ok, e = pcall(lock.lease, "x", {endpoints = {%q}, user = "u", password = "p", timeout = 0})
      print(ok, e.kind, e.endpoint, e.message)
    ]]):format(url), nil, { env = env() })
    local heard = server:stdout()
    server:abandon()
    ok_or_show(r)
    assert.are.equal(("false\tEtcdError\t%s\tauthentication gave no token\n"):format(url), r.stdout)
    -- nothing was asked of it after the authentication
    assert.are.equal("POST /v3/auth/authenticate\n", (heard:gsub("^port %d+\n", "")))
  end)

  it("stays on the endpoint that answers: the next one in the list hears nothing", function()
    local server, url = not_etcd(503, "no")
    local r = lua(([[
      for i = 1, 3 do
        local l <close> = lock.lease(%q, {endpoints = {%q, %q}})
        assert(l:check())
      end
    ]]):format(name(), c.endpoints[2], url), nil, { env = env() })
    local heard = server:stdout()
    server:abandon()
    ok_or_show(r)
    assert.is_nil(heard:find("POST"), heard)
  end)

  it("starts a lock with other endpoints at its own first one, not where a kept connection was", function()
    -- the first lock moves past a refused endpoint to member 2; its kept
    -- connection must not serve the second lock, whose list differs only in
    -- its first endpoint: that one is asked (and is not etcd)
    local server, url = not_etcd(501, "not etcd")
    local r = lua(([[
      local l = lock.lease(%q, {endpoints = {"http://127.0.0.1:1", %q}})
      l:release()
      local ok, e = pcall(lock.lease, %q, {endpoints = {%q, %q}, timeout = 0})
      print(ok, e.kind, e.endpoint, e.message)
    ]]):format(name(), c.endpoints[2], name(), url, c.endpoints[2]), nil, { env = env() })
    local heard = server:stdout()
    server:abandon()
    ok_or_show(r)
    assert.are.equal(("false\tEtcdError\t%s\tHTTP 501, not JSON\n"):format(url), r.stdout)
    assert.matches("POST /v3/lease/grant", heard)
  end)

  it("takes its endpoints from LUAGUARD_ETCD_ENDPOINTS, and names a bad one there", function()
    local nm = name()
    local code = ([[
      local ok, e = pcall(lock.lease, %q, {timeout = 0})
      if ok then print(tostring(e)); e:release() else print(e) end
    ]]):format(nm)
    local r = lua(code, nil, { env = env { LUAGUARD_ETCD_ENDPOINTS = " ," .. c.endpoints[3] } })
    ok_or_show(r)
    assert.matches("^LeaseLock%(" .. nm .. "%) <acquired %d+>\n$", r.stdout)
    r = lua(code, nil, { env = env { LUAGUARD_ETCD_ENDPOINTS = c.endpoints[1] .. ",ftp://127.0.0.1:21" } })
    ok_or_show(r)
    assert.matches("LUAGUARD_ETCD_ENDPOINTS: ftp://127.0.0.1:21 is not an http:// or https:// URL\n$", r.stdout)
    r = lua(code, nil, { env = env { LUAGUARD_ETCD_ENDPOINTS = " , ," } })
    ok_or_show(r)
    assert.matches("LUAGUARD_ETCD_ENDPOINTS names no endpoint\n$", r.stdout)
  end)

  it("after release: check() and is_locked() say false, and a second release does nothing", function()
    local r = lua(([[
      local l = lock.lease(%q)
      print(l:check(), l:is_locked())
      l:release()
      print(l:check(), l:is_locked(), l:release(), tostring(l))
    ]]):format(name()), nil, { env = env() })
    ok_or_show(r)
    assert.matches("^true\ttrue\nfalse\tfalse\tnil\tLeaseLock%(t%d+_%d+%) <released>\n$", r.stdout)
    assert.are.equal("", r.stderr)
  end)

  it("says so at release when its key was deleted behind its back: the lock ended before", function()
    local nm = name()
    local d = H.tmpdir()
    local job = H.spawn_script(H.prelude .. ([[
      local l = lock.lease(%q)
      io.open(%q, "w"):write(l:key(), "\n"):close()
      wait_for(%q)
      l:release()
      print(l:is_locked())
    ]]):format(nm, d .. "/key", d .. "/go"), nil, { env = env() })
    local key = H.wait_for(d .. "/key"):match("^[^\n]+")
    local del = c:etcdctl { "del", key }
    H.write(d .. "/go", "\n")
    assert.are.equal(0, job:wait(15), job:stderr())
    assert.are.equal("1\n", del.stdout)
    assert.are.equal("false\n", job:stdout())
    assert.matches("LeaseLock%(" .. nm .. "%): its key was gone at release %(deleted, or the lease lost%): " ..
                   "the lock ended before it\n", job:stderr())
    assert.are.same({}, c:keys("luaguard/lock/" .. nm))
  end)

  it("logs, and does not raise, when the revoke at release cannot reach its member", function()
    local m = c.members[2]
    local r = lua(([[
      local l = lock.lease(%q, {endpoints = {%q}})
      kill("STOP", %d)
      -- stopped once its state says so (kill only asks; every thread of it
      -- must stop), 2 s at most
      for _ = 1, 200 do
        local stat = io.open("/proc/%d/stat")
        local state = stat and stat:read("a"):match("%%) (%%a)")
        if stat then stat:close() end
        if state == nil or state == "T" then break end
        nap(0.01)
      end
      local ok, e = pcall(l.release, l)
      kill("CONT", %d)
      print(ok, e, l:is_locked())
    ]]):format(name(), c.endpoints[2], m.pid, m.pid, m.pid), nil, { env = env() })
    os.execute(("kill -CONT %d 2>/dev/null"):format(m.pid))
    ok_or_show(r)
    assert.are.equal("true\tnil\tfalse\n", r.stdout)
    assert.matches("luaguard: LeaseLock%(t%d+_%d+%): revoking the lease failed %(" ..
                   c.endpoints[2]:gsub("%p", "%%%0") .. ": .-%); it expires by itself", r.stderr)
  end)

  it("refuses bad arguments with Lua's usual errors", function()
    local r = lua([[
      local function bad(pattern, ...)
        local ok, e = pcall(lock.lease, ...)
        assert(not ok and tostring(e):find(pattern), tostring(e))
      end
      -- an option's error names the options table, argument #2
      local function opt(what, ...) bad("bad argument #2 to '[%w.]*lease' %(" .. what, ...) end
      bad("bad argument #1 to '[%w.]*lease'", nil)
      bad("bad argument #1", "")
      bad("bad argument #2", "x", 5)
      opt("ttl must be", "x", {ttl = 1})
      opt("ttl must be", "x", {ttl = 2.5})
      opt("ttl must be", "x", {ttl = 10000000})
      opt("timeout must be", "x", {timeout = -1})
      opt("timeout must be", "x", {timeout = 0/0})
      opt("timeout must be a number of seconds", "x", {timeout = "soon"})
      opt("timeout must be a number of seconds", "x", {timeout = true})
      opt("endpoints must be", "x", {endpoints = "http://127.0.0.1:2379"})
      opt("endpoints must be", "x", {endpoints = {"127.0.0.1:2379"}})
      opt("endpoints must be", "x", {endpoints = {}})
      opt("prefix must be a string", "x", {prefix = 3})
      local ok, e = pcall(lock.LeaseLock, "x", {endpoints = {"http://127.0.0.1:1"}})
      assert(e.kind == "EtcdError")
    ]], nil, { env = env() })
    ok_or_show(r)
  end)

  it("is loaded on first use: the host starts without libcurl", function()
    local r = lua([[
      local function mapped()
        for l in io.lines("/proc/self/maps") do if l:find("libcurl", 1, true) then return true end end
        return false
      end
      assert(not mapped(), "libcurl at start-up")
      local l <close> = lock.dir(os.getenv("D"))
      assert(not mapped(), "libcurl after lock.dir")
      local ls <close> = lock.lease("first_use")
      assert(mapped(), "libcurl once lock.lease is used")
    ]], nil, { env = env { D = H.tmpdir() } })
    ok_or_show(r)
  end)

  it("works in module mode under stock lua5.4", function()
    local nm = name()
    local r = H.run_stock(([[
      local l <close> = lock.lease(%q)
      print(tostring(l))
    ]]):format(nm), nil, { env = env() })
    ok_or_show(r)
    assert.matches("LeaseLock%(" .. nm .. "%) <acquired %d+>", r.stdout)
  end)

  it("is cut short by a handled signal while it waits: cleanups run, no key is left", function()
    local nm = name()
    local d = H.tmpdir()
    local holder = c:hold(nm, d)
    local waiter = H.spawn_script(([[
      local h <close> = ExitHandler(function() io.stderr:write("cleanup ran\n") end)
      io.open(%q, "w"):close()
      local l = lock.lease(%q, {timeout = math.huge})
      print("got it: wrong")
    ]]):format(d .. "/waiting", nm), nil, { env = env() })
    H.wait_for_file(d .. "/waiting", 10)
    H.sleep(0.3)
    H.kill(waiter:pid(), "TERM")
    assert.are.equal(143, waiter:wait(10))
    assert.matches("cleanup ran", waiter:stderr())
    assert.are.equal("", waiter:stdout())
    assert.are.equal(1, #c:keys("luaguard/lock/" .. nm), "the waiter's key is gone")
    H.write(d .. "/stop", "")
    assert.are.equal(0, holder:wait(10))
  end)

  it("with no handler armed, its wait ends at lua5.4's Ctrl-C (SIGINT) under stock lua5.4", function()
    -- lua.c's SIGINT asks the chunk to stop at its next instruction; the
    -- wait (math.huge) must end for it, and leave no waiter's key
    local nm = name()
    local d = H.tmpdir()
    local holder = c:hold(nm, d)
    local waiter = H.spawn({ H.lua, "-e", ([[
      local lock = require("luaguard").lock
      io.open(%q, "w"):close()
      local ok, e = pcall(lock.lease, %q, {timeout = math.huge})
      print("not interrupted", ok, e)
    ]]):format(d .. "/waiting", nm) }, { env = env(H.module_env) })
    H.wait_for_file(d .. "/waiting", 10)
    H.sleep(0.3)
    H.kill(waiter:pid(), "INT")
    assert.are.equal(1, waiter:wait(10), waiter:stderr())
    assert.matches("^lua5.4: %(command line%):%d+: interrupted!\n", waiter:stderr())
    assert.are.equal("", waiter:stdout())
    assert.are.equal(1, #c:keys("luaguard/lock/" .. nm), "the waiter's key is gone")
    H.write(d .. "/stop", "")
    assert.are.equal(0, holder:wait(10))
  end)

  it("stops a guarded block with LeaseLost when its member goes silent past the ttl", function()
    local nm = name()
    local d = H.tmpdir()
    -- pinned to member 1; the block loops, swallowing errors with pcall
    local job = H.spawn_script(([[
      local l = lock.lease(%q, {ttl = 2, endpoints = {%q}})
      io.open(%q .. ".tmp", "w"):write(l:token(), "\n"):close()
      os.rename(%q .. ".tmp", %q)        -- whole, or not there
      local h <close> = ErrorHandler(function() io.stderr:write("cleanup 1\n") end)
      h:register(function() io.stderr:write("cleanup 2\n") end)
      while true do pcall(function() for i = 1, 1e5 do end end) end
    ]]):format(nm, c.members[1].client, d .. "/held", d .. "/held", d .. "/held"), nil, { env = env() })
    local token = tonumber(H.wait_for_file(d .. "/held", 10))
    local t0 = H.now()
    c:signal_member(1, "STOP")
    local status = job:wait(15)
    local took = H.now() - t0
    assert.are.equal(1, status, job:stderr())
    assert.matches("cleanup 2\ncleanup 1\n", job:stderr())
    assert.matches("LeaseLost: " .. nm .. " %(token " .. token .. "%)", job:stderr())
    -- the release at exit cannot reach the member either: the lease is known
    -- lost, so that is no failure to report
    assert.is_nil(job:stderr():find("revoking the lease failed", 1, true), job:stderr())
    assert.is_true(took < 2 + 1.5, "LeaseLost within ttl + margin: " .. took)
    -- a waiter on another member gets the lock, with a larger token
    local r = lua(([[
      local l <close> = lock.lease(%q, {timeout = 10, endpoints = {%q, %q}})
      print(l:token())
    ]]):format(nm, c.members[2].client, c.members[3].client), nil, { env = env() })
    ok_or_show(r)
    assert.is_true(tonumber(r.stdout) > token, r.stdout)
  end)

  -- A C test program (TAP) that prints "# held" once its lease on member 1 is
  -- taken: member 1 is then stopped past the ttl; it must pass. Its job.
  local function through_member_loss(argv, opts)
    local job = H.spawn(argv, opts)
    local deadline = H.now() + 20
    while not job:stdout():find("# held") and H.now() < deadline do H.sleep(0.05) end
    assert.matches("# held", job:stdout(), job:stderr())
    c:signal_member(1, "STOP")
    local status = job:wait(30)
    c:signal_member(1, "CONT")
    assert.are.equal(0, status, job:stdout() .. job:stderr())
    assert.is_nil(job:stdout():find("not ok", 1, true), job:stdout() .. job:stderr())
    return job
  end

  it("keeps its two threads free of data races (ThreadSanitizer), through a loss", function()
    local d = H.tmpdir()
    local exe = d .. "/lease_threads"
    local r = H.run({ "gcc", "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-O1", "-g", "-fsanitize=thread",
                      "-I" .. H.root .. "/src/core", "-I" .. H.root .. "/tests/c",
                      H.root .. "/tests/c/lease_threads.c", H.root .. "/src/core/lg_etcd.c",
                      "-o", exe, "-lcurl", "-lcjson", "-lpthread" }, { limit = 300 })
    assert.are.equal(0, r.status, r.stderr)
    local job = through_member_loss({ exe, c.members[1].client, "luaguard/lock/" .. name() },
                                    { env = { TSAN_OPTIONS = "halt_on_error=1 exitcode=66" } })
    assert.is_nil(job:stderr():find("ThreadSanitizer", 1, true), job:stderr())
    assert.matches("ok %d+ %- the callback ran once", job:stdout())
  end)

  it("stops only its own state's block: two Lua states in two threads, A's lease lost", function()
    local d = H.tmpdir()
    local exe = d .. "/lease_states"
    local argv = { "gcc", "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-O1", "-g",
                   "-I" .. H.root .. "/src/include", "-I" .. H.root .. "/tests/c", "-I/usr/include/lua5.4",
                   H.root .. "/tests/c/lease_states.c", "-o", exe, "-L" .. H.build .. "/lib",
                   "-Wl,-rpath," .. H.build .. "/lib", "-lluaguard", "-llua5.4", "-lpthread" }
    if H.sanitize_cflags ~= "" then table.insert(argv, 2, H.sanitize_cflags) end
    local r = H.run(argv, { limit = 300 })
    assert.are.equal(0, r.status, r.stderr)
    local job = through_member_loss({ exe, c.members[1].client, c.members[2].client, name() })
    assert.matches("ok %d+ %- B's block in the same process went on", job:stdout())
  end)

  it("stops a guarded block running in a coroutine, and a line at the REPL", function()
    local nm = name()
    local d = H.tmpdir()
    -- a coroutine: the block inside it stops, its cleanup runs, the error
    -- goes on through the resume and ends the host with 1
    local job = H.spawn_script(H.prelude .. ([[
      local l = lock.lease(%q, {ttl = 2, endpoints = {%q}})
      local body = coroutine.wrap(function()
        local h <close> = ErrorHandler(function() io.stderr:write("coroutine cleanup\n") end)
        ready(%q)
        while true do pcall(spin) end     -- spin() exits 99 if never stopped
      end)
      body()
      print("NOT REACHED")
    ]]):format(nm, c.members[1].client, d .. "/co"), nil, { env = env() })
    -- the REPL: the line running is stopped, the error reported, the armed
    -- ErrorHandler closed as by the loss (it rolls back), the session goes on
    os.execute("mkfifo " .. H.quote(d .. "/fifo"))
    local repl = H.spawn({ H.host, "-i" }, { stdin = d .. "/fifo" })
    local w = assert(io.open(d .. "/fifo", "w"))
    w:setvbuf("no")
    w:write(("l = lock.lease(%q, {ttl = 2, endpoints = {%q}}); "
      .. "h = ErrorHandler(function() io.stderr:write('repl rollback\\n') end); "
      .. "io.open(%q, 'w'):write('\\n'):close()\n"):format(nm .. "_repl", c.members[1].client, d .. "/repl"))
    w:write("local stop = os.time() + 15; while os.time() < stop do end; print('NOT ' .. 'STOPPED')\n")
    w:write("print('next line', l:is_locked())\n")
    assert(pcall(H.wait_for, d .. "/co"), job:stderr())
    assert(pcall(H.wait_for, d .. "/repl"), repl:stderr())
    c:signal_member(1, "STOP")
    local co_status = job:wait(15)
    -- the session goes on: it answers the next line, and is still there
    local deadline = H.now() + 15
    while not repl:stdout():find("next line") and not repl:poll(0) and H.now() < deadline do
      H.sleep(0.02)
    end
    local repl_line = repl:poll(0)       -- still at its prompt: nil
    w:close()
    local repl_status = repl:wait(10)
    c:signal_member(1, "CONT")
    assert.are.equal(1, co_status, job:stderr())
    assert.matches("^coroutine cleanup\n.*LeaseLost: " .. nm .. " %(token %d+%)", job:stderr())
    assert.are.equal("", job:stdout())
    assert.is_nil(repl_line, "the session went on after the loss")
    assert.are.equal(0, repl_status, repl:stderr())
    assert.matches("LeaseLost: " .. nm .. "_repl %(token %d+%)\nrepl rollback\n", repl:stderr())
    assert.is_nil(repl:stdout():find("NOT STOPPED", 1, true), repl:stdout())
    assert.matches("\nnext line\tfalse\n", repl:stdout())
  end)

  it("gives the main thread its own debug hook back once a loss stopped a coroutine's block", function()
    -- the loss hooks the main thread too (it stops the state when the
    -- coroutine cannot run); the program's count hook must come back there,
    -- whether or not a handler was ever armed on the main thread itself.
    -- Module mode: in the host, the outer frame makes the loss end the process.
    for _, mode in ipairs { "coroutine only", "main armed first" } do
      local nm = name()
      local d = H.tmpdir()
      local job = H.spawn_script(H.prelude .. ([[
        local luaguard = require "luaguard"
        local count = 0
        local function user_hook() count = count + 1 end
        debug.sethook(user_hook, "", 1000)
        if %s then luaguard.ErrorHandler():close() end
        local l = luaguard.lock.lease(%q, {ttl = 2})
        local body = coroutine.wrap(function()
          local h <close> = luaguard.ErrorHandler(function() io.stderr:write("cleanup\n") end)
          ready(%q)
          while true do pcall(spin) end
        end)
        local ok, e = pcall(body)
        print(ok, e.kind)
        local hook, mask, n = debug.gethook()
        local before = count
        for _ = 1, 1e5 do end
        print(hook == user_hook, mask, n, count > before)
      ]]):format(tostring(mode:find("first") ~= nil), nm, d .. "/held"), nil,
        { env = env(H.module_env), interpreter = H.lua })
      H.wait_for(d .. "/held")
      c:revoke_lease_of("luaguard/lock/" .. nm .. "/")
      assert.are.equal(0, job:wait(15), mode .. ": " .. job:stderr())
      assert.are.equal("cleanup\n", job:stderr(), mode)
      assert.are.equal("false\tLeaseLost\ntrue\t\t1000\ttrue\n", job:stdout(), mode)
    end
  end)

  it("counts the lease's life from when a renewal was sent: a reply that comes late stretches nothing", function()
    -- ttl 5: renewals every 1.67 s (each waited for that long), a margin of
    -- 0.7 s. The proxy holds the reply to the next renewal 1.5 s, then lets
    -- nothing through: etcd renewed at t and expires the lease at t + 5 (and
    -- its next check, within 0.5 s); the holder must count from t too, and
    -- know of its loss at t + 4.3, before the waiter on member 2 can hold.
    -- Counted from the late reply, it would believe in its lease until t + 5.8.
    local nm = name()
    local d = H.tmpdir()
    local proxy, port, ctl = c:proxy(1)
    local clock = 'local function now() return io.open("/proc/uptime"):read("n") end\n'
    local holder = H.spawn_script(H.prelude .. clock .. ([[
      local l = lock.lease(%q, {ttl = 5, endpoints = {"http://127.0.0.1:%s"}})
      local h <close> = ErrorHandler(function() io.open(%q, "w"):write(now(), "\n"):close() end)
      ready(%q)
      for _ = 1, 3000 do nap(0.01) end   -- until the loss stops it
    ]]):format(nm, port, d .. "/lost", d .. "/held"), nil, { env = env() })
    H.wait_for(d .. "/held")
    local waiter = H.spawn_script(clock .. ([[
      local l = lock.lease(%q, {timeout = 30, endpoints = {%q}})
      io.open(%q, "w"):write(now(), "\n"):close()
      l:release()
    ]]):format(nm, c.members[2].client, d .. "/acquired"), nil, { env = env() })
    H.sleep(0.5)                        -- the waiter is waiting in lock/lock
    ctl:write("hold 1.5\n")
    local ok_lost, lost = pcall(H.wait_for, d .. "/lost", 15)
    assert(ok_lost, "no loss: the proxy said " .. proxy:stdout() .. proxy:stderr() .. "; the holder: " .. holder:stderr())
    lost = tonumber(lost)
    local acquired = tonumber(H.wait_for(d .. "/acquired", 15))
    ctl:close()
    assert.are.equal(1, holder:wait(10), holder:stderr())
    assert.matches("LeaseLost: " .. nm, holder:stderr())
    assert.are.equal(0, waiter:wait(10), waiter:stderr())
    assert.matches("held [%d.]+", proxy:stdout())
    assert.is_true(acquired - lost > 0.2, ("the holder knew of its loss at %.2f, the waiter "
      .. "held at %.2f: %.2f s before"):format(lost, acquired, acquired - lost))
  end)

  -- tests/c/lease_threads.c without TSan, with its late keep-alive thread
  -- (built once)
  local plain_exe
  local function lease_threads_plain()
    if plain_exe then return plain_exe end
    local exe = H.tmpdir() .. "/lease_threads"
    local argv = { "gcc", "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-DLEASE_LATE_KEEPER", "-O1", "-g",
                   "-I" .. H.root .. "/src/core", "-I" .. H.root .. "/tests/c",
                   H.root .. "/tests/c/lease_threads.c", H.root .. "/src/core/lg_etcd.c",
                   "-o", exe, "-Wl,--wrap=pthread_cond_timedwait", "-lcurl", "-lcjson", "-lpthread" }
    if H.sanitize_cflags ~= "" then table.insert(argv, 2, H.sanitize_cflags) end
    local r = H.run(argv, { limit = 300 })
    assert.are.equal(0, r.status, r.stderr)
    plain_exe = exe
    return exe
  end

  it("is never released by a process forked from its holder", function()
    local r = H.run({ lease_threads_plain(), c.endpoints[1], "luaguard/lock/" .. name(), "fork" })
    assert.are.equal(0, r.status, r.stdout .. r.stderr)
    assert.matches("ok %d+ %- the parent's lease lives on", r.stdout)
    assert.is_nil(r.stdout:find("not ok", 1, true), r.stdout)
  end)

  it("is lost at once when its holder finds it dead by its own count before the keep-alive thread does", function()
    local r = H.run({ lease_threads_plain(), c.endpoints[1], "luaguard/lock/" .. name(), "late" })
    assert.are.equal(0, r.status, r.stdout .. r.stderr)
    assert.matches("ok %d+ %- the thread, awake again, calls it no more", r.stdout)
    assert.is_nil(r.stdout:find("not ok", 1, true), r.stdout)
  end)

  it("keeps the lock, with the same token, when the leader is killed", function()
    local nm = name()
    local d = H.tmpdir()
    local job = H.spawn_script(([[
      local l = lock.lease(%q, {ttl = 3})
      local t = l:token()
      io.open(%q, "w"):write(t, "\n"):close()
      local h <close> = ErrorHandler(function() io.stderr:write("cleanup ran: wrong\n") end)
      while not io.open(%q) do require("system").sleep(0.05) end
      assert(l:check() and l:token() == t)
      l:release()
      print("released", t)
    ]]):format(nm, d .. "/held", d .. "/go"), nil, { env = env() })
    H.wait_for_file(d .. "/held", 10)
    local leader = c:leader()
    assert.is_not_nil(leader, "a leader")
    c:signal_member(leader, "KILL")
    H.sleep(4.5)                     -- past the ttl: renewals went to the others
    H.write(d .. "/go", "")
    assert.are.equal(0, job:wait(15), job:stderr())
    assert.matches("released\t%d+", job:stdout())
    assert.are.same({}, c:keys("luaguard/lock/" .. nm))
  end)
end)
