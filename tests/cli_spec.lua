-- The host command line: lua5.4's options and conventions, plus -h/--help,
-- --version and the luaguard line of -v (SPEC section 2).
local H = require "tests.helpers"

describe("host command line", function()
  teardown(H.cleanup_tmp)

  it("runs -e statements in order and exits 0", function()
    local r = H.run({ H.host, "-e", "x = 40", "-e", "print(x + 2)" })
    assert.are.equal(0, r.status)
    assert.are.equal("42\n", r.stdout)
  end)

  it("accepts -e with its argument concatenated", function()
    local r = H.run({ H.host, "-eprint('glued')" })
    assert.are.equal("glued\n", r.stdout)
  end)

  it("builds the arg table like lua5.4: script at 0, options negative", function()
    local text = "print(arg[-2], arg[-1], arg[1], arg[2], #arg, select('#', ...), ...)"
    local d = H.tmpdir()
    local script = H.write(d .. "/args.lua", text)
    local r = H.run({ H.host, "-W", script, "a", "b c" })
    assert.are.equal(0, r.status)
    assert.are.equal(H.host .. "\t-W\ta\tb c\t2\t2\ta\tb c\n", r.stdout)
    local ref = H.run({ H.lua, "-W", script, "a", "b c" })
    assert.are.equal(ref.stdout:gsub("^%S+", ""), r.stdout:gsub("^%S+", ""))
  end)

  it("passes a script thousands of arguments, as lua5.4 does", function()
    local d = H.tmpdir()
    local script = H.write(d .. "/many.lua", [[
      local n, sum = select("#", ...), 0
      for i = 1, n do sum = sum + tonumber((select(i, ...))) end
      print(n, sum, #arg, arg[n])
    ]])
    local argv = { H.host, script }
    for i = 1, 5000 do argv[#argv + 1] = tostring(i) end
    local r = H.run(argv)
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("5000\t12502500\t5000\t5000\n", r.stdout)
  end)

  it("runs a script from stdin with '-'", function()
    local r = H.run({ H.host, "-", "x", "y" }, { stdin = "print(arg[0], ...)" })
    assert.are.equal("-\tx\ty\n", r.stdout)
  end)

  it("runs stdin as a script when given no arguments and stdin is not a tty", function()
    local r = H.run({ H.host }, { stdin = "io.write('from stdin')" })
    assert.are.equal(0, r.status)
    assert.are.equal("from stdin", r.stdout)
  end)

  it("leaves stdin alone after -e or -v with no script, as lua5.4 does", function()
    for _, opts in ipairs { { "-e", "io.write('e ')" }, { "-eio.write('e ')" }, { "-v" } } do
      local ours = H.run({ H.host, table.unpack(opts) }, { stdin = "io.write('from stdin')" })
      local theirs = H.run({ H.lua, table.unpack(opts) }, { stdin = "io.write('from stdin')", bare = true })
      assert.are.equal(0, ours.status, ours.stderr)
      assert.is_nil(ours.stdout:find("from stdin", 1, true), opts[1] .. ": " .. ours.stdout)
      assert.are.equal((theirs.stdout:gsub("^Lua [^\n]*\n", "")), (ours.stdout:gsub("^luaguard [^\n]*\nLua [^\n]*\n", "")))
    end
  end)

  it("treats '--' as the end of options", function()
    local d = H.tmpdir()
    local script = H.write(d .. "/-e", "print('script named -e', ...)")
    local r = H.run({ H.host, "--", script, "1" })
    assert.are.equal("script named -e\t1\n", r.stdout)
  end)

  it("reports an uncaught error with progname, message and traceback, exit 1", function()
    local r = H.run({ H.host, "-e", "error('boom')" })
    assert.are.equal(1, r.status)
    assert.matches("^" .. H.host:gsub("%p", "%%%0") .. ": %(command line%):1: boom\n", r.stderr)
    assert.matches("stack traceback:", r.stderr)
    local ref = H.run({ H.lua, "-e", "error('boom')" })
    assert.are.equal(ref.stderr:gsub("^[^:]+", ""), r.stderr:gsub("^[^:]+", ""))
  end)

  it("refuses a script's arguments when -e made 'arg' no table, as lua5.4 does", function()
    local d = H.tmpdir()
    local script = H.write(d .. "/s.lua", "print('ran')")
    local r = H.run({ H.host, "-e", "arg = 1", script, "x" })
    local ref = H.run({ H.lua, "-e", "arg = 1", script, "x" })
    assert.are.equal(1, r.status)
    assert.are.equal(H.host .. ": 'arg' is not a table\n", r.stderr)
    assert.are.equal("", r.stdout)
    assert.are.equal(ref.status, r.status)
    assert.are.equal(ref.stderr:gsub("^[^:]+", ""), r.stderr:gsub("^[^:]+", ""))
  end)

  it("prints a non-string error object like lua.c", function()
    local r = H.run({ H.host, "-e", "error({})" })
    assert.are.equal(1, r.status)
    assert.matches(": %(error object is a table value%)", r.stderr)
    r = H.run({ H.host, "-e", "error(setmetatable({}, {__tostring = function() return 'TS' end}))" })
    assert.are.equal(H.host .. ": TS\n", r.stderr)
  end)

  it("passes os.exit(n) through as the status", function()
    assert.are.equal(7, H.run({ H.host, "-e", "os.exit(7)" }).status)
    assert.are.equal(0, H.run({ H.host, "-e", "os.exit(true)" }).status)
    assert.are.equal(1, H.run({ H.host, "-e", "os.exit(false)" }).status)
  end)

  it("gives lua5.4's message and usage for a bad option", function()
    for _, bad in ipairs({ "-x", "-ix", "--bogus", "-Wx", "-vx", "-Ex", "--x" }) do
      local r = H.run({ H.host, bad })
      assert.are.equal(1, r.status)
      assert.are.equal(H.host .. ": unrecognized option '" .. bad .. "'",
                       r.stderr:match("^[^\n]*"))
      assert.matches("\nusage: " .. H.host:gsub("%p", "%%%0") .. " %[options%] %[script %[args%]%]", r.stderr)
    end
    local r = H.run({ H.host, "-e" })
    assert.are.equal(H.host .. ": '-e' needs argument", r.stderr:match("^[^\n]*"))
    r = H.run({ H.host, "-l" })
    assert.are.equal(H.host .. ": '-l' needs argument", r.stderr:match("^[^\n]*"))
    r = H.run({ H.host, "-e", "-x" })      -- an option is not an argument
    assert.are.equal(H.host .. ": '-e' needs argument", r.stderr:match("^[^\n]*"))
  end)

  it("prints luaguard's line, then lua.c's version line, for -v", function()
    local r = H.run({ H.host, "-v" })
    assert.are.equal(0, r.status)
    local first, second = r.stdout:match("^([^\n]*)\n([^\n]*)\n$")
    assert.matches("^luaguard %d+%.%d+%.%d+$", first)
    assert.matches("^Lua 5%.4%.%d+  Copyright %(C%) 1994%-%d+ Lua%.org, PUC%-Rio$", second)
  end)

  it("writes -v's lines out before a script's child writes (stdout a pipe), as lua5.4", function()
    for _, interpreter in ipairs({ H.lua, H.host }) do
      local r = H.run({ interpreter, "-v", "-e", "os.execute('echo from-child')" })
      assert.are.equal(0, r.status, r.stderr)
      assert.matches("Copyright[^\n]*\nfrom%-child\n$", r.stdout)
    end
  end)

  it("has --version and -h/--help that exit 0", function()
    local v = H.run({ H.host, "--version" })
    assert.are.equal(0, v.status)
    assert.matches("^luaguard %d", v.stdout)
    assert.matches("Lua 5%.4", v.stdout)
    for _, opt in ipairs({ "-h", "--help" }) do
      local r = H.run({ H.host, opt })
      assert.are.equal(0, r.status)
      assert.matches("^usage: ", r.stdout)
      assert.matches("%-%-version", r.stdout)
      assert.are.equal("", r.stderr)
    end
  end)

  it("requires a module into a global with -l mod and -l g=mod", function()
    local r = H.run({ H.host, "-l", "lfs", "-l", "fs=lfs", "-e", "print(lfs == fs, type(lfs.attributes))" })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("true\tfunction\n", r.stdout)
  end)

  it("reports a failing -l like lua5.4 and stops", function()
    local r = H.run({ H.host, "-l", "no_such_module_xyz", "-e", "print('not reached')" })
    assert.are.equal(1, r.status)
    assert.matches("module 'no_such_module_xyz' not found", r.stderr)
    assert.are.equal("", r.stdout)
  end)

  it("runs LUA_INIT_5_4, falls back to LUA_INIT, and -E ignores both", function()
    local r = H.run({ H.host, "-e", "print(X)" }, { env = { LUA_INIT_5_4 = "X = 'five-four'", LUA_INIT = "X = 'plain'" } })
    assert.are.equal("five-four\n", r.stdout)
    r = H.run({ H.host, "-e", "print(X)" }, { env = { LUA_INIT_5_4 = false, LUA_INIT = "X = 'plain'" } })
    assert.are.equal("plain\n", r.stdout)
    local d = H.tmpdir()
    H.write(d .. "/init.lua", "X = 'from file'")
    r = H.run({ H.host, "-e", "print(X)" }, { env = { LUA_INIT_5_4 = "@" .. d .. "/init.lua" } })
    assert.are.equal("from file\n", r.stdout)
    r = H.run({ H.host, "-E", "-e", "print(X)" }, { env = { LUA_INIT_5_4 = "X = 1" } })
    assert.are.equal("nil\n", r.stdout)
  end)

  it("honours LUA_PATH_5_4, and -E ignores it", function()
    local d = H.tmpdir()
    H.write(d .. "/mymod.lua", "return 'mine'")
    local env = { LUA_PATH_5_4 = d .. "/?.lua;;" }
    local r = H.run({ H.host, "-e", "print((require 'mymod'))" }, { env = env })
    assert.are.equal("mine\n", r.stdout)
    r = H.run({ H.host, "-E", "-e", "print(pcall(require, 'mymod'))" }, { env = env })
    assert.matches("^false", r.stdout)
  end)

  it("turns warnings on with -W", function()
    local r = H.run({ H.host, "-W", "-e", "warn('careful')" })
    assert.are.equal("Lua warning: careful\n", r.stderr)
    r = H.run({ H.host, "-e", "warn('careful')" })
    assert.are.equal("", r.stderr)
  end)

  it("has the globals before the script runs, the same objects as require", function()
    local r = H.run({ H.host, "-e", [[
      local g = require "luaguard"
      print(g.lock == lock, g.ErrorHandler == ErrorHandler, g.ExitHandler == ExitHandler,
            type(lock.dir), type(lock.LockFile), g._VERSION)]] },
      { env = { LUA_PATH = false, LUA_CPATH = false, LUA_PATH_5_4 = false, LUA_CPATH_5_4 = false } })
    assert.are.equal(0, r.status, r.stderr)
    assert.matches("^true\ttrue\ttrue\tfunction\tfunction\tluaguard %d", r.stdout)
  end)

  it("loads Debian's C modules (lfs) and works from any directory", function()
    local r = H.run({ H.host, "-e", "print(require('lfs').currentdir())" }, { dir = "/" })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("/\n", r.stdout)
  end)

  it("runs stdin for '-', and after '--' a script file named '-'", function()
    local d = H.tmpdir()
    H.write(d .. "/-", "print('the file named -')\n")
    local r = H.run({ H.host, "-" }, { stdin = "print('stdin')\n", dir = d })
    assert.are.equal("stdin\n", r.stdout, r.stderr)
    r = H.run({ H.host, "--", "-" }, { stdin = "print('stdin')\n", dir = d })
    assert.are.equal("the file named -\n", r.stdout, r.stderr)
  end)

  it("runs an interactive session with -i, printing expression results", function()
    local r = H.run({ H.host, "-i" }, { stdin = "x = 6 * 7\n= x\nprint('p', x)\nerror('in repl')\nreturn 1, 2\n" })
    assert.are.equal(0, r.status)
    assert.matches("42\n", r.stdout)
    assert.matches("p\t42\n", r.stdout)
    assert.matches("1\t2\n", r.stdout)
    assert.matches("stdin:1: in repl", r.stderr)
  end)

  it("shows the same interactive session as lua5.4, line for line (after its own version line)", function()
    -- '=expr', _PROMPT and _PROMPT2, a statement over several lines, syntax
    -- errors on one line and over two, an error, results that print cannot
    -- show, and the newline at the end
    local stdin = table.concat({
      "x = 6 * 7", "= x", "_PROMPT = 'one> '", "_PROMPT2 = 'two> '", "local t = {", "1,", "}",
      "x = = 1", "for i = 1, 2 do", "y = = 2", "print('after the syntax errors', x)",
      "error('in repl')", "error(setmetatable({}, {__tostring = function() return 'shown' end}))",
      "return 1, nil, 'three'", "print = nil", "return 4", "",
    }, "\n")
    local ours = H.run({ H.host, "-i" }, { stdin = stdin })
    local theirs = H.run({ H.lua, "-i" }, { stdin = stdin, bare = true })
    assert.are.equal(0, ours.status, ours.stderr)
    assert.are.equal(theirs.status, ours.status)
    assert.matches("^luaguard [^\n]*\n", ours.stdout)
    assert.are.equal(theirs.stdout, (ours.stdout:gsub("^luaguard [^\n]*\n", "")))
    assert.are.equal(theirs.stderr, ours.stderr)
  end)
end)
