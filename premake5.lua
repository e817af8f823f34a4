-- premake5.lua — one build description for Debian's premake4 (4.3) and premake5.
--   premake5 gmake                          (premake5, when installed)
--   premake4 --file=premake5.lua gmake      (what Debian ships)
-- scripts/build picks the one that exists; output goes to build/.

-- premake4 lacks workspace/filter; premake5 dropped configuration and the old
-- flags. Everything shared is spelled the way both accept, compiler flags live
-- in buildoptions, and these few lines map the premake5 words onto premake4.
if workspace == nil then
  workspace = solution
  filter = function(spec)
    local cfg = type(spec) == "string" and spec:match("^configurations:(.+)$")
    configuration(cfg and { cfg } or {})
  end
end

local BUILD = "build"

-- scripts/build --windows: the Windows lock core and its test, cross-built
-- with mingw-w64 (make CC=x86_64-w64-mingw32-gcc) into build/windows. Lua and
-- the host are not built for Windows; only the lock core is.
newoption { trigger = "windows", description = "the Windows lock core and its test (mingw-w64)" }
if _OPTIONS["windows"] then
  if workspace == nil then workspace = solution end
  workspace "luaguard_windows"
    configurations { "release" }
    location (BUILD .. "/windows")
    language "C"
    includedirs { "src/core", "tests/c" }
    buildoptions { "-std=c99 -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes "
                .. "-Wstrict-prototypes -Wdeclaration-after-statement -O2 -g" }
    objdir (BUILD .. "/windows/obj")
  project "test_lock_win32"
    kind "ConsoleApp"
    targetdir (BUILD .. "/windows/bin")
    targetname "test_lock_win32.exe"
    files { "tests/c/test_lock_win32.c", "src/core/lg_lock_win32.c" }
    linkoptions { "-static" }
  return
end

