-- tests/etcd_cluster.lua — a real etcd cluster on loopback for the lease
-- tests: Debian's etcd (3.4), N members with fresh data directories and ports
-- of their own, started here and stopped here by pid. Short heartbeats and
-- elections, so a stopped leader is replaced in about a second. Data and logs
-- go to cluster.dir (on /dev/shm when it exists), kept when a test failed
-- (cluster:stop(true)).
--
--   local C = require "tests.etcd_cluster"
--   local c = C.start{members = 3}     -- c.endpoints, c.members[i].pid/.client
--   c:etcdctl{"get", "--prefix", "x"}  -- {status, stdout, stderr}
--   c:stop()
local H = require "tests.helpers"

local M = {}

local function listening_ports()
  local used = {}
  local p = io.popen("ss -Htan 2>/dev/null")
  for line in p:lines() do
    for port in line:gmatch(":(%d+)%s") do used[tonumber(port)] = true end
  end
  p:close()
  return used
end

local Cluster = {}
Cluster.__index = Cluster

-- The members' data on tmpfs when there is one: etcd syncs its log on every
-- write, and on this VM's disk that is most of a lock's cost.
local function data_dir()
  local p = io.popen("mktemp -d -p /dev/shm luaguard-etcd.XXXXXX 2>/dev/null || mktemp -d")
  local dir = p:read("l")
  p:close()
  return dir
end

