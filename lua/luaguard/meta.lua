---@meta luaguard
-- LuaLS / EmmyLua annotations for luaguard: editors complete and type-check
-- the API with them. Never loaded at run time (the module is init.lua over the
-- C core). Point the language server at this directory (workspace.library),
-- or at share/luaguard/types after scripts/install.

if ... ~= nil then   -- required by mistake: it would only set globals
  error("luaguard.meta holds editor annotations only: require \"luaguard\"", 2)
end

---@class luaguard.LockOptions
---@field timeout? number Seconds to wait for a lock held elsewhere: 0 (default) fails at once, math.huge waits forever. Waiting is cut short by a handled signal.
---@field waiting? fun(info: luaguard.WaitInfo) Called once when a wait passes 1 s; an error it raises ends the wait and propagates.

---What `opts.waiting` is told.
---@class luaguard.WaitInfo
---@field path string The lock file.
---@field pid? integer The holder's process id, when it can be known.
---@field waited number Seconds waited so far.

---A held or released lock file (certbot's lock). Release order: the file is
---removed, then unlocked. `tostring` gives `LockFile(<path>) <acquired>` or
---`LockFile(<path>) <released>`.
---@class luaguard.LockFile
---@operator close: nil
local LockFile = {}

---Take the lock again; does nothing when held.
---@param opts? luaguard.LockOptions
---@return nil
---@throws luaguard.LockError|luaguard.OSError|luaguard.SignalExit
function LockFile:acquire(opts) end

---Remove the lock file, then unlock it; does nothing when released.
---@return nil
function LockFile:release() end

---@return boolean
function LockFile:is_locked() end

---A cleanup guard, armed from creation until closed (`<close>`, `close`, `run`).
---@class luaguard.Handler
---@operator close: nil
local Handler = {}

---Add the cleanup `fn(...)`, arguments bound now. Cleanups run last registered
---first, each at most once.
---@param fn function|table A function, or a value with `__call`.
---@param ... any
---@return luaguard.Handler self
function Handler:register(fn, ...) end

---Close the handler. With `err` (not nil) every cleanup runs; without, an
---ErrorHandler discards them and an ExitHandler runs them.
---@param err? any
function Handler:close(err) end

---Call `body(...)`, then close the handler: returns the body's results, or
---re-raises its error (unchanged) after the cleanups.
---@generic R
---@param body fun(...): R
---@param ... any
---@return R ...
function Handler:run(body, ...) end

---A new list of the signal numbers this handler received, in arrival order.
---@return integer[]
function Handler:received() end

---@class luaguard.ErrorHandler: luaguard.Handler
---@class luaguard.ExitHandler: luaguard.Handler

---Errors are tables with a `kind`; `tostring` gives the message.
---@class luaguard.Error
---@field kind "LockError"|"OSError"|"SignalExit"|"ProcessError"|"EtcdError"|"LeaseLost"
---@field message string

---The lock is held elsewhere (another process, or another LockFile).
---@class luaguard.LockError: luaguard.Error
---@field kind "LockError"
---@field path? string The lock file (a LockFile's).
---@field pid? integer The holder's process id, when it can be known.
---@field name? string The lease lock's name (a LeaseLock's).
---@field holder? string The holding key (a LeaseLock's).
---@field lease? string The holder's lease ID, a string (a LeaseLock's).
---@field waited number Seconds spent waiting.

---Any other failure: missing directory, permission, a symlink or FIFO at the
---lock path, a NUL byte, a path too long ...
---@class luaguard.OSError: luaguard.Error
---@field kind "OSError"
---@field errno integer
---@field path string

---Raised in a guarded block by a handled signal (SIGTERM, SIGINT, SIGHUP,
---SIGQUIT, SIGXCPU, SIGXFSZ); `tostring` gives e.g. `SignalExit: SIGTERM`.
---@class luaguard.SignalExit: luaguard.Error
---@field kind "SignalExit"
---@field signal integer
---@field name string

---A command ended badly under `opts.check`: a non-zero status or a signal.
---@class luaguard.ProcessError: luaguard.Error
---@field kind "ProcessError"
---@field argv string[]
---@field status? integer The exit status, when it exited.
---@field signal? integer The signal that killed it.
---@field stderr? string The last 4 KiB of its stderr, when captured.

---@class luaguard.ProcOptions
---@field cwd? string The directory to run in.
---@field env? table<string, string> Replaces the environment.
---@field env_add? table<string, string> Added to the environment (after `env`).
---@field stdin? string A string to feed, `"null"`, or `"inherit"` (default).
---@field stdout? "inherit"|"capture"|"null"
---@field stderr? "inherit"|"capture"|"null"|"stdout" `"stdout"` merges it into stdout.
---@field timeout? number proc.run only: seconds, then SIGTERM to its group, `grace`, SIGKILL.
---@field grace? number Seconds between a stop's signal and SIGKILL (default 10).
---@field check? boolean Raise a ProcessError for a non-zero status or a death by signal.
---@field terminal? boolean Run in luaguard's process group (an interactive command).

---What a finished command gives.
---@class luaguard.ProcResult
---@field status? integer The exit status, when it exited.
---@field signal? integer The signal that killed it.
---@field stdout? string Captured stdout.
---@field stderr? string Captured stderr.
---@field timed_out boolean
---@field pid integer

---A started command. `tostring` gives `Process(<pid> <name>) <running>`,
---`<exited N>` or `<killed SIGNAME>`; `<close>` and collection stop (SIGTERM to
---its group, `grace`, SIGKILL) and reap it if it still runs.
---@class luaguard.Process
---@operator close: nil
local Process = {}

---Wait for it to end (feeding stdin, reading captured output): its result, or
---nil when `timeout` seconds passed first. A handled signal stops it (and raises).
---@param timeout? number
---@return luaguard.ProcResult?
function Process:wait(timeout) end

---Send `sig` (a number or a name, "TERM" by default) to its process group.
---@param sig? integer|string
---@return boolean sent false when it had already exited
function Process:kill(sig) end

---@return integer
function Process:pid() end

---@class luaguard.proc
local proc = {}

---Run argv (a table of strings, no shell; PATH searched) to its end. When a
---handled signal stops the guarded block, the child gets it once, `grace`,
---then SIGKILL, before any cleanup runs.
---@param argv string[]
---@param opts? luaguard.ProcOptions
---@return luaguard.ProcResult
---@throws luaguard.OSError|luaguard.ProcessError|luaguard.SignalExit
function proc.run(argv, opts) end

---Start argv (a table of strings, no shell) and return at once.
---@param argv string[]
---@param opts? luaguard.ProcOptions
---@return luaguard.Process
---@throws luaguard.OSError
function proc.spawn(argv, opts) end

---@class luaguard.LeaseOptions
---@field endpoints? string[] etcd URLs, tried in turn (default LUAGUARD_ETCD_ENDPOINTS, comma-separated, else http://127.0.0.1:2379).
---@field ttl? integer The lease's life in seconds (default 15, at least 2), renewed every ttl/3.
---@field timeout? number Seconds to wait: 0 (default) fails at once, math.huge waits forever; a handled signal cuts it short.
---@field prefix? string Key prefix (default "luaguard/lock/"): etcdctl lock <prefix><name> excludes it.
---@field cacert? string CA file (PEM) for https endpoints.
---@field cert? string Client certificate (PEM).
---@field key? string Client key (PEM).
---@field user? string etcd auth user.
---@field password? string etcd auth password.

---A lock on etcd held by a lease (lock.lease). `tostring` gives
---`LeaseLock(<name>) <acquired N>` or `LeaseLock(<name>) <released>`.
---@class luaguard.LeaseLock
---@operator close: nil
local LeaseLock = {}

---Take the lock again if released (a lost one anew); nothing when held.
---@param opts? {timeout?: number}
function LeaseLock:acquire(opts) end

---Revoke the lease (its key goes with it). Never raises LeaseLost.
function LeaseLock:release() end

---Held, and the lease known alive.
---@return boolean
function LeaseLock:is_locked() end

---true while the lease is known alive (false when released).
---@return boolean
---@throws luaguard.LeaseLost
function LeaseLock:check() end

---The fencing token: the lock key's create revision, larger for every new holder.
---@return integer?
---@throws luaguard.LeaseLost
function LeaseLock:token() end

---The lock key (`<prefix><name>/<lease hex>`).
---@return string?
---@throws luaguard.LeaseLost
function LeaseLock:key() end

---The HTTP requests this lock has made (tests, benchmarks).
---@return integer
function LeaseLock:requests() end

---@class luaguard.EtcdError: luaguard.Error
---@field kind "EtcdError"
---@field endpoint string The endpoint tried last.
---@field code integer etcd's code, else the HTTP status, else curl's error.

---The lease of a held LeaseLock went: raised in a guarded block as a signal
---would stop it (unswallowable there; children stopped, cleanups LIFO).
---@class luaguard.LeaseLost: luaguard.Error
---@field kind "LeaseLost"
---@field name string
---@field key string
---@field token integer

---@class luaguard.lock
local lock = {}

---A held LeaseLock on etcd (lock.LeaseLock is the same), loaded on first use.
---@param name string
---@param opts? luaguard.LeaseOptions
---@return luaguard.LeaseLock
---@throws luaguard.LockError|luaguard.EtcdError|luaguard.SignalExit
function lock.lease(name, opts) end

---@param name string
---@param opts? luaguard.LeaseOptions
---@return luaguard.LeaseLock
function lock.LeaseLock(name, opts) end

---A held LockFile on `dir/.certbot.lock`: the file certbot itself locks.
---@param dir string
---@param opts? luaguard.LockOptions
---@return luaguard.LockFile
function lock.dir(dir, opts) end

---A held LockFile on `path`.
---@param path string
---@param opts? luaguard.LockOptions
---@return luaguard.LockFile
function lock.LockFile(path, opts) end

---@class luaguard
---@field _VERSION string "luaguard X.Y.Z"
---@field lock luaguard.lock
---@field proc luaguard.proc
local luaguard = {}

---An armed handler whose cleanups run when it is closed by an error or signal.
---@param fn? function|table The first cleanup.
---@param ... any Its arguments.
---@return luaguard.ErrorHandler
function luaguard.ErrorHandler(fn, ...) end

---An armed handler whose cleanups run on every close.
---@param fn? function|table The first cleanup.
---@param ... any Its arguments.
---@return luaguard.ExitHandler
function luaguard.ExitHandler(fn, ...) end

-- The host (the luaguard program) also has these as globals.
lock = luaguard.lock
ErrorHandler = luaguard.ErrorHandler
ExitHandler = luaguard.ExitHandler
proc = luaguard.proc

return luaguard