-- The Lua layer (lua/luaguard/init.lua) is compiled into the library as a byte
-- array, so the host and any C program get the whole module with no file on
-- disk. premake scripts are Lua, so the generator is a few lines right here.
local function embed(src, dst, symbol)
  local input = assert(io.open(src, "rb"))
  local data = input:read("*a")
  input:close()
  local out = { "/* generated from " .. src .. " by premake5.lua: do not edit */\n",
                "#include <stddef.h>\n",
                "const unsigned char " .. symbol .. "[] = {\n" }
  local row = {}
  for i = 1, #data do
    row[#row + 1] = tostring(data:byte(i))
    if #row == 24 or i == #data then
      out[#out + 1] = "  " .. table.concat(row, ",") .. ",\n"
      row = {}
    end
  end
  out[#out + 1] = "};\nconst size_t " .. symbol .. "_size = " .. #data .. ";\n"
  local text = table.concat(out)
  local old = io.open(dst, "rb")
  if old then
    local same = old:read("*a") == text
    old:close()
    if same then return end        -- keep the mtime: make rebuilds nothing
  end
  os.mkdir(path.getdirectory(dst))
  local output = assert(io.open(dst, "wb"))
  output:write(text)
  output:close()
end
embed("lua/luaguard/init.lua", BUILD .. "/gen/lg_embedded.c", "lg_embedded_init_lua")
embed("lua/luaguard/lock_command.lua", BUILD .. "/gen/lg_embedded_lock.c", "lg_embedded_lock_command")

local LUA_INCLUDE = "/usr/include/lua5.4"
local WARNINGS = "-std=c99 -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes "
              .. "-Wstrict-prototypes -Wdeclaration-after-statement -fPIC -fvisibility=hidden"

workspace "luaguard"
  configurations { "release", "debug", "sanitize", "fuzz" }
  location (BUILD)
  language "C"
  includedirs { "src/include", "src/core", "src/lua", "tests/c", LUA_INCLUDE }
  defines { "_POSIX_C_SOURCE=200809L", "LUA_USE_LINUX" }
  buildoptions { WARNINGS }
  objdir (BUILD .. "/obj")
  -- debug info in every configuration (premake4 strips with -s without it),
  -- so valgrind, gdb and perf name functions in release builds too
  if symbols then symbols "On" else flags { "Symbols" } end

  filter "configurations:release"
    buildoptions { "-O2", "-g" }
  filter "configurations:debug"
    buildoptions { "-O0", "-g3" }
    defines { "LG_DEBUG_BUILD" }
  filter "configurations:sanitize"
    buildoptions { "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                   "-fno-sanitize-recover=all" }
    linkoptions { "-fsanitize=address,undefined" }
  -- clang only (scripts/build --fuzz runs make with CC=clang): libFuzzer's
  -- coverage everywhere, its main() in the fuzz targets below.
  filter "configurations:fuzz"
    buildoptions { "-O1", "-g", "-fsanitize=fuzzer-no-link,address,undefined",
                   "-fno-omit-frame-pointer", "-fno-sanitize-recover=all" }
    linkoptions { "-fsanitize=address,undefined" }
  filter {}

local CORE = { "src/core/lg_pid.c", "src/core/lg_signal.c", "src/core/lg_lock.c", "src/core/lg_child.c" }
local BINDING = { "src/lua/lg_common.c", "src/lua/lg_guard.c", "src/lua/lg_handler.c",
                  "src/lua/lg_lockfile.c", "src/lua/lg_process.c", "src/lua/lg_module.c" }
local EMBED = { "src/lua/lg_embed.c", BUILD .. "/gen/lg_embedded.c" }

local function all(...)
  local t = {}
  for _, list in ipairs({ ... }) do
    for _, f in ipairs(list) do t[#t + 1] = f end
  end
  return t
end

-- libluaguard.a: what the host links, and what C programs may link statically.
-- Its own directory, so -lluaguard in the host cannot pick the .so.
project "luaguard_static"
  kind "StaticLib"
  targetdir (BUILD .. "/lib/static")
  targetname "luaguard"
  files (all(CORE, BINDING, EMBED))

-- The two shared objects below are made of libluaguard.a's objects, whole (it
-- is compiled -fPIC with the same flags): the sources compile once per build,
-- not three times. The path is make's, which runs in build/.
local WHOLE_STATIC = "-Wl,--whole-archive lib/static/libluaguard.a -Wl,--no-whole-archive"

-- libluaguard.so: the C library (pkg-config luaguard).
project "luaguard_shared"
  kind "SharedLib"
  targetdir (BUILD .. "/lib")
  targetname "luaguard"
  linkoptions { WHOLE_STATIC }
  links { "luaguard_static", "lua5.4" }

-- luaguard/core.so: the C module stock lua5.4 loads under lua/luaguard/init.lua.
-- Not linked against liblua: the interpreter that loads it provides Lua.
project "luaguard_core_module"
  kind "SharedLib"
  targetdir (BUILD .. "/lib/lua/luaguard")
  targetname "core"
  targetprefix ""
  linkoptions { WHOLE_STATIC }
  links { "luaguard_static" }

-- luaguard/lease.so: lock.lease on etcd, loaded on first use (lg_embed.c finds
-- it next to the host or the library; stock lua5.4 on LUA_CPATH), so the host's
-- start-up and lock.dir users never load libcurl. Like core.so, it takes Lua
-- from whoever loads it; the guard it reaches through the core's registry table.
project "luaguard_lease_module"
  kind "SharedLib"
  targetdir (BUILD .. "/lib/lua/luaguard")
  targetname "lease"
  targetprefix ""
  files { "src/core/lg_etcd.c", "src/lua/lg_lease.c", "src/lua/lg_common.c" }
  links { "curl", "cjson", "pthread" }
  -- never unloaded (lua_close dlcloses C modules): libcurl and OpenSSL, loaded
  -- with it, keep thread-locals and exit handlers of their own, and unloading
  -- them under a running process left dynamic TLS that LeakSanitizer's exit
  -- scan crashed on ("Tracer caught signal 11", module mode under ASan)
  linkoptions { "-Wl,-z,nodelete" }

-- The host: lua.c's twin. Exports its symbols (-Wl,-E) like lua5.4 does, so
-- Debian's C modules (lfs.so) resolve Lua's API when they load.
project "luaguard"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  -- luaguard-lock (build/bin/luaguard-lock, a link made by scripts/build) is
  -- this program too: its script is compiled in
  files { "src/host/luaguard.c", BUILD .. "/gen/lg_embedded_lock.c" }
  links { "luaguard_static", "lua5.4", "readline", "m", "dl" }
  linkoptions { "-Wl,-E" }

-- C tests of the pure C core: no Lua anywhere.
project "test_signal_core"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/c/test_signal_core.c" }
  links { "luaguard_static", "pthread" }   -- only the core's objects are pulled in
  linkoptions { "-Wl,--wrap=timer_settime" }   -- the test slows the kick's re-arm

project "test_lock_core"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/c/test_lock_core.c" }
  links { "luaguard_static", "pthread" }
  -- the test makes races' windows happen (a file appearing, one vanishing),
  -- and timer_create and fcntl fail
  linkoptions { "-Wl,--wrap=fstatat", "-Wl,--wrap=timer_create", "-Wl,--wrap=fcntl",
                "-Wl,--wrap=openat" }

-- The etcd client's reply buffer, its source compiled into the test.
project "test_etcd_body"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/c/test_etcd_body.c" }
  links { "curl", "cjson", "pthread", "m" }

-- A C program embedding Lua and luaguard through the public header.
project "test_embed"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/c/test_embed.c" }
  links { "luaguard_static", "lua5.4", "m", "dl", "pthread" }

-- examples/embed_host.c: a C program embedding Lua and luaguard (also built
-- by the one-line pkg-config command in its header comment).
project "embed_host"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "examples/embed_host.c" }
  links { "luaguard_static", "lua5.4", "m", "dl" }

-- A helper for process tests: holds and probes locks with plain fcntl, the way
-- a "naive" or foreign participant would (tests/lock_spec.lua).
project "lock_probe"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/c/lock_probe.c" }

-- Benchmarks (tests/bench/): built here, run by scripts/bench.
project "bench_handoff"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/bench/handoff.c" }
  links { "luaguard_static", "pthread" }

project "bench_alternate"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/bench/alternate.c" }

project "bench_lock_floor"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/bench/lock_floor.c" }

project "bench_spawn_floor"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/bench/spawn_floor.c" }

project "bench_lease_handoff"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/bench/lease_handoff.c", "src/core/lg_etcd.c" }
  links { "curl", "cjson", "pthread" }

project "bench_lease_floor"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/bench/lease_floor.c" }
  links { "curl" }

project "bench_signal_latency"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/bench/signal_latency.c" }

-- Soaks (tests/soak/): drivers that run real processes many times; scripts/test
-- runs short versions, scripts/test --soak the long ones.
project "soak_signals"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/soak/soak_signals.c" }

project "soak_contention"
  kind "ConsoleApp"
  targetdir (BUILD .. "/bin")
  files { "tests/soak/soak_contention.c" }

-- Fuzz targets (tests/fuzz/). In the fuzz configuration they are libFuzzer
-- programs; in every other one, fuzz_replay.c gives them a main() that replays
-- the corpus in tests/fuzz/corpus/, so the corpus is a regression test.
local function fuzz_target(name, sources, libs)
  project (name)
    kind "ConsoleApp"
    targetdir (BUILD .. "/bin")
    includedirs { "tests/fuzz" }
    files (all({ "tests/fuzz/" .. name .. ".c", "tests/fuzz/fuzz_replay.c" }, sources))
    if libs then links (libs) end
    filter "configurations:fuzz"
      defines { "LG_LIBFUZZER" }
      linkoptions { "-fsanitize=fuzzer" }
    filter {}
end
fuzz_target("fuzz_lock_path", {}, { "luaguard_static", "pthread" })
fuzz_target("fuzz_lua_api", {}, { "luaguard_static", "lua5.4", "m", "dl" })
