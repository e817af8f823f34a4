-- The Lua module from stock lua5.4, and the installed layout (SPEC sections 1, 5).
local H = require "tests.helpers"

describe("module from stock lua5.4", function()
  teardown(H.cleanup_tmp)

  it("returns lock, ErrorHandler, ExitHandler, _VERSION and sets no globals", function()
    local r = H.run_script([[
      local before = {}
      for k in pairs(_G) do before[k] = true end
      local g = require "luaguard"
      local added = {}
      for k in pairs(_G) do if not before[k] then added[#added + 1] = k end end
      print(#added, type(g.lock.dir), type(g.lock.LockFile), type(g.ErrorHandler),
            type(g.ExitHandler), g._VERSION, package.loaded["luaguard.core"] ~= nil)
    ]], nil, { interpreter = H.lua })
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("^0\tfunction\tfunction\tfunction\tfunction\tluaguard %d+%.%d+%.%d+\ttrue\n$", r.stdout)
  end)

  it("refuses luaguard.lease required before the core, with a clear error", function()
    local r = H.run_script([[
      local ok, e = pcall(require, "luaguard.lease")
      print(ok, e)
      print(pcall(function() return require("luaguard").lock.lease ~= nil end))
    ]], nil, { interpreter = H.lua })
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("^false\t[^\n]*luaguard.lease needs luaguard.core, loaded first\ntrue\ttrue\n$", r.stdout)
  end)

  it("takes locks and runs handlers from stock lua5.4", function()
    local d = H.tmpdir()
    local r = H.run_script([[
      local g = require "luaguard"
      local l <close> = g.lock.dir(arg[1])
      local h <close> = g.ExitHandler(io.write, "cleanup\n")
      print(l)
    ]], { d }, { interpreter = H.lua })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal(("LockFile(%s/.certbot.lock) <acquired>\ncleanup\n"):format(d), r.stdout)
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)
end)

describe("scripts/install", function()
  local prefix
  setup(function()
    prefix = H.tmpdir() .. "/prefix"
    local r = H.run({ H.root .. "/scripts/install", prefix }, { limit = 300 })
    assert.are.equal(0, r.status, r.stderr)
  end)
  teardown(H.cleanup_tmp)

  it("yields the SPEC section 5 layout", function()
    for _, f in ipairs({ "bin/luaguard", "lib/lua/5.4/luaguard/core.so",
                         "share/lua/5.4/luaguard/init.lua", "include/luaguard.h",
                         "lib/libluaguard.a", "lib/libluaguard.so",
                         "lib/pkgconfig/luaguard.pc", "share/man/man1/luaguard.1" }) do
      assert.is_true(H.exists(prefix .. "/" .. f), f .. " missing")
    end
  end)

  it("gives a host that runs from any directory", function()
    local r = H.run({ prefix .. "/bin/luaguard", "-e", "print(1, type(lock.dir))" }, { dir = "/" })
    assert.are.equal("1\tfunction\n", r.stdout, r.stderr)
  end)

  it("gives a host that finds its lease module beside itself, with no LUA_CPATH", function()
    local r = H.run({ prefix .. "/bin/luaguard", "-e", [[
      local ok, e = pcall(lock.lease, "x", {endpoints = {"http://127.0.0.1:1"}})
      print(e.kind, package.loaded["luaguard.lease"] ~= nil)
    ]] }, { dir = "/", env = { LUA_CPATH = false, LUA_CPATH_5_4 = false } })
    assert.are.equal("EtcdError\ttrue\n", r.stdout, r.stderr)
  end)

  it("gives a host that, copied away from its install, finds the lease module on LUA_CPATH or says what is missing", function()
    local d = H.tmpdir()
    assert(os.execute("cp " .. H.quote(prefix .. "/bin/luaguard") .. " " .. H.quote(d .. "/luaguard")))
    local code = [[
      local ok, e = pcall(function() return lock.lease("x", {endpoints = {"http://127.0.0.1:1"}}) end)
      print(type(e) == "table" and e.kind or e)
    ]]
    local r = H.run({ d .. "/luaguard", "-e", code }, { dir = "/", env = { LUA_CPATH = false, LUA_CPATH_5_4 = d .. "/?.so" } })
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("module 'luaguard.lease' not found %(lock.lease needs luaguard/lease.so%):\n\tno file '"
                   .. d:gsub("%p", "%%%0") .. "/luaguard/lease.so'", r.stdout)
    r = H.run({ d .. "/luaguard", "-e", code }, { dir = "/", env = { LUA_CPATH = false,
                LUA_CPATH_5_4 = d .. "/?.so;" .. prefix .. "/lib/lua/5.4/?.so" } })
    assert.are.equal("EtcdError\n", r.stdout, r.stderr)
  end)

  it("is found by stock lua5.4 with the SPEC's LUA_PATH/LUA_CPATH", function()
    local r = H.run({ H.lua, "-e", "local g = require 'luaguard'; print(g._VERSION, package.searchpath('luaguard.core', package.cpath))" },
      { dir = "/", env = {
        LUA_CPATH = prefix .. "/lib/lua/5.4/?.so;;",
        LUA_PATH = prefix .. "/share/lua/5.4/?.lua;" .. prefix .. "/share/lua/5.4/?/init.lua;;" } })
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("^luaguard %S+\t" .. prefix:gsub("%p", "%%%0") .. "/lib/lua/5%.4/luaguard/core%.so\n$", r.stdout)
  end)

  it("builds examples/embed_host.c with one pkg-config line, static or shared", function()
    local d = H.tmpdir()
    local example = H.quote(H.root .. "/examples/embed_host.c")
    local env = { PKG_CONFIG_PATH = prefix .. "/lib/pkgconfig" }
    local cc = ("cd %s && cc %s -o shared %s $(pkg-config --cflags --libs luaguard) && "
             .. "cc %s -o static %s $(pkg-config --cflags luaguard) %s/lib/libluaguard.a $(pkg-config --libs lua5.4) -lm")
             :format(H.quote(d), H.sanitize_cflags, example, H.sanitize_cflags, example, H.quote(prefix))
    local r = H.run({ "sh", "-c", cc }, { env = env, limit = 300 })
    assert.are.equal(0, r.status, r.stderr)
    local script = H.write(d .. "/s.lua", "local h = luaguard.ExitHandler(print, 'embedded ok'); h:close()")
    r = H.run({ d .. "/shared", script }, { env = { LD_LIBRARY_PATH = prefix .. "/lib" } })
    assert.are.equal("embedded ok\n", r.stdout, r.stderr)
    r = H.run({ d .. "/static", script })
    assert.are.equal("embedded ok\n", r.stdout, r.stderr)
  end)

  it("installs man pages that render without warnings (groff -ww, man -l)", function()
    for _, name in ipairs({ "luaguard", "luaguard-lock" }) do
      local page = H.quote(prefix .. "/share/man/man1/" .. name .. ".1")
      local r = H.run({ "sh", "-c", "groff -ww -man -Tutf8 " .. page .. " >/dev/null" })
      assert.are.equal(0, r.status, name)
      assert.are.equal("", r.stderr)
      r = H.run({ "sh", "-c", "MANWIDTH=80 man --warnings -l " .. page .. " >/dev/null" })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("", r.stderr)
    end
  end)

  it("installs luaguard-lock, which runs from any directory", function()
    local d = H.tmpdir()
    local r = H.run({ prefix .. "/bin/luaguard-lock", d, "--", "sh", "-c", "test -e .certbot.lock && exit 7" },
                    { dir = d })
    assert.are.equal(7, r.status, r.stderr)
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)
end)
