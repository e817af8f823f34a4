-- lock.lease and fencing (SPEC section 4b) on a real 3-member etcd cluster
-- (tests/etcd_cluster.lua): the token fences writes made under the lock, a
-- holder paused past its lease is stopped before its next write, and a waiter
-- whose lease expired meanwhile is never told it holds the lock. Apart from
-- lease_spec.lua so that scripts/test can run the two side by side.
local H = require "tests.helpers"
local C = require "tests.etcd_cluster"

-- increments per process in the counter test (50: the issue's figure)
local INCREMENTS = tonumber(os.getenv("LUAGUARD_FENCE_INCREMENTS") or "") or 50

-- A fenced write from a holder: etcd's own txn, on the JSON gateway: the
-- counter is written only while the lock key still has the holder's create
-- revision (its token). Lua lines for a script, with ENDPOINT, NAME and POSTER
-- (tests/etcd_post.py: one kept-alive connection for the script's requests,
-- read back through a FIFO) set.
local FENCE = [[
local B = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  return ((s:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return B:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end
local function unb64(s)
  s = s:gsub("[^%w+/]", "")
  return (s:gsub(".", function(x)
    local r, f = "", B:find(x, 1, true) - 1
    for i = 6, 1, -1 do r = r .. (f % 2 ^ i - f % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end):gsub("%d%d%d?%d?%d?%d?%d?%d?", function(x)
    if #x ~= 8 then return "" end
    local c = 0
    for i = 1, 8 do c = c + (x:sub(i, i) == "1" and 2 ^ (8 - i) or 0) end
    return string.char(c)
  end))
end
local replies_path = os.tmpname()
os.remove(replies_path)
assert(os.execute("mkfifo " .. replies_path))
local requests = assert(io.popen(("exec python3 %s %s > %s"):format(POSTER, ENDPOINT, replies_path), "w"))
local replies = assert(io.open(replies_path))   -- (meets the helper's open of it)
os.remove(replies_path)
local function post(path, body)
  requests:write(path, " ", body, "\n")
  requests:flush()
  return assert(replies:read("l"), "tests/etcd_post.py ended")
end
local COUNTER = "luaguard-test/counter/" .. NAME
local function read_counter()
  local v = post("/v3/kv/range", ('{"key":"%s"}'):format(b64(COUNTER))):match('"value":"([^"]*)"')
  return v and tonumber(unb64(v)) or 0
end
-- counter := value, only while key's create revision is token: true if written
local function fenced_write(key, token, value)
  local out = post("/v3/kv/txn", ('{"compare":[{"key":"%s","target":"CREATE","create_revision":"%d"}],'
    .. '"success":[{"request_put":{"key":"%s","value":"%s"}}]}'):format(
    b64(key), token, b64(COUNTER), b64(tostring(value))))
  return out:find('"succeeded":true', 1, true) ~= nil
end
]]

describe("lock.lease fencing", function()
  local c, n = nil, 0
  local function name() n = n + 1; return ("f%d_%d"):format(n, math.random(1e6)) end
  local function env() return c:env() end
  local function fence(nm)
    return H.prelude .. ("local ENDPOINT, NAME, POSTER = %q, %q, %q\n"):format(
      c.endpoints[1], nm, H.root .. "/tests/etcd_post.py") .. FENCE
  end

  setup(function() c = C.start { members = 3 } end)
  teardown(function()
    if c then c:stop() end
    H.cleanup_tmp()
  end)

  it(("6 processes x %d fenced increments: exactly %d, tokens strictly increasing"):format(
       INCREMENTS, 6 * INCREMENTS), function()
    local nm = name()
    local d = H.tmpdir()
    local jobs = {}
    for i = 1, 6 do
      jobs[i] = H.spawn_script(fence(nm) .. ([[
        local log = assert(io.open(%q, "a"))
        for k = 1, %d do
          local l <close> = lock.lease(NAME, {timeout = 60})
          local v = read_counter()
          assert(fenced_write(l:key(), l:token(), v + 1), "a fenced write of a holder was refused")
          log:write(l:token(), " ", v + 1, "\n")
          log:flush()
        end
      ]]):format(d .. "/log", INCREMENTS), nil, { env = env() })
    end
    for i = 1, 6 do assert.are.equal(0, jobs[i]:wait(300), jobs[i]:stderr()) end
    local last, lines = 0, 0
    local entries = {}
    for line in H.read(d .. "/log"):gmatch("[^\n]+") do
      local t, v = line:match("^(%d+) (%d+)$")
      entries[#entries + 1] = { tonumber(t), tonumber(v) }
    end
    table.sort(entries, function(a, b) return a[2] < b[2] end)
    for i, e in ipairs(entries) do
      assert.are.equal(i, e[2], "the counter went up by one each time")
      assert.is_true(e[1] > last, "tokens strictly increase with the counter")
      last = e[1]
      lines = lines + 1
    end
    assert.are.equal(6 * INCREMENTS, lines)
    local r = c:etcdctl({ "get", "--print-value-only", "luaguard-test/counter/" .. nm })
    assert.are.equal(6 * INCREMENTS .. "\n", r.stdout)
    assert.are.same({}, c:keys("luaguard/lock/" .. nm))
  end)

  it("stops a holder that was itself stopped past the ttl before its next fenced write", function()
    local nm = name()
    local d = H.tmpdir()
    local job = H.spawn_script(fence(nm) .. ([[
      local l = lock.lease(NAME, {ttl = 2})
      local key, token = l:key(), l:token()
      local log = assert(io.open(%q, "a"))
      local h <close> = ErrorHandler(function() log:write("cleanup\n"); log:flush() end)
      local k = 0
      ready(%q)
      while true do
        l:check()
        k = k + 1
        log:write(fenced_write(key, token, k) and "written " or "refused ", k, "\n")
        log:flush()
        require("system").sleep(0.05)
      end
    ]]):format(d .. "/log", d .. "/ready"), nil, { env = env() })
    H.wait_for(d .. "/ready")
    local deadline = H.now() + 30        -- two writes at least (slow under valgrind)
    while select(2, (H.read(d .. "/log") or ""):gsub("\n", "")) < 2 and H.now() < deadline do
      H.sleep(0.05)
    end
    H.kill(job:pid(), "STOP")
    H.sleep(0.1)
    local before = select(2, H.read(d .. "/log"):gsub("\n", ""))
    H.sleep(3.5)                      -- past the ttl: etcd drops the lease
    H.kill(job:pid(), "CONT")
    assert.are.equal(1, job:wait(20))
    assert.matches("LeaseLost: " .. nm .. " %(token %d+%)", job:stderr())
    local lines = {}
    for line in H.read(d .. "/log"):gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal("cleanup", lines[#lines])
    assert.is_true(before >= 2, "it wrote before it was stopped")
    for i = 1, before do assert.matches("^written %d+$", lines[i]) end
    -- after the stop, at most the write it was in the middle of: done before
    -- the lease expired (written), or begun after and refused by the fence;
    -- then LeaseLost at the next check, before any other write
    assert.is_true(#lines - 1 - before <= 1, table.concat(lines, "\n"))
    -- the counter holds the last write logged, or the one on its way at the
    -- stop (done while the lease lived; LeaseLost then came before its log)
    local last_written = 0
    for i = 1, #lines - 1 do last_written = tonumber(lines[i]:match("^written (%d+)$")) or last_written end
    local r = c:etcdctl({ "get", "--print-value-only", "luaguard-test/counter/" .. nm })
    local counter = tonumber(r.stdout)
    assert.is_true(counter == last_written or counter == before + 1, r.stdout .. table.concat(lines, "\n"))
  end)

  it("never reports a lock to a waiter whose lease expired while it waited (etcd-io/etcd#11456)", function()
    local nm = name()
    local d = H.tmpdir()
    local holder = c:hold(nm, d)
    local waiter = H.spawn_script(([[
      io.open(%q, "w"):close()
      local l = lock.lease(%q, {ttl = 2, timeout = 30, endpoints = {%q}})
      print(l:key(), l:token())
      io.stdout:flush()
      while not io.open(%q) do require("system").sleep(0.05) end
    ]]):format(d .. "/waiting", nm, c.endpoints[1], d .. "/done"), nil,
      { env = env(), bare = true })   -- (a 2 s ttl: under memcheck its requests miss their time)
    H.wait_for_file(d .. "/waiting", 10)
    H.sleep(0.5)                      -- its lock/lock request is waiting at etcd
    H.kill(waiter:pid(), "STOP")      -- its renewals stop: the lease expires
    H.sleep(3.5)
    H.write(d .. "/stop", "")         -- the holder releases: etcd may now answer the dead waiter
    H.wait_for_file(d .. "/released", 10)
    H.sleep(0.5)
    H.kill(waiter:pid(), "CONT")
    local deadline = H.now() + 20
    while not waiter:stdout():find("\n") and H.now() < deadline do H.sleep(0.05) end
    local key, token = waiter:stdout():match("^(%S+)\t(%d+)")
    assert.is_not_nil(key, "the waiter got the lock in the end: " .. waiter:stderr())
    -- what it reports is a live key of its own, not the expired lease's
    local r = c:etcdctl({ "get", key, "-w", "json" })
    assert.matches('"create_revision":' .. token, r.stdout)
    H.write(d .. "/done", "")
    assert.are.equal(0, waiter:wait(10))
    assert.are.equal(0, holder:wait(10))
  end)
end)
