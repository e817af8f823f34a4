-- The bad-input table: each row is one wrong thing done to the API, run in a
-- real host process. Every row checks the clear error (or the documented
-- behaviour), and that nothing is left behind: no new entry in the directory
-- involved, no descriptor left open (/proc/self/fd counted before and after),
-- no crash (the process ends the way it should).
local H = require "tests.helpers"
local lfs = require "lfs"

local is_root = H.is_root

-- What a row's script starts with: try(code) runs code in a pcall, collects
-- garbage, and prints ok, kind, errno, fds-delta, then tostring of the error.
local harness = [[
local lfs = require "lfs"
local function fds()
  local n = 0
  for _ in lfs.dir("/proc/self/fd") do n = n + 1 end
  return n
end
local function try(f)
  local before = fds()
  local ok, e = pcall(f)
  collectgarbage(); collectgarbage()
  local kind = type(e) == "table" and e.kind or type(e)
  print(ok, kind, type(e) == "table" and e.errno or "-", fds() - before)
  print((tostring(e):gsub("\n", " ")))
end
]]

local function entries(dir)
  local names = {}
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then names[#names + 1] = name end
  end
  table.sort(names)
  return table.concat(names, " ")
end

-- Run one row: code inside try(), with args; returns the parsed outcome.
local function row(code, args, opts)
  local r = H.run_script(harness .. "try(function() " .. code .. " end)", args, opts)
  local ok, kind, errno, delta, msg = (r.stdout or ""):match("(%S+)\t(%S+)\t(%S+)\t(%S+)\n([^\n]*)\n$")
  return { ok = ok, kind = kind, errno = tonumber(errno), fd_delta = tonumber(delta), msg = msg,
           status = r.status, stderr = r.stderr, raw = r.stdout }
end

local function assert_clean_failure(out, kind, errno)
  assert.are.equal(0, out.status, out.stderr)
  assert.are.equal("false", out.ok, out.raw)
  assert.are.equal(kind, out.kind, out.raw)
  if errno then assert.are.equal(errno, out.errno, out.raw) end
  assert.are.equal(0, out.fd_delta, "descriptors left open: " .. tostring(out.fd_delta))
end

describe("bad input", function()
  teardown(H.cleanup_tmp)

  describe("lock paths", function()
    it("missing directory: OSError ENOENT naming the path", function()
      local d = H.tmpdir()
      local out = row("lock.dir(arg[1] .. '/missing')", { d })
      assert_clean_failure(out, "OSError", 2)
      assert.are.equal(d .. "/missing/.certbot.lock: No such file or directory", out.msg)
      assert.are.equal("", entries(d))
    end)

    it("an empty directory name: OSError ENOENT, not the root directory", function()
      local out = row("lock.dir('')")
      assert_clean_failure(out, "OSError", 2)
      assert.are.equal("(empty path): empty directory name", out.msg)
      assert.is_false(H.exists("/.certbot.lock"))
    end)

    it("an empty lock file path: OSError ENOENT, as open(2) says, nothing created", function()
      local d = H.tmpdir()
      local out = row("lock.LockFile('')", nil, { dir = d })
      assert_clean_failure(out, "OSError", 2)
      assert.matches("No such file or directory", out.msg, 1, true)
      assert.are.equal("", entries(d))
    end)

    it("a plain file as the directory: OSError ENOTDIR, the file untouched", function()
      local d = H.tmpdir()
      H.write(d .. "/plain", "data")
      local out = row("lock.dir(arg[1] .. '/plain')", { d })
      assert_clean_failure(out, "OSError", 20)
      assert.matches("plain/.certbot.lock: Not a directory", out.msg, 1, true)
      assert.are.equal("data", H.read(d .. "/plain"))
      assert.are.equal("plain", entries(d))
    end)

    it("permission denied: OSError EACCES, nothing created", function()
      local d = H.tmpdir()
      local opts
      if is_root then
        -- root passes permission checks: run the host as nobody, on a 0755 root-owned dir
        opts = { prefix = H.as_nobody }
      else
        os.execute("chmod 0555 " .. H.quote(d))
      end
      local out = row("lock.dir(arg[1])", { d }, opts)
      os.execute("chmod 0755 " .. H.quote(d))
      assert_clean_failure(out, "OSError", 13)
      assert.matches(".certbot.lock: Permission denied", out.msg, 1, true)
      assert.are.equal("", entries(d))
    end)

    it("a read-only filesystem: OSError EROFS, nothing created", function()
      local d = H.tmpdir()
      -- a read-only bind mount of d, in a mount namespace of the host's own
      local probe = H.run({ "unshare", "-m", "sh", "-c",
        'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1"', "sh", d })
      if probe.status ~= 0 then
        pending("read-only filesystem: unshare -m and a read-only bind mount are not "
                .. "available here (" .. (probe.stderr or ""):gsub("\n", " ") .. ")")
        return
      end
      local out = row("lock.dir(arg[1])", { d }, { prefix = { "unshare", "-m", "sh", "-c",
        'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"',
        "sh", d } })
      assert_clean_failure(out, "OSError", 30)
      assert.matches(".certbot.lock: Read-only file system", out.msg, 1, true)
      assert.are.equal("", entries(d))
    end)

    it("a lock file that cannot be removed at release (its directory made immutable since): said on stderr, released anyway", function()
      local d = H.tmpdir()
      local probe = H.run({ "sh", "-c", 'chattr +i "$1" && chattr -i "$1"', "sh", d })
      if probe.status ~= 0 then
        pending("chattr +i does not work here: " .. probe.stderr)
        return
      end
      local r = H.run_script([[
        local d = arg[1]
        local l = lock.dir(d)
        assert(os.execute(("chattr +i %s"):format(d)))
        local ok, e = pcall(l.release, l)
        os.execute(("chattr -i %s"):format(d))
        print(ok, e, l:is_locked(), tostring(l))
        l:release()                                  -- a second one does nothing
      ]], { d })
      os.execute(("chattr -i %s"):format(H.quote(d)))
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal(("true\tnil\tfalse\tLockFile(%s/.certbot.lock) <released>\n"):format(d), r.stdout)
      assert.are.equal(("luaguard: could not remove %s/.certbot.lock: Operation not permitted\n"):format(d), r.stderr)
      -- unlocked all the same: another process takes it at once
      local other = H.run_script("local l = lock.dir(arg[1]); print(l:is_locked())", { d })
      assert.are.equal("true\n", other.stdout, other.stderr)
    end)

    it("a symlink at the lock path: OSError ELOOP, the target never created", function()
      local d = H.tmpdir()
      os.execute(("ln -s %s %s"):format(H.quote(d .. "/target"), H.quote(d .. "/.certbot.lock")))
      local out = row("lock.dir(arg[1])", { d })
      assert_clean_failure(out, "OSError", 40)
      -- our words, not strerror's ("Too many levels of symbolic links")
      assert.matches("is a symbolic link %(a lock file is never followed%)", out.msg)
      assert.are.equal(".certbot.lock", entries(d))
      assert.are.equal("link", lfs.symlinkattributes(d .. "/.certbot.lock", "mode"))
    end)

    it("a FIFO at the lock path: OSError (not a regular file), no hang", function()
      local d = H.tmpdir()
      os.execute("mkfifo " .. H.quote(d .. "/.certbot.lock"))
      local out = row("lock.dir(arg[1])", { d })
      assert_clean_failure(out, "OSError", 22)
      assert.matches("not a regular file", out.msg)
      assert.are.equal("named pipe", lfs.attributes(d .. "/.certbot.lock", "mode"))
    end)

    it("a device node at the lock path: OSError (not a regular file), the node left", function()
      -- a character device of our own (the null device's numbers; root)
      local d = H.tmpdir()
      assert(os.execute("mknod " .. H.quote(d .. "/.certbot.lock") .. " c 1 3"))
      local out = row("lock.dir(arg[1])", { d })
      assert_clean_failure(out, "OSError", 22)
      assert.matches("not a regular file", out.msg)
      assert.are.equal("char device", lfs.attributes(d .. "/.certbot.lock", "mode"))
    end)

    it("a NUL byte in the path: OSError EINVAL, nothing created", function()
      local d = H.tmpdir()
      local out = row("lock.LockFile(arg[1] .. '/a\\0b')", { d })
      assert_clean_failure(out, "OSError", 22)
      assert.matches("NUL", out.msg)
      assert.are.equal("", entries(d))
      -- lock.dir too: the directory's name cut at the NUL would be another's
      out = row("lock.dir(arg[1] .. '\\0/elsewhere')", { d })
      assert_clean_failure(out, "OSError", 22)
      assert.matches("NUL", out.msg)
      assert.are.equal("", entries(d))
    end)

    it("a path of 4096+ bytes: OSError ENAMETOOLONG, nothing created", function()
      local d = H.tmpdir()
      local out = row("lock.dir(arg[1] .. '/' .. string.rep('d/', 2100))", { d })
      assert_clean_failure(out, "OSError", 36)
      assert.matches("File name too long", out.msg)
      assert.are.equal("", entries(d))
      out = row("lock.LockFile(arg[1] .. '/' .. string.rep('n', 300))", { d })
      assert_clean_failure(out, "OSError", 36)
      assert.are.equal("", entries(d))
    end)

    it("a path naming a directory (trailing slash): OSError EISDIR", function()
      local d = H.tmpdir()
      local out = row("lock.LockFile(arg[1] .. '/')", { d })
      assert_clean_failure(out, "OSError", 21)
      assert.are.equal("", entries(d))
    end)
  end)

  describe("argument types", function()
    local cases = {
      { "lock.dir({})", "bad argument #1 to 'dir' %(string expected, got table%)" },
      { "lock.dir()", "bad argument #1 to 'dir' %(string expected, got no value%)" },
      { "lock.LockFile(arg[1] .. '/x.lock', 5)", "bad argument #2 to 'LockFile' %(table expected, got number%)" },
      { "lock.dir(arg[1], { timeout = 'soon' })", "bad argument #2 to 'dir' %(timeout must be a number" },
      { "lock.dir(arg[1], { timeout = -1 })", "bad argument #2 to 'dir' %(timeout must be a non%-negative" },
      { "lock.dir(arg[1], { timeout = 0/0 })", "bad argument #2 to 'dir' %(timeout must be a non%-negative" },
      { "local l <close> = lock.dir(arg[1]); l.acquire('not a lockfile')", "luaguard.LockFile expected, got string" },
      { "ErrorHandler(42)", "bad argument #1 to 'ErrorHandler' %(callable expected, got number%)" },
      { "ExitHandler():register({})", "bad argument #1 to 'register' %(callable expected, got table%)" },
      { "ExitHandler().close(io.stdout)", "luaguard.Handler expected, got FILE%*" },
    }
    for _, case in ipairs(cases) do
      it(case[1] .. " -> Lua's usual message", function()
        local d = H.tmpdir()
        local out = row(case[1], { d })
        assert.are.equal(0, out.status, out.stderr)
        assert.are.equal("false", out.ok, out.raw)
        assert.are.equal("string", out.kind, out.raw)
        assert.matches(case[2], out.msg)
        assert.are.equal(0, out.fd_delta)
        assert.are.equal("", entries(d))
      end)
    end
  end)

  describe("re-entry from cleanups", function()
    it("register from inside a running cleanup is refused; the rest runs", function()
      local out = row([[
        local h
        h = ExitHandler(function() print("first") end)
        h:register(function() h:register(print, "never") end)
        h:close()
      ]])
      assert.are.equal(0, out.status, out.stderr)
      assert.are.equal("true", out.ok, out.raw)
      assert.matches("register on a closing ExitHandler", out.stderr)
      assert.matches("^first\n", out.raw)
      assert.is_nil(out.raw:find("never"))
      assert.are.equal(0, out.fd_delta)
    end)

    it("close from inside a cleanup runs nothing twice", function()
      local out = row([[
        local n = 0
        local h
        h = ExitHandler(function() n = n + 1; h:close(); h:close("again") end)
        h:close(); h:close("err")
        error(("ran %d, %s, %s"):format(n, tostring(h), select(2, pcall(h.register, h, print))), 0)
      ]])
      assert.are.equal(0, out.status, out.stderr)
      assert.matches("^ran 1, ExitHandler %(0 cleanups, closed%), .*register on a closed ExitHandler", out.msg)
      assert.are.equal(0, out.fd_delta)
    end)

    it("a cleanup raising a non-string error object is logged; the next runs", function()
      local out = row([[
        local h <close> = ExitHandler(function() print("second") end)
        h:register(function() error(setmetatable({}, {__tostring = function() return "custom object" end})) end)
        h:register(function() error({}) end)
        h:register(function() error(setmetatable({}, {__tostring = function() error("no tostring") end})) end)
      ]])
      assert.are.equal(0, out.status, out.stderr)
      assert.matches("^second\n", out.raw)
      assert.matches("custom object", out.stderr)
      assert.matches("table: 0x", out.stderr)
      assert.are.equal(0, out.fd_delta)
    end)

    it("a cleanup that calls os.exit(n) ends the process with n; locks are released", function()
      local d = H.tmpdir()
      local r = H.run_script([[
        local l = lock.dir(arg[1])
        local h <close> = ExitHandler(print, "never: os.exit skips the rest")
        h:register(os.exit, 7)
        h:register(print, "first")
      ]], { d })
      assert.are.equal(7, r.status, r.stderr)
      assert.are.equal("first\n", r.stdout)
      assert.are.equal("", entries(d))
    end)

    it("a cleanup that calls os.exit(n, true) closes the state, then exits with n", function()
      local d = H.tmpdir()
      local r = H.run_script([[
        local l <close> = lock.dir(arg[1])
        local h <close> = ExitHandler(print, "never: the handler is already closing")
        h:register(os.exit, 3, true)
        h:register(print, "first")
      ]], { d })
      assert.are.equal(3, r.status, r.stderr)
      assert.are.equal("first\n", r.stdout)
      assert.are.equal("", entries(d))
    end)
  end)
end)
