-- Packaging: one version string, the rockspec (Debian's luarocks, offline, into
-- a local tree, then stock lua5.4), staged installs (DESTDIR), and the LuaLS
-- annotations against the real API.
local H = require "tests.helpers"
local lfs = require "lfs"

local version = H.read(H.root .. "/src/include/luaguard.h"):match('#define LUAGUARD_VERSION "([^"]+)"')

describe("the version", function()
  teardown(H.cleanup_tmp)

  it("is set in one place, src/include/luaguard.h", function()
    assert.matches("^%d+%.%d+%.%d+$", version)
    -- no other source, script or example spells it out
    local r = H.run({ "grep", "-rlF", '"' .. version .. '"', "src", "lua", "scripts", "examples" },
                    { dir = H.root })
    assert.are.equal("src/include/luaguard.h\n", r.stdout)
  end)

  it("is what --version, the module and the rockspec say", function()
    local r = H.run({ H.host, "--version" })
    assert.are.equal(0, r.status)
    assert.are.equal("luaguard " .. version .. "\n", r.stdout:match("^[^\n]*\n"))
    assert.matches("\nLua 5%.4%.%d+  Copyright", r.stdout)
    r = H.run({ H.host, "-e", "print(require('luaguard')._VERSION)" })
    assert.are.equal("luaguard " .. version .. "\n", r.stdout)
    local rockspec = H.root .. "/luaguard-" .. version .. "-1.rockspec"
    assert.is_true(H.exists(rockspec), "no " .. rockspec)
    assert.matches('\nversion = "' .. version:gsub("%p", "%%%0") .. '%-1"\n', H.read(rockspec))
  end)
end)

describe("the rockspec", function()
  teardown(H.cleanup_tmp)

  it("builds with luarocks make, offline, and stock lua5.4 then requires it", function()
    -- a copy of the tracked tree: luarocks builds in place
    local src, tree = H.tmpdir(), H.tmpdir()
    local r = H.run({ "sh", "-c", "git ls-files -z --cached --others --exclude-standard | xargs -0 tar cf - | tar xf - -C " .. H.quote(src) },
                    { dir = H.root })
    assert.are.equal(0, r.status, r.stderr)
    r = H.run({ "luarocks", "--lua-version=5.4", "--tree=" .. tree, "make", "--deps-mode=none",
                "luaguard-" .. version .. "-1.rockspec" }, { dir = src, limit = 300 })
    assert.are.equal(0, r.status, r.stdout .. r.stderr)
    local lib = tree .. "/lib/lua/5.4/luaguard/core.so"
    assert.is_true(H.exists(lib))
    local d = H.tmpdir()
    r = H.run({ H.lua, "-e", [[
      local g = require "luaguard"
      local l = g.lock.dir(os.getenv("D"))
      local h <close> = g.ExitHandler(print, "cleanup ran")
      print(g._VERSION, package.searchpath("luaguard.core", package.cpath), l:is_locked())
      l:release()
      local ok, e = pcall(g.lock.lease, "x", {endpoints = {"http://127.0.0.1:1"}})
      assert(not ok and e.kind == "EtcdError", tostring(e))   -- luaguard.lease loaded
    ]] }, { dir = "/", env = {
      D = d,
      LUA_PATH = tree .. "/share/lua/5.4/?.lua;" .. tree .. "/share/lua/5.4/?/init.lua;;",
      LUA_CPATH = tree .. "/lib/lua/5.4/?.so;;" } })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal(("luaguard %s\t%s\ttrue\ncleanup ran\n"):format(version, lib), r.stdout)
    assert.is_false(H.exists(d .. "/.certbot.lock"))
  end)
end)

describe("scripts/install with DESTDIR", function()
  teardown(H.cleanup_tmp)

  it("stages under DESTDIR, with PREFIX in the pkg-config file and the man page versioned", function()
    local stage = H.tmpdir()
    local r = H.run({ H.root .. "/scripts/install", "/opt/luaguard" }, { env = { DESTDIR = stage }, limit = 300 })
    assert.are.equal(0, r.status, r.stderr)
    local root = stage .. "/opt/luaguard"
    for _, f in ipairs({ "bin/luaguard", "lib/lua/5.4/luaguard/core.so", "lib/lua/5.4/luaguard/lease.so",
                         "share/lua/5.4/luaguard/init.lua",
                         "include/luaguard.h", "lib/libluaguard.a", "lib/libluaguard.so",
                         "lib/pkgconfig/luaguard.pc", "share/man/man1/luaguard.1",
                         "share/luaguard/types/luaguard.lua",
                         "share/luaguard/examples/systemd/luaguard-renew.service" }) do
      assert.is_true(H.exists(root .. "/" .. f), f .. " not staged")
    end
    local pc = H.read(root .. "/lib/pkgconfig/luaguard.pc")
    assert.matches("^prefix=/opt/luaguard\n", pc)
    assert.matches("\nVersion: " .. version:gsub("%p", "%%%0") .. "\n", pc)
    assert.matches('^%.TH LUAGUARD 1 "[^"]*" "luaguard ' .. version:gsub("%p", "%%%0") .. '"',
                   H.read(root .. "/share/man/man1/luaguard.1"))
    assert.is_false(H.exists("/opt/luaguard/bin/luaguard") and not H.exists(root))
  end)
end)

