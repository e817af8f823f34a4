-- luaguard-lock [-w SECONDS] [-E CODE] [-q] DIR -- COMMAND [ARG...]
--
-- flock(1)'s shape on certbot's lock: DIR/.certbot.lock, an fcntl lock, so a
-- cron job or a deploy hook excludes a running certbot (flock(1) takes a
-- flock(2) lock, which certbot's does not see). Compiled into the host, which
-- runs it when it is called as luaguard-lock; 'arg' is its command line.
local USAGE = [[
usage: luaguard-lock [-w SECONDS] [-E CODE] [-q] DIR [--] COMMAND [ARG...]
Takes certbot's lock on DIR (DIR/.certbot.lock), runs COMMAND (no shell) while
holding it, and releases it once COMMAND has exited.
  -w SECONDS  give up when the lock stays held this long (default: wait;
              0: do not wait at all)
  -E CODE     exit status when the lock stayed held for the whole wait
              (default 1)
  -q          say nothing while waiting
  -h, --help  this text
A handled signal (TERM, INT, HUP, QUIT, XCPU, XFSZ) is forwarded to COMMAND;
the lock is held until COMMAND has exited (SIGKILLed 10 s after the signal if
it has not), then luaguard-lock dies by that signal.
Exit status: COMMAND's (128+N when a signal N killed it); CODE when the lock
stayed held; 64 for a usage error; 71 when the lock could not be taken for
another reason; 126 or 127 when COMMAND cannot be run.
]]

local EX_USAGE, EX_OSERR = 64, 71

local function fail(status, fmt, ...)
  io.stderr:write("luaguard-lock: ", fmt:format(...), "\n")
  os.exit(status, true)
end

local function usage_error(fmt, ...)
  io.stderr:write("luaguard-lock: ", fmt:format(...), "\n",
                  "Try 'luaguard-lock --help' for more information.\n")
  os.exit(EX_USAGE, true)
end

local wait, held_code, quiet = math.huge, 1, false
local i = 1
while arg[i] ~= nil and arg[i]:sub(1, 1) == "-" and arg[i] ~= "--" do
  local opt = arg[i]
  if opt == "-h" or opt == "--help" then
    io.stdout:write(USAGE)
    os.exit(0, true)
  elseif opt == "-q" then
    quiet = true
  elseif opt == "-w" or opt == "-E" then
    local value = arg[i + 1]
    if value == nil then usage_error("option %s needs a value", opt) end
    local n = tonumber(value)
    if opt == "-w" then
      if n == nil or n ~= n or n < 0 then usage_error("-w: not a number of seconds: %s", value) end
      wait = n
    else
      if math.type(n) ~= "integer" or n < 0 or n > 255 then
        usage_error("-E: not an exit status (0-255): %s", value)
      end
      held_code = n
    end
    i = i + 1
  else
    usage_error("unknown option %s", opt)
  end
  i = i + 1
end
local dir = arg[i]
if dir == nil then usage_error("no directory given") end
i = i + 1
if arg[i] == "--" then i = i + 1 end
if arg[i] == nil then usage_error("no command given") end
local argv = table.move(arg, i, #arg, 1, {})

-- Whether fd is a terminal (test(1), not a shell; fd inherited as it is).
local function isatty(fd)
  return proc.run({ "test", "-t", tostring(fd) }, { stdout = fd == 1 and "inherit" or "null" }).status == 0
end

local ok, held = pcall(lock.dir, dir, {
  timeout = wait,
  waiting = not quiet and function(info)
    if isatty(2) then
      io.stderr:write(("luaguard-lock: waiting for %s (%s)\n"):format(
        info.path, info.pid and ("held by pid " .. info.pid) or "held by another process"))
    end
  end or nil,
})
if not ok then
  local kind = type(held) == "table" and held.kind
  if kind == "LockError" then
    if not quiet then io.stderr:write("luaguard-lock: ", tostring(held), "\n") end
    os.exit(held_code, true)
  end
  if kind == "OSError" then fail(EX_OSERR, "%s", tostring(held)) end
  error(held, 0)   -- a SignalExit goes on: the process dies by it
end
local lk <close> = held

-- A command at a terminal keeps it (our process group, the foreground): it
-- gets the terminal's Ctrl-C itself, and may read from it.
local started, result = pcall(proc.run, argv, { terminal = isatty(0) })
lk:release()
if not started then
  if type(result) == "table" and result.kind == "OSError" then
    fail(result.errno == 2 and 127 or 126, "%s", tostring(result))
  end
  error(result, 0)
end
if result.signal then os.exit(128 + result.signal, true) end
os.exit(result.status or EX_OSERR, true)
