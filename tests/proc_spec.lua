-- proc.run / proc.spawn (SPEC section 4a) against real processes: what the
-- child gets (no shell, its own group, an empty mask, fds 0-2 only), pipes
-- captured without deadlock, and the guard's rule: a handled signal reaches
-- each child of the stopped block once, and no cleanup runs and no lock is
-- released before the child is gone.
local H = require "tests.helpers"

local lua = H.run_prelude

-- A child shell that logs each handled signal it gets, lingers 0.2 s, logs
-- its exit and exits 0; "ready" once its traps are set.
local TRAPPER = [[
log=$1; ready=$2
for s in TERM INT HUP QUIT XCPU XFSZ; do
  trap "echo got $s >> '$log'; sleep 0.2; echo child-exit >> '$log'; exit 0" $s
done
echo $$ > "$ready"
n=0; while [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done
]]

-- Running: a zombie is not (an orphaned grandchild waits for init to reap it,
-- which this machine's init does when it will).
local function alive(pid)
  local stat = H.read(("/proc/%d/stat"):format(pid))
  return stat ~= nil and stat:match("%) (%a)") ~= "Z"
end

describe("proc", function()
  teardown(H.cleanup_tmp)

  describe("run", function()
    it("returns status, captured stdout and stderr, and the pid", function()
      local r = lua([[
        local r = proc.run({"sh", "-c", "echo out; echo err >&2; exit 3"}, {stdout = "capture", stderr = "capture"})
        print(r.status, r.signal, r.stdout == "out\n", r.stderr == "err\n", r.timed_out, math.type(r.pid))
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("3\tnil\ttrue\ttrue\tfalse\tinteger\n", r.stdout)
    end)

    it("runs argv without a shell, PATH searched, and refuses a string with a hint", function()
      local r = lua([[
        local r = proc.run({"printf", "%s|", "a b", "$HOME", "*"}, {stdout = "capture"})
        print(r.stdout)
        local ok, err = pcall(proc.run, "echo hi")
        print(ok, err)
        print(pcall(proc.run, {}))
        print(pcall(proc.run, {"echo", 5}))
        print(pcall(proc.run, {"echo"}, {stdout = "file"}))
        print(pcall(proc.run, {"echo"}, {timeout = -1}))
        print(pcall(proc.run, {"echo"}, {stdout = "stdout"}))   -- stderr's word only
        print(pcall(proc.run, {"echo"}, {env_add = {["A=B"] = "x"}}))
        print(pcall(proc.run, {"echo"}, {cwd = "/tmp\0/x"}))
        local p = proc.spawn({"sleep", "5"})
        print(p:kill("SIGTERM"), p:wait().signal)              -- with or without SIG
      ]])
      assert.are.equal(0, r.status, r.stderr)
      local lines = {}
      for l in r.stdout:gmatch("[^\n]*\n") do lines[#lines + 1] = l end
      assert.are.equal("a b|$HOME|*|\n", lines[1])
      assert.matches('^false\tbad argument #1 to .-a table of strings expected, not a command line %(for a shell, say {"sh", "%-c", cmd}%)%)\n$', lines[2])
      assert.matches("^false\tbad argument #1 to .-argv is empty", lines[3])
      assert.matches("^false\tbad argument #1 to .-argv%[2%] must be a string, not number", lines[4])
      assert.matches("^false\tbad argument #2 to .-opts.stdout: unknown value", lines[5])
      assert.matches("^false\tbad argument #2 to .-opts.timeout must be a non%-negative number", lines[6])
      assert.matches("^false\tbad argument #2 to .-opts.stdout: unknown value", lines[7])
      assert.matches("^false\tbad argument #2 to .-bad environment variable name 'A=B'", lines[8])
      assert.matches("^false\tbad argument #2 to .-opts.cwd contains a NUL byte", lines[9])
      assert.are.equal("true\t15\n", lines[10])
    end)

    it("refuses each other bad argument with its own message, before anything starts", function()
      local r = lua([[
        local function try(...)
          local ok, err = pcall(...)
          print(ok, (tostring(err):gsub("^[^(]*%(", "(")))
        end
        try(proc.run, {"echo", "a\0b"})
        try(proc.run, {"echo"}, {timeout = "soon"})
        try(proc.run, {"echo"}, {grace = {}})
        try(proc.run, {"echo"}, {env = {A = 1}})
        try(proc.run, {"echo"}, {env_add = {"positional"}})
        try(proc.spawn, {"echo"}, {timeout = 1})
        local p = proc.spawn({"sleep", "5"})
        try(p.kill, p, "NOSUCH")
        try(p.kill, p, 0)
        try(p.kill, p, 65)
        try(p.kill, p, "SIG")
        try(p.kill, p, "9")        -- a name or a number, not a number in a string
        print(p:kill("KILL"), p:wait().signal)
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal(table.concat({
        "false\t(argv[2] contains a NUL byte)",
        "false\t(opts.timeout must be a number of seconds)",
        "false\t(opts.grace must be a number of seconds)",
        "false\t(env and env_add map names (strings) to values (strings))",
        "false\t(env and env_add map names (strings) to values (strings))",
        "false\t(opts.timeout is for proc.run (a Process has wait(timeout)))",
        "false\t(unknown signal name)",
        "false\t(not a signal number)",
        "false\t(not a signal number)",
        "false\t(unknown signal name)",
        "false\t(unknown signal name)",
        "true\t9", "" }, "\n"), r.stdout)
    end)

    it("keeps every inherited variable with env_add, adding its own", function()
      local r = lua([[
        local function lines(text)
          local t = {}
          for l in text:gmatch("[^\n]+") do t[#t + 1] = l end
          table.sort(t)
          return table.concat(t, "\n")
        end
        local inherited = proc.run({"env"}, {stdout = "capture"}).stdout
        local added = proc.run({"env"}, {env_add = {LG_ADDED = "1"}, stdout = "capture"}).stdout
        print(lines(added) == lines(inherited .. "LG_ADDED=1\n"), #inherited > 0)
      ]], nil, { env = { LG_FIRST = "a", LG_OTHER = "b" } })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("true\ttrue\n", r.stdout)
    end)

    it("feeds a stdin string, and replaces (env) or adds to (env_add) the environment, in cwd", function()
      local d = H.tmpdir()
      local r = lua([[
        print(proc.run({"cat"}, {stdin = "fed\n", stdout = "capture"}).stdout ==  "fed\n")
        print(proc.run({"sh", "-c", "echo \"[$A][$B][$HOME]\""}, {env = {A = "1", PATH = os.getenv("PATH")}, stdout = "capture"}).stdout)
        print(proc.run({"sh", "-c", "echo \"[$A][$B][${HOME:+home}]\""}, {env_add = {B = "2"}, stdout = "capture"}).stdout)
        -- env_add replaces an inherited variable: one HOME= in the child's environment
        local homes = {}
        for l in proc.run({"env"}, {env_add = {HOME = "/over"}, stdout = "capture"}).stdout:gmatch("[^\n]+") do
          homes[#homes + 1] = l:match("^HOME=(.*)")
        end
        print(#homes, homes[1])
        print(proc.run({"pwd"}, {cwd = arg[1], stdout = "capture"}).stdout)
        print(proc.run({"cat"}, {stdin = "null", stdout = "capture"}).stdout == "")
        print(proc.run({"sh", "-c", "echo x; echo y >&2"}, {stdout = "capture", stderr = "stdout"}).stdout)
        print(proc.run({"sh", "-c", "echo x"}, {stdout = "null"}).stdout)
        -- a child that stops reading: no SIGPIPE kills us, the run ends
        print(proc.run({"head", "-c", "1"}, {stdin = ("y"):rep(1000000), stdout = "null"}).status)
      ]], { d })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal(table.concat({ "true", "[1][][]", "", "[][2][home]", "", "1\t/over", d, "", "true", "x\ny",
                                      "", "nil", "0", "" }, "\n"), r.stdout)
    end)

    it("captures 10 MB on stdout and 10 MB on stderr at once, without deadlock", function()
      local r = lua([[
        -- (a deadlock ends at the child's timeout, and fails here as such)
        local r = proc.run({"sh", "-c", "head -c 10000000 /dev/zero; head -c 10000000 /dev/zero >&2; echo end"},
                           {stdout = "capture", stderr = "capture", timeout = 10})
        print(#r.stdout, #r.stderr, r.status, r.timed_out)
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("10000004\t10000000\t0\tfalse\n", r.stdout)
    end)

    it("stops a child at its timeout: SIGTERM to its group, then SIGKILL after grace", function()
      local d = H.tmpdir()
      local r = lua([[
        local r = proc.run({"sh", "-c", "sleep 30 & echo $! > " .. arg[1] .. "/grandchild; wait"}, {timeout = 0.3})
        print(r.timed_out, r.signal, r.status)
        local t0 = os.time()
        r = proc.run({"sh", "-c", "trap '' TERM; n=0; while [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done"}, {timeout = 0.2, grace = 0.3})
        print(r.timed_out, r.signal)
        local ok, err = pcall(proc.run, {"sleep", "5"}, {timeout = 0.1, check = true})
        print(err.kind, err.signal, tostring(err))
      ]], { d })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("true\t15\tnil\ntrue\t9\nProcessError\t15\tsleep was killed by SIGTERM (timed out)\n",
                       r.stdout)
      assert.is_false(alive(tonumber(H.read(d .. "/grandchild"))))
    end)

    it("SIGKILLs after grace a grandchild that survives SIGTERM when the child itself died of it", function()
      -- the leader is reaped at once; its group still runs: that must be
      -- seen (in /proc), and the group SIGKILLed after grace - with no
      -- second SIGTERM on the way (the grandchild logs each one it gets)
      local d = H.tmpdir()
      local r = lua([[
        local function fds()     -- this process's open descriptors but pipes
          -- (the counting popen's own pipe is there once or twice: a race)
          local p = io.popen("ls -l /proc/" .. PID .. "/fd")
          local n = 0
          for line in p:read("a"):gmatch("[^\n]+") do
            if line:find(" -> ", 1, true) and not line:find("pipe:", 1, true) then n = n + 1 end
          end
          p:close()
          return n
        end
        local before = fds()
        local r = proc.run({"sh", "-c", "(trap 'echo TERM >> " .. arg[1] .. "/got' TERM; "
                             .. "n=0; while [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done) & echo $! > " .. arg[1] .. "/grandchild; wait"},
                           {timeout = 0.3, grace = 0.5})
        print(r.timed_out, r.signal, fds() - before)   -- the watch over its group (/proc) left none open
      ]], { d })
      assert.are.equal(0, r.status, r.stderr)
      if (os.getenv("LUAGUARD_VALGRIND") or "") ~= "" then
        -- under memcheck one of valgrind's own descriptors may close meanwhile
        local left = tonumber(r.stdout:match("^true\t15\t(%-?%d+)\n$"))
        assert.is_true(left ~= nil and left <= 0, r.stdout)
      else
        assert.are.equal("true\t15\t0\n", r.stdout)
      end
      assert.are.equal("TERM\n", H.read(d .. "/got"))
      assert.is_false(alive(tonumber(H.read(d .. "/grandchild"))))
    end)

    it("refuses a relative command too long to join to cwd (ENAMETOOLONG), not as not found", function()
      local long = ("d/"):rep(2100) .. "x"     -- short components, 4201 bytes in all
      local r = lua(([[
        local ok, e = pcall(proc.run, {%q}, {cwd = "/tmp"})
        print(ok, e.kind, e.errno)
      ]]):format(long))
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("false\tOSError\t36\n", r.stdout)
    end)

    it("counts a zombie of the child's group as gone: the stop does not wait for its reaping", function()
      -- The host is init of a PID namespace of its own (unshare, as root):
      -- the grandchild, SIGTERMed with its group, becomes the host's orphan,
      -- a zombie nobody reaps. Waiting for it would add grace and SIGKILL's
      -- wait (5 s) at least once; it must end at the timeout.
      local r = H.run({ "unshare", "--fork", "--pid", "--mount-proc", H.host, "-e", [[
        local t0 = require("system").monotime()
        local r = proc.run({"sh", "-c", "sleep 30 & wait"}, {timeout = 0.3, grace = 0.2})
        local took = require("system").monotime() - t0
        local zombies = 0
        for line in io.popen("ps -eo stat=,comm="):lines() do
          if line:match("^Z%S*%s+sleep$") then zombies = zombies + 1 end
        end
        print(r.timed_out, r.signal, zombies, took < 3 or took)
      ]] })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("true\t15\t1\ttrue\n", r.stdout)
    end)

    it("finds a relative command in cwd, and uses /bin:/usr/bin when PATH is unset (as execvp)", function()
      local d = H.tmpdir()
      H.write(d .. "/here.sh", "#!/bin/sh\necho here\n")
      os.execute("chmod +x " .. H.quote(d .. "/here.sh"))
      local r = lua([[
        print(proc.run({"./here.sh"}, {cwd = arg[1], stdout = "capture"}).stdout)
        print(proc.run({"echo", "found"}, {stdout = "capture"}).stdout)
      ]], { d }, { env = { PATH = false } })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("here\n\nfound\n\n", r.stdout)
    end)

    it("raises OSError for a missing or non-executable command, leaving no zombie", function()
      local d = H.tmpdir()
      H.write(d .. "/plain", "echo hi\n")
      local r = lua([[
        -- "plain" alone is found on PATH (the host's, first), not runnable:
        -- EACCES, as execvp says, not "not found"
        for _, cmd in ipairs({"no-such-command-here", arg[1] .. "/plain", arg[1], "plain"}) do
          local ok, err = pcall(proc.run, {cmd})
          print(err.kind, err.errno, err.path == cmd)
        end
        local f = io.open("/proc/self/task/" .. PID .. "/children")
        print("children: [" .. f:read("a") .. "]")
      ]], { d }, { env = { PATH = d .. ":/usr/bin:/bin" } })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("OSError\t2\ttrue\nOSError\t13\ttrue\nOSError\t13\ttrue\nOSError\t13\ttrue\n"
                       .. "children: []\n", r.stdout)
    end)

    it("raises the exec's own error (ENOEXEC, E2BIG) and names a cwd that cannot be entered", function()
      -- a script with no #! line is not run through sh (posix_spawn, as
      -- Python's subprocess); a cwd missing or not a directory is said as
      -- such, not as "command not found"
      local d = H.tmpdir()
      H.write(d .. "/noshebang", "echo hi\n")
      os.execute("chmod +x " .. H.quote(d .. "/noshebang"))
      local r = lua([[
        local function try(argv, opts)
          local ok, e = pcall(proc.run, argv, opts)
          print(ok, e.kind, e.errno, e.path, tostring(e))
        end
        try({arg[1] .. "/noshebang"})
        try({"echo", ("x"):rep(200000)})
        try({"true"}, {cwd = arg[1] .. "/missing"})
        try({"./noshebang"}, {cwd = arg[1] .. "/noshebang"})
      ]], { d }, { bare = true })   -- not under valgrind: its clone is a fork, and posix_spawn cannot see the exec fail
      assert.are.equal(0, r.status, r.stderr)
      local lines = {}
      for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.are.equal(("false\tOSError\t8\t%s/noshebang\t%s/noshebang: Exec format error"):format(d, d), lines[1])
      assert.are.equal("false\tOSError\t7\techo\techo: Argument list too long", lines[2])
      assert.are.equal(("false\tOSError\t2\t%s/missing\t%s/missing: cannot enter it (opts.cwd): No such file or directory")
                       :format(d, d), lines[3])
      assert.are.equal(("false\tOSError\t20\t%s/noshebang\t%s/noshebang: cannot enter it (opts.cwd): Not a directory")
                       :format(d, d), lines[4])
    end)

    it("raises OSError EMFILE when descriptors run out, leaving none open and no child", function()
      -- every descriptor taken (the limit reached with /dev/null), then 0,
      -- 1 or 3 given back: a pipe cannot be made, the first or one after
      -- others. With 2 back, the pipe is made and only the pidfd cannot be:
      -- the run goes on without it.
      local r = lua([[
        local lfs = require "lfs"
        local function fds()
          local n = 0
          for name in lfs.dir("/proc/self/fd") do if name:match("^%d+$") then n = n + 1 end end
          return n
        end
        local function children()
          local n = 0
          for line in io.lines("/proc/self/task/" .. PID .. "/children") do n = n + #line:gsub("%S+", "") end
          return n
        end
        local function try(spare, opts)
          local before, held = fds(), {}
          while true do
            local f = io.open("/dev/null")
            if not f then break end
            held[#held + 1] = f
          end
          for _ = 1, spare do table.remove(held):close() end
          local ok, e = pcall(proc.run, {"echo", "hi"}, opts)
          for i = #held, 1, -1 do held[i]:close() end   -- newest first: glibc unlinks a FILE in O(open FILEs)
          local res = ok and e.stdout or type(e) == "table" and e.kind .. " " .. tostring(e.errno) or tostring(e)
          print(ok, res, fds() - before, children())
        end
        try(0, {stdout = "capture"})
        try(1, {stdout = "capture", stderr = "capture"})
        try(3, {stdin = "x", stdout = "capture", stderr = "capture"})
        try(2, {stdout = "capture"})
      ]], nil, { prefix = { "prlimit", "--nofile=256", "--" } })   -- not the machine's limit: CI's may be 2^20
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal(("false\tOSError 24\t0\t0\n"):rep(3) .. "true\thi\n\t0\t0\n", r.stdout)
    end)

    it("raises ProcessError with check: argv, status, signal, the tail of stderr", function()
      local r = lua([[
        local ok, err = pcall(proc.run, {"sh", "-c", "head -c 6000 /dev/zero | tr '\\0' x >&2; echo last >&2; exit 4"},
                              {check = true, stderr = "capture"})
        print(err.kind, err.status, err.signal, err.argv[1], #err.stderr, err.stderr:sub(-5), tostring(err))
        print(pcall(proc.run, {"true"}, {check = true}))
      ]])
      assert.are.equal(0, r.status, r.stderr)
      local first = r.stdout:match("^[^\n]*")
      assert.are.equal("ProcessError\t4\tnil\tsh\t4096\tlast\n\tsh exited with status 4", first .. "\n" .. r.stdout:match("\n([^\n]*)\n"))
      assert.matches("\ntrue\ttable: ", r.stdout)
    end)

    it("starts the child with an empty mask, what was ignored before luaguard, and fds 0-2 only", function()
      local d = H.tmpdir()
      local probe = [[grep -E '^Sig(Blk|Ign)' /proc/self/status; ls /proc/self/fd | sort -n | tr '\n' ' ']]
      -- what a child of this test (no luaguard) ignores
      local base = H.run({ "sh", "-c", "grep '^SigIgn' /proc/self/status" }).stdout
      local r = lua([[
        local held <close> = lock.dir(arg[1])
        local h <close> = ExitHandler()
        local extra = io.open(arg[1] .. "/extra", "w")   -- not close-on-exec
        io.write(proc.run({"sh", "-c", arg[2]}, {stdout = "capture"}).stdout)
        extra:close()
      ]], { d, probe })
      assert.are.equal(0, r.status, r.stderr)
      assert.matches("SigBlk:%s*0+\n", r.stdout)
      assert.are.equal(base, r.stdout:match("SigIgn:[^\n]*\n"))
      -- the shell's own fds, and the one ls opens to list them (3)
      assert.matches("\n0 1 2 3 $", r.stdout)
      -- an empty mask even when luaguard itself was started with signals
      -- blocked (grep, not sh: dash clears its mask as it starts)
      r = lua([[io.write(proc.run({"grep", "^SigBlk", "/proc/self/status"}, {stdout = "capture"}).stdout)]], nil,
              { prefix = { "env", "--block-signal=HUP,USR1,TERM" } })
      assert.are.equal(0, r.status, r.stderr)
      assert.matches("^SigBlk:%s*0+\n$", r.stdout)
    end)

    it("keeps a running child's pipes out of what io.popen starts meanwhile", function()
      -- the parent's ends are close-on-exec: a command started beside the
      -- child holding the write end of its stdin would keep it from EOF
      -- (pipes only: memcheck's log files, one per process, come and go)
      local r = lua([[
        local function popen_fds()       -- the pipes a command started now has
          local f, fds = io.popen("ls -l /proc/self/fd"), {}
          for line in f:lines() do
            local fd = line:match(" (%d+) %-> pipe:")
            if fd then fds[fd] = true end
          end
          f:close()
          return fds
        end
        collectgarbage()
        local before = popen_fds()
        local p = proc.spawn({"sh", "-c", "cat >/dev/null; echo eof"},
                             {stdin = ("x"):rep(200000), stdout = "capture", stderr = "capture"})
        local new = {}
        for fd in pairs(popen_fds()) do if not before[fd] then new[#new + 1] = fd end end
        local res = p:wait(5)
        print("new in the popen: " .. table.concat(new, " "), res and res.stdout)
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("new in the popen: \teof\n\n", r.stdout)
    end)

    it("leaves os.execute and io.popen statuses as they were", function()
      local r = lua([[
        proc.run({"true"})
        local p = proc.spawn({"sleep", "0.1"})
        print(os.execute("exit 3"))
        local f = io.popen("exit 5")
        print(f:close())
        print(p:wait().status)
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("nil\texit\t3\nnil\texit\t5\n0\n", r.stdout)
    end)
  end)

  describe("spawn", function()
    it("gives a Process: wait with a timeout, kill, pid, tostring", function()
      local r = lua([[
        local p = proc.spawn({"/bin/sleep", "5"})
        print(tostring(p) == ("Process(%d sleep) <running>"):format(p:pid()))
        print(p:wait(0.05))
        print(p:kill("TERM"))
        local res = p:wait()
        print(res.signal, res.status, tostring(p) == ("Process(%d sleep) <killed SIGTERM>"):format(p:pid()))
        print(p:kill())
        local q = proc.spawn({"sh", "-c", "exit 2"})
        print(q:wait().status, tostring(q):match("<.*>"))
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("true\nnil\ntrue\n15\tnil\ttrue\nfalse\n2\t<exited 2>\n", r.stdout)
    end)

    it("tostring tells how a child ended that nobody waited for", function()
      -- the first tostring after the exit reaps it: the status it shows is
      -- the one just read, not the record from before
      local r = lua([[
        local p = proc.spawn({"sh", "-c", "exit 3"})
        local q = proc.spawn({"sh", "-c", "kill -KILL $$"})
        for _, c in ipairs({p, q}) do   -- until each is a zombie: ended, not reaped
          local function state()
            local f = io.open("/proc/" .. c:pid() .. "/stat")
            return f and f:read("a"):match("%) (%a)")
          end
          while state() ~= "Z" do nap(0.01) end
        end
        print(tostring(p):match("<.*>"), tostring(q):match("<.*>"))
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("<exited 3>\t<killed SIGKILL>\n", r.stdout)
    end)

    it("after <close>, wait still gives the status; what was captured went with the close", function()
      local r = lua([[
        local p = proc.spawn({"sh", "-c", "echo out; echo err >&2; exit 4"}, {stdout = "capture", stderr = "capture"})
        local before = p:wait()
        do local closing <close> = p end
        local after = p:wait()
        print(before.status, before.stdout, before.stderr)
        print(after.status, ("%q %q"):format(after.stdout, after.stderr), tostring(p):match("<.*>"))
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal('4\tout\n\terr\n\n4\t"" ""\t<exited 4>\n', r.stdout)
    end)

    it("names a signal with no abbreviation (a real-time one) by its number", function()
      local r = lua([[
        local p = proc.spawn({"sleep", "5"})
        print(p:kill(40), p:wait().signal, tostring(p):match("<.*>"))
        local ok, err = pcall(proc.run, {"sh", "-c", "kill -40 $$"}, {check = true})
        print(err.kind, err.signal, tostring(err))
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("true\t40\t<killed signal 40>\nProcessError\t40\tsh was killed by signal 40\n", r.stdout)
    end)

    -- SIGCHLD ignored (inherited so across exec): the kernel reaps children
    -- itself, and their status is lost. Neither a made-up 0 nor a hang:
    -- status and signal nil, "<ended>", and check refuses it.
    it("reports a child whose status is lost (SIGCHLD ignored by the parent): <ended>, no status, check fails", function()
      local r = lua([[
        local p = proc.spawn({"sh", "-c", "exit 3"})
        local res = p:wait(10)
        print(res.status, res.signal, res.timed_out, tostring(p):match("<.*>"))
        local ok, err = pcall(proc.run, {"sh", "-c", "exit 0"}, {check = true})
        print(ok, err.kind, err.status, tostring(err))
      ]], nil, { prefix = { "env", "--ignore-signal=CHLD" } })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("nil\tnil\tfalse\t<ended>\nfalse\tProcessError\tnil\tsh ended with an unknown status\n", r.stdout)
    end)

    it("stops and reaps a running child at <close>, SIGKILL after grace for one that ignores SIGTERM", function()
      local d = H.tmpdir()
      local r = lua([[
        local kept
        do
          local p <close> = proc.spawn({"sh", "-c", "trap '' TERM; echo $$ > " .. arg[1] .. "/pid; sleep 30 & echo $! >> " .. arg[1] .. "/pid; wait"}, {grace = 0.2})
          kept = p
          while not exists(arg[1] .. "/pid") do nap(0.01) end
          nap(0.05)
        end
        print("closed", tostring(kept) == ("Process(%d sh) <killed SIGKILL>"):format(kept:pid()),
              kept:kill(), kept:wait().signal)
        -- its pipes go with it: one whose stdin is still being fed, too
        local function fds()
          local n = 0
          for name in require("lfs").dir("/proc/self/fd") do if name:match("^%d+$") then n = n + 1 end end
          return n
        end
        local before = fds()
        do
          local q <close> = proc.spawn({"sleep", "5"}, {stdin = ("x"):rep(1000000), stdout = "capture",
                                                      stderr = "capture"})
          q:wait(0.05)
        end
        print("descriptors left", fds() - before)
      ]], { d })
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("closed\ttrue\tfalse\t9\ndescriptors left\t0\n", r.stdout)
      for pid in H.read(d .. "/pid"):gmatch("%d+") do
        assert.is_false(alive(tonumber(pid)), "process " .. pid .. " left running")
      end
    end)

    it("keeps a child in the caller's group when nothing is armed (module mode), its own once a guard is", function()
      local r = H.run_stock([[
        local proc = g.proc
        local function pgrp(pid) return io.open("/proc/" .. pid .. "/stat"):read("a"):match("^%d+ %b() %S+ %d+ (%d+)") end
        local a = proc.spawn({"sleep", "5"})
        local h <close> = ExitHandler()
        local b = proc.spawn({"sleep", "5"})
        print(pgrp(a:pid()) == pgrp(PID), pgrp(b:pid()) == tostring(b:pid()))
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("true\ttrue\n", r.stdout)
    end)

    it("puts a child in a group of its own, or in ours with terminal = true", function()
      local r = lua([[
        local function pgrp(pid) return io.open("/proc/" .. pid .. "/stat"):read("a"):match("^%d+ %b() %S+ %d+ (%d+)") end
        local a = proc.spawn({"sleep", "5"})
        local b = proc.spawn({"sleep", "5"}, {terminal = true})
        print(pgrp(a:pid()) == tostring(a:pid()), pgrp(b:pid()) == pgrp(PID))
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("true\ttrue\n", r.stdout)
    end)
  end)

  describe("under a guard", function()
    for _, sig in ipairs({ "TERM", "INT", "HUP", "QUIT", "XCPU", "XFSZ" }) do
      it(("forwards SIG%s once to the running child, runs cleanups after it exited, dies by it"):format(sig), function()
        local d = H.tmpdir()
        local job = H.spawn_script(H.prelude .. [[
          local h <close> = ExitHandler(function()
            local f = io.open(arg[1] .. "/log", "a") f:write("cleanup\n") f:close()
          end)
          proc.run({"sh", "-c", arg[3], "trapper", arg[1] .. "/log", arg[1] .. "/ready"})
        ]], { d, "", TRAPPER })
        local child = tonumber(H.wait_for(d .. "/ready"))
        local pid = job:pid()
        H.kill(pid, sig)
        local status = job:wait(20)
        local signum = { TERM = 15, INT = 2, HUP = 1, QUIT = 3, XCPU = 24, XFSZ = 25 }
        assert.are.equal(128 + signum[sig], status, job:stderr())
        assert.are.equal(("got %s\nchild-exit\ncleanup\n"):format(sig), H.read(d .. "/log"))
        assert.is_false(alive(child))
      end)
    end

    it("waits on a running child through a pidfd (the kernel wakes the wait, no naps)", function()
      if (os.getenv("LUAGUARD_VALGRIND") or "") ~= "" then
        pending("valgrind 3.19 does not know pidfd_open: under memcheck the wait naps")
        return
      end
      local r = lua([[
        local p <close> = proc.spawn({"sleep", "5"})
        local lfs = require "lfs"
        local pidfds = 0
        for fd in lfs.dir("/proc/self/fd") do
          local target = fd:match("^%d+$") and lfs.symlinkattributes("/proc/self/fd/" .. fd, "target")
          if target == "anon_inode:[pidfd]" then pidfds = pidfds + 1 end
        end
        print(pidfds)
      ]])
      assert.are.equal(0, r.status, r.stderr)
      assert.are.equal("1\n", r.stdout)
    end)

    it("stops a child even when the signal arrives before proc.run starts waiting", function()
      -- strace holds the host in pidfd_open (just after the spawn) for 0.3 s:
      -- the child's SIGTERM to its parent lands there, before the wait began
      local d = H.tmpdir()
      local script = H.write(d .. "/race.lua", [[
        local h <close> = ExitHandler(function() io.open(arg[1] .. "/log", "a"):write("cleanup\n"):close() end)
        proc.run({ "sh", "-c", "trap 'echo got TERM >> " .. arg[1] .. "/log; exit 0' TERM; kill -TERM $PPID; sleep 30 & wait" })
      ]])
      local started = os.time()
      local r = H.run({ "strace", "-e", "trace=pidfd_open", "-e", "inject=pidfd_open:delay_exit=300000",
                        "-o", "/dev/null", H.host, script, d },
                      { bare = true, env = { ASAN_OPTIONS = os.getenv("ASAN_OPTIONS")
                          and os.getenv("ASAN_OPTIONS") .. ":detect_leaks=0" or false } })
      assert.are.equal(143, r.status, r.stderr)
      assert.are.equal("got TERM\ncleanup\n", H.read(d .. "/log"))
      assert.is_true(os.time() - started < 20, "the child ran to its end (30 s) before the stop")
    end)

    it("passes a terminal's Ctrl-C to the child exactly once, in a group of its own or in ours (terminal)", function()
      for _, terminal in ipairs({ "false", "true" }) do
        local d = H.tmpdir()
        os.execute("mkfifo " .. H.quote(d .. "/keys"))
        local script = H.write(d .. "/ctrlc.lua", [[
          local h <close> = ExitHandler(function() io.open(arg[1] .. "/log", "a"):write("cleanup\n"):close() end)
          proc.run({ arg[4], "-c", arg[2], arg[1] .. "/log", arg[1] .. "/ready" },
                   { terminal = arg[3] == "true" })
        ]])
        -- the child counts every SIGINT it gets for 1.5 s (sigtimedwait: one
        -- each, where a shell's trap would merge two), then exits
        local counter = [[
import os, signal, sys, time
log, ready = sys.argv[1], sys.argv[2]
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
with open(ready + ".tmp", "w") as f: f.write("%d\n" % os.getpid())
os.rename(ready + ".tmp", ready)
end = time.monotonic() + 1.5
while end - time.monotonic() > 0:
    if signal.sigtimedwait({signal.SIGINT}, end - time.monotonic()):
        with open(log, "a") as f: f.write("got INT\n")
with open(log, "a") as f: f.write("child-exit\n")
]]
        -- script(1) gives the host a terminal; a ^C typed into it is the
        -- terminal's SIGINT to its foreground process group
        local job = H.spawn({ "script", "-qec", table.concat({ H.quote(H.host), H.quote(script), H.quote(d),
                                                               H.quote(counter), terminal, H.python }, " "), "/dev/null" },
                            { stdin = d .. "/keys" })
        local keys = assert(io.open(d .. "/keys", "w"))
        H.wait_for(d .. "/ready")
        keys:write("\3")
        keys:flush()
        job:wait(20)
        keys:close()
        assert.are.equal("got INT\nchild-exit\ncleanup\n", H.read(d .. "/log"), "terminal = " .. terminal)
      end
    end)

    it("stops a child a coroutine runs, the coroutine resumed inside the guarded block", function()
      local d = H.tmpdir()
      local job = H.spawn_script(H.prelude .. [[
        local h <close> = ExitHandler(function() io.open(arg[1] .. "/log", "a"):write("cleanup\n"):close() end)
        coroutine.wrap(function()
          proc.run({ "sh", "-c", arg[2], "trapper", arg[1] .. "/log", arg[1] .. "/ready" })
        end)()
      ]], { d, TRAPPER })
      local child = tonumber(H.wait_for(d .. "/ready"))
      H.kill(job:pid(), "TERM")
      assert.are.equal(143, job:wait(20), job:stderr())
      assert.are.equal("got TERM\nchild-exit\ncleanup\n", H.read(d .. "/log"))
      assert.is_false(alive(child))
    end)

    it("keeps the lock held while the stopped block's child still runs", function()
      local d = H.tmpdir()
      local w = H.tmpdir()
      -- the child, once signalled, lingers until the test says "go"
      local job = H.spawn_script(H.prelude .. [[
        local l <close> = lock.dir(arg[1])
        proc.run({"sh", "-c", "trap 'echo > " .. arg[2] .. "/got; n=0; while [ ! -e " .. arg[2] ..
                  "/go ] && [ $n -lt 3000 ]; do sleep 0.02; n=$((n+1)); done; exit 0' TERM; echo > " .. arg[2] ..
                  "/ready; n=0; while [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done"})
      ]], { d, w })
      H.wait_for(w .. "/ready")
      H.kill(job:pid(), "TERM")
      H.wait_for(w .. "/got")
      local probe = lua("local ok, err = pcall(lock.dir, arg[1]) print(ok, err.kind)", { d })
      assert.are.equal("false\tLockError\n", probe.stdout, probe.stderr)
      H.write(w .. "/go", "")
      assert.are.equal(143, job:wait(20))
      local after = lua("local l = lock.dir(arg[1]) print(l:is_locked())", { d })
      assert.are.equal("true\n", after.stdout, after.stderr)
    end)

    it("forwards a stop's signal to no child its own timeout has signalled already", function()
      local d = H.tmpdir()
      local job = H.spawn_script(H.prelude .. [[
        local h <close> = ExitHandler(function() io.open(arg[1] .. "/cleanup", "w"):close() end)
        proc.run({"sh", "-c", "trap 'echo TERM >> " .. arg[1] .. "/terms' TERM; echo $$ > " .. arg[1] ..
                  "/ready; n=0; while [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done"}, {timeout = 0.3, grace = 1.5})
      ]], { d })
      local child = tonumber(H.wait_for(d .. "/ready"))
      H.wait_for(d .. "/terms")       -- the timeout's SIGTERM reached it: its grace runs
      H.kill(job:pid(), "TERM")
      assert.are.equal(143, job:wait(20), job:stderr())
      assert.are.equal("TERM\n", H.read(d .. "/terms"))
      assert.is_true(H.exists(d .. "/cleanup"))
      assert.is_false(alive(child))
    end)

    it("SIGKILLs a child that ignores the signal after grace, its own children too", function()
      local d = H.tmpdir()
      local job = H.spawn_script(H.prelude .. [[
        local h <close> = ExitHandler(function() io.open(arg[1] .. "/cleanup", "w"):close() end)
        proc.run({"sh", "-c", "trap '' TERM; sleep 100 & echo $! > " .. arg[1] .. "/kids; sleep 100 & echo $! >> " ..
                  arg[1] .. "/kids; echo $$ > " .. arg[1] .. "/ready; wait"}, {grace = 0.3})
      ]], { d })
      local child = tonumber(H.wait_for(d .. "/ready"))
      H.kill(job:pid(), "TERM")
      assert.are.equal(143, job:wait(20), job:stderr())
      assert.is_true(H.exists(d .. "/cleanup"))
      assert.is_false(alive(child))
      for pid in H.read(d .. "/kids"):gmatch("%d+") do assert.is_false(alive(tonumber(pid))) end
    end)

    it("waits for a member of the child's group it may not signal (EPERM): the cleanup runs after it", function()
      -- the host runs as nobody; its child starts a set-uid-root helper that
      -- becomes root for good (nobody may not signal it: kill says EPERM),
      -- lingers a second and leaves a file. The child's group runs while the
      -- helper does: the cleanup must come after the file.
      if not H.is_root then
        pending("needs root: a set-uid-root helper, and the host run as nobody")
        return
      end
      local d = H.tmpdir()
      os.execute("chmod 0777 " .. H.quote(d))
      H.write(d .. "/rootly.c", [[
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
  FILE *f;
  if (argc < 2 || setuid(0) != 0) return 2;
  sleep(1);
  if ((f = fopen(argv[1], "w")) == NULL) return 3;
  fputs("done\n", f);
  return fclose(f) == 0 ? 0 : 4;
}
]])
      assert(os.execute(("cc -o %s/rootly %s/rootly.c && chmod 4755 %s/rootly"):format(d, d, d)))
      local r = H.run_script(H.prelude .. [[
        local h <close> = ErrorHandler(function()
          local f = io.open(arg[1] .. "/log", "a")
          f:write("cleanup ", exists(arg[1] .. "/helper-done") and "after" or "before", " the helper\n")
          f:close()
        end)
        local p = proc.spawn({"sh", "-c", arg[1] .. "/rootly " .. arg[1] .. "/helper-done & wait"}, {grace = 5})
        nap(0.3)
        kill("TERM")
        spin()
      ]], { d }, { prefix = H.as_nobody })
      assert.are.equal(143, r.status, r.stderr)
      assert.are.equal("cleanup after the helper\n", H.read(d .. "/log"))
    end)

    it("gives every child of the stopped block the longest grace among theirs", function()
      -- a (grace 0.2) ignores SIGTERM; b (grace 1.5, the newer) takes 0.5 s
      -- to end after it: b must be let finish, a is SIGKILLed at 1.5 s
      local d = H.tmpdir()
      local job = H.spawn_script(H.prelude .. [[
        local h <close> = ExitHandler(function() io.open(arg[1] .. "/log", "a"):write("cleanup\n"):close() end)
        local a = proc.spawn({"sh", "-c", "trap '' TERM; n=0; while [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done"}, {grace = 0.2})
        local b = proc.spawn({"sh", "-c", "trap 'sleep 0.5; echo b-done >> " .. arg[1] .. "/log; exit 0' TERM; " ..
                              "echo $$ > " .. arg[1] .. "/b; n=0; while [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done"}, {grace = 1.5})
        while not exists(arg[1] .. "/b") do nap(0.01) end
        ready(arg[1] .. "/go")
        spin()
      ]], { d })
      H.wait_for(d .. "/go")
      H.kill(job:pid(), "TERM")
      assert.are.equal(143, job:wait(20), job:stderr())
      assert.are.equal("b-done\ncleanup\n", H.read(d .. "/log"))
    end)

    it("lets a child started by a cleanup finish, a second signal meanwhile deferred", function()
      local d = H.tmpdir()
      local job = H.spawn_script(H.prelude .. [[
        local h <close> = ExitHandler(function()
          ready(arg[1] .. "/cleaning")
          local r = proc.run({"sh", "-c", "sleep 0.4; echo finished"}, {stdout = "capture"})
          io.open(arg[1] .. "/log", "w"):write(r.stdout, r.status):close()
        end)
        ready(arg[1] .. "/ready")
        spin()
      ]], { d })
      local pid = tonumber(H.wait_for(d .. "/ready"):match("%d+"))
      H.kill(pid, "TERM")
      H.wait_for(d .. "/cleaning")
      H.kill(pid, "TERM")
      assert.are.equal(143, job:wait(20), job:stderr())
      assert.are.equal("finished\n0", H.read(d .. "/log"))
    end)

    it("stops a child from the host frame too, with no handler armed", function()
      local d = H.tmpdir()
      local job = H.spawn_script(H.prelude .. [[
        proc.run({"sh", "-c", arg[2], "trapper", arg[1] .. "/log", arg[1] .. "/ready"})
      ]], { d, TRAPPER })
      local child = tonumber(H.wait_for(d .. "/ready"))
      H.kill(job:pid(), "TERM")
      assert.are.equal(143, job:wait(20), job:stderr())
      assert.are.equal("got TERM\nchild-exit\n", H.read(d .. "/log"))
      assert.is_false(alive(child))
    end)

    it("leaves alone a child a cleanup started when the stop it deferred goes on to an outer block", function()
      -- the SIGTERM comes during the inner cleanup: deferred, then routed to
      -- the outer block, whose stop stops the state's children, but not the
      -- ones cleanups started (a service a rollback restarts, say)
      local r = lua([[
        local outer <close> = ErrorHandler(function()
          print("outer cleanup: the cleanup's child runs:", CHILD:wait(0) == nil)
          CHILD:kill("KILL")
          CHILD:wait()
        end)
        do
          local inner <close> = ExitHandler(function()
            CHILD = proc.spawn({"sleep", "30"})
            kill("TERM")                 -- deferred: a cleanup runs
          end)
        end                              -- inner closes: the SIGTERM goes on to outer
        spin()
      ]])
      assert.are.equal(128 + 15, r.status, r.stderr)
      assert.are.equal("outer cleanup: the cleanup's child runs:\ttrue\n", r.stdout)
    end)

    it("stops a spawned child left running when the script calls os.exit, newer ones closed meanwhile", function()
      -- three newer children closed in the middle, newest, oldest order: each
      -- leaves the process-wide list whole, so the exit still reaches p
      local d = H.tmpdir()
      local r = lua([[
        local p = proc.spawn({"sh", "-c", arg[2], "trapper", arg[1] .. "/log", arg[1] .. "/ready"})
        local q1, q2, q3 = proc.spawn({"true"}), proc.spawn({"true"}), proc.spawn({"true"})
        for _, q in ipairs({q2, q3, q1}) do local closing <close> = q; q:wait() end
        while not exists(arg[1] .. "/ready") do nap(0.01) end
        os.exit(3)
      ]], { d, TRAPPER })
      assert.are.equal(3, r.status, r.stderr)
      assert.are.equal("got TERM\nchild-exit\n", H.read(d .. "/log"))
      assert.is_false(alive(tonumber(H.read(d .. "/ready"))))
    end)

    it("works in module mode under stock lua5.4 the same way", function()
      local d = H.tmpdir()
      local job = H.spawn_script(H.prelude .. [[
        local g = require "luaguard"
        local h <close> = g.ExitHandler(function()
          local f = io.open(arg[1] .. "/log", "a") f:write("cleanup\n") f:close()
        end)
        g.proc.run({"sh", "-c", arg[2], "trapper", arg[1] .. "/log", arg[1] .. "/ready"})
      ]], { d, TRAPPER }, { interpreter = H.lua, env = H.module_env })
      local child = tonumber(H.wait_for(d .. "/ready"))
      H.kill(job:pid(), "TERM")
      assert.are.equal(143, job:wait(20), job:stderr())
      assert.are.equal("got TERM\nchild-exit\ncleanup\n", H.read(d .. "/log"))
      assert.is_false(alive(child))
    end)
  end)
end)