describe("the LuaLS annotations (lua/luaguard/meta.lua)", function()
  local meta = H.read(H.root .. "/lua/luaguard/meta.lua")

  it("parse, and refuse to be required", function()
    assert.is_truthy(load(meta, "=meta"))
    local r = H.run({ H.host, "-e", "require 'luaguard.meta'" },
                    { env = { LUA_PATH = H.root .. "/lua/?.lua;;" } })
    assert.are.equal(1, r.status)
    assert.matches("editor annotations only", r.stderr)
  end)

  it("annotate every function and method the module really has", function()
    local r = H.run({ H.host, "-e", [[
      local g = require "luaguard"
      local names = {}
      for k, v in pairs(g) do if type(v) == "function" then names[#names + 1] = "luaguard." .. k end end
      local _ = g.lock.lease     -- loads luaguard.lease (first use)
      for k in pairs(g.lock) do names[#names + 1] = "lock." .. k end
      for k in pairs(debug.getregistry()["luaguard.LeaseLock"].__index) do
        names[#names + 1] = "LeaseLock:" .. k
      end
      local l = g.lock.LockFile(os.tmpname() .. ".lock")
      for k in pairs(getmetatable(l).__index) do names[#names + 1] = "LockFile:" .. k end
      l:release()
      local h = g.ErrorHandler()
      for k in pairs(getmetatable(h).__index) do names[#names + 1] = "Handler:" .. k end
      h:close()
      for k in pairs(g.proc) do names[#names + 1] = "proc." .. k end
      local p = g.proc.spawn({"true"})
      for k in pairs(getmetatable(p).__index) do names[#names + 1] = "Process:" .. k end
      p:wait()
      table.sort(names)
      print(table.concat(names, "\n"))
    ]] })
    assert.are.equal(0, r.status, r.stderr)
    local n = 0
    for name in r.stdout:gmatch("[^\n]+") do
      n = n + 1
      assert.is_truthy(meta:find("\nfunction " .. name .. "(", 1, true), name .. " has no annotation")
    end
    assert.is_true(n >= 10)
    for _, class in ipairs({ "luaguard.LockFile", "luaguard.ErrorHandler", "luaguard.ExitHandler",
                             "luaguard.SignalExit", "luaguard.LockError", "luaguard.OSError",
                             "luaguard.Process", "luaguard.ProcessError", "luaguard.LeaseLock",
                             "luaguard.EtcdError", "luaguard.LeaseLost" }) do
      assert.is_truthy(meta:find("---@class " .. class, 1, true), class .. " has no class")
    end
  end)
end)

describe("the exported symbols", function()
  -- Built with -fvisibility=hidden: a program embedding luaguard sees only
  -- what luaguard.h declares LUAGUARD_API (an lg_log of its own cannot clash).
  local function header_api()
    local api = {}
    for name in H.read(H.root .. "/src/include/luaguard.h"):gmatch("\nLUAGUARD_API [%w_ ]-%*?([%w_]+)%(") do
      api[name] = true
    end
    return api
  end
  local function exported(file)
    local names = {}
    local p = io.popen("nm -D --defined-only " .. H.quote(file))
    for line in p:lines() do
      local name = line:match("^%x+ %u ([%w_]+)$")
      if name and not name:match("^_") and name ~= "data_start" then names[#names + 1] = name end
    end
    p:close()
    table.sort(names)
    return names
  end

  it("libluaguard.so exports exactly the header's API", function()
    local api, want = header_api(), {}
    for name in pairs(api) do want[#want + 1] = name end
    table.sort(want)
    assert.is_true(#want >= 7, "the header declares the API")
    assert.are.same(want, exported(H.build .. "/lib/libluaguard.so"))
  end)

  it("luaguard/core.so and the host export nothing but the header's API", function()
    local api = header_api()
    for _, file in ipairs({ H.build .. "/lib/lua/luaguard/core.so", H.host }) do
      local names = exported(file)
      assert.is_true(#names > 0, file)
      for _, name in ipairs(names) do
        assert.is_true(api[name] == true, ("%s exports %s, which luaguard.h does not declare"):format(file, name))
      end
    end
  end)

  it("luaguard/lease.so exports its opener and nothing else", function()
    assert.are.same({ "luaopen_luaguard_lease" }, exported(H.build .. "/lib/lua/luaguard/lease.so"))
  end)
end)