-- etcdctl against the cluster (all endpoints, or opts.endpoints; as
-- opts.user, "name:password", once authentication is on), v3 API.
function Cluster:etcdctl(args, opts)
  opts = opts or {}
  local argv = { "etcdctl", "--endpoints", table.concat(opts.endpoints or self.endpoints, ","),
                 "--dial-timeout", "2s", "--command-timeout", opts.command_timeout or "5s" }
  if self.cacert then argv[#argv + 1] = "--cacert=" .. self.cacert end
  if self.cert then argv[#argv + 1] = "--cert=" .. self.cert; argv[#argv + 1] = "--key=" .. self.key end
  if opts.user then argv[#argv + 1] = "--user=" .. opts.user end     -- "name:password"
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return H.run(argv, { env = { ETCDCTL_API = "3" }, stdin = opts.stdin, bare = true })
end

-- Revoke, as another client would, the lease of the first key under prefix
-- (a holder's lock key): its holder learns it at its next renewal.
function Cluster:revoke_lease_of(prefix)
  local r = self:etcdctl({ "get", "--prefix", "-w", "json", prefix })
  local lease = assert(r.stdout:match('"lease":(%d+)'), r.stdout)
  r = self:etcdctl({ "lease", "revoke", ("%x"):format(math.tointeger(tonumber(lease))) })
  assert(r.status == 0, r.stderr)
end

-- The store's revision now (what a write makes grow).
function Cluster:revision()
  local r = self:etcdctl({ "get", "-w", "json", "luaguard-revision-probe" })
  local rev = assert(r.stdout:match('"revision":(%d+)'), r.stdout .. r.stderr)
  return math.tointeger(tonumber(rev))
end

-- Keys under prefix (a list, sorted).
function Cluster:keys(prefix)
  local r = self:etcdctl({ "get", "--prefix", "--keys-only", prefix })
  assert(r.status == 0, r.stderr)
  local keys = {}
  for line in r.stdout:gmatch("[^\n]+") do keys[#keys + 1] = line end
  table.sort(keys)
  return keys
end

-- The cluster's leases (a set of their ids, as etcdctl prints them).
function Cluster:leases()
  local r = self:etcdctl({ "lease", "list" })
  assert(r.status == 0, r.stderr)
  local ids = {}
  for id in r.stdout:gmatch("\n(%x+)") do ids[id] = true end
  return ids
end

local function member_argv(c, m)
  local argv = {
    "etcd", "--name", m.name, "--data-dir", m.data,
    "--listen-client-urls", m.client, "--advertise-client-urls", m.client,
    "--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
    "--initial-cluster", c.initial, "--initial-cluster-state", "new",
    "--initial-cluster-token", c.token,
    "--heartbeat-interval", "100", "--election-timeout", "500",
    "--logger", "zap", "--log-outputs", m.log,
  }
  for _, a in ipairs(m.extra or {}) do argv[#argv + 1] = a end
  return argv
end

-- Start member i (again, after a kill: its data directory is kept).
function Cluster:start_member(i)
  local m = self.members[i]
  local q = {}
  for k, a in ipairs(member_argv(self, m)) do q[k] = H.quote(a) end
  local p = io.popen(("exec %s </dev/null >/dev/null 2>&1 & echo $!"):format(table.concat(q, " ")))
  m.pid = tonumber(p:read("l"))
  p:close()
end

function Cluster:signal_member(i, sig)
  H.kill(self.members[i].pid, sig)
end

-- Whether every member (or member i) answers a health check.
function Cluster:healthy(i)
  local eps = i and { self.members[i].client } or self.endpoints
  local r = self:etcdctl({ "endpoint", "health" }, { endpoints = eps, command_timeout = "2s" })
  return r.status == 0
end

function Cluster:wait_healthy(timeout, i)
  local deadline = os.time() + (timeout or 20)
  while not self:healthy(i) do
    if os.time() > deadline then return false end
    H.sleep(0.1)
  end
  return true
end

-- The index of the leader's member, from endpoint status.
function Cluster:leader()
  local r = self:etcdctl({ "endpoint", "status", "-w", "fields" })
  local member_of, leader = {}, nil
  local current
  for line in r.stdout:gmatch("[^\n]+") do
    local ep = line:match('^"Endpoint"%s*:%s*"(.-)"')
    if ep then current = ep end
    local id = line:match('^"MemberID"%s*:%s*(%d+)')
    if id and current then member_of[id] = current end
    local l = line:match('^"Leader"%s*:%s*(%d+)')
    if l then leader = l end
  end
  for i, m in ipairs(self.members) do
    if leader and member_of[leader] == m.client then return i end
  end
  return nil
end

-- tests/etcd_proxy.py in front of member i (delay: its DELAY argument).
-- Returns the proxy's job, its port, and its control stream ("hold S").
function Cluster:proxy(i, delay)
  local fifo = H.tmpdir() .. "/ctl"
  os.execute("mkfifo " .. H.quote(fifo))
  local job = H.spawn({ H.python, H.root .. "/tests/etcd_proxy.py",
                        self.members[i].client:match(":(%d+)$"), delay and tostring(delay) },
                      { stdin = fifo })
  local ctl = assert(io.open(fifo, "w"))
  ctl:setvbuf("no")
  local deadline = H.now() + 10
  while not job:stdout():find("listening %d+") and H.now() < deadline do H.sleep(0.02) end
  return job, assert(job:stdout():match("listening (%d+)"), job:stderr()), ctl
end

-- The environment that points lock.lease at the cluster (every member), with
-- extra's variables besides.
function Cluster:env(extra)
  local e = { LUAGUARD_ETCD_ENDPOINTS = table.concat(self.endpoints, ",") }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

-- A host process holding lock.lease(name) on the cluster until dir/stop
-- appears; then it releases, writes dir/released and exits 0. Returned once
-- it holds (dir/held).
function Cluster:hold(name, dir)
  local job = H.spawn_script(([[
    local l = lock.lease(%q)
    io.open(%q, "w"):close()
    while not io.open(%q) do require("system").sleep(0.02) end
    l:release()
    io.open(%q, "w"):close()
  ]]):format(name, dir .. "/held", dir .. "/stop", dir .. "/released"), nil,
    { env = self:env() })
  H.wait_for_file(dir .. "/held", 10)
  return job
end

-- Stop every member (SIGTERM, then SIGKILL a second later: a member whose
-- peers are stopping too spends its 5 s trying to hand its leadership on, and
-- the data is thrown away), remove the directory unless keep.
function Cluster:stop(keep)
  for _, m in ipairs(self.members) do
    if m.pid then os.execute(("kill -CONT %d 2>/dev/null; kill -TERM %d 2>/dev/null"):format(m.pid, m.pid)) end
  end
  local deadline = H.now() + 1
  for _, m in ipairs(self.members) do
    if m.pid then
      while os.execute(("kill -0 %d 2>/dev/null"):format(m.pid)) and H.now() < deadline do
        H.sleep(0.05)
      end
      os.execute(("kill -KILL %d 2>/dev/null"):format(m.pid))
    end
  end
  if not keep then os.execute("rm -rf " .. H.quote(self.dir)) end
end

-- opts.members (3), opts.extra[i] (more flags for member i, e.g. TLS),
-- opts.scheme[i] ("https" for a TLS member), opts.cacert, opts.cert and
-- opts.key (for etcdctl: a client certificate, where members require one).
function M.start(opts)
  opts = opts or {}
  local n = opts.members or 3
  for _ = 1, 5 do
    local used = listening_ports()
    local base
    repeat
      base = 20000 + math.random(0, 2000) * 10
      local free = true
      for k = 0, 2 * n - 1 do if used[base + k] then free = false end end
    until free
    local c = setmetatable({ dir = data_dir(), members = {}, endpoints = {},
                             token = "luaguard-test-" .. base, cacert = opts.cacert,
                             cert = opts.cert, key = opts.key }, Cluster)
    local initial = {}
    for i = 1, n do
      local scheme = opts.scheme and opts.scheme[i] or "http"
      local m = { name = "m" .. i, client = ("%s://127.0.0.1:%d"):format(scheme, base + i - 1),
                  peer = ("http://127.0.0.1:%d"):format(base + n + i - 1),
                  data = c.dir .. "/m" .. i, log = c.dir .. "/m" .. i .. ".log",
                  extra = opts.extra and opts.extra[i] }
      c.members[i] = m
      c.endpoints[i] = m.client
      initial[i] = m.name .. "=" .. m.peer
    end
    c.initial = table.concat(initial, ",")
    for i = 1, n do c:start_member(i) end
    if c:wait_healthy(opts.timeout or 30) then return c end
    c:stop(true)   -- a port taken meanwhile, say: another base
  end
  error("could not start an etcd cluster (see the logs under the test's temporary directory)")
end

return M
