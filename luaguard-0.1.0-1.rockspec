-- luarocks make (from a clone) builds luaguard.core from the C sources and
-- installs the facade; then require "luaguard" from any Lua 5.4.
-- The version is LUAGUARD_VERSION in src/include/luaguard.h; this file's name
-- and 'version' follow it (tests/packaging_spec.lua checks they agree).
rockspec_format = "3.0"
package = "luaguard"
version = "0.1.0-1"
source = {
  url = "git+https://example.invalid/luaguard.git",   -- built from a clone: luarocks make
}
description = {
  summary = "Directory locks and cleanup guards for Lua 5.4, certbot-compatible",
  detailed = [[
lock.dir() takes the same lock certbot takes on a directory; ErrorHandler and
ExitHandler run cleanup functions last-registered-first on error or on a
termination signal, with signals deferred while cleanups run.]],
  license = "Apache-2.0",
}
supported_platforms = { "linux" }
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "builtin",
  modules = {
    ["luaguard"] = "lua/luaguard/init.lua",
    ["luaguard.core"] = {
      sources = {
        "src/core/lg_pid.c", "src/core/lg_signal.c", "src/core/lg_lock.c", "src/core/lg_child.c",
        "src/lua/lg_common.c", "src/lua/lg_guard.c", "src/lua/lg_handler.c",
        "src/lua/lg_lockfile.c", "src/lua/lg_process.c", "src/lua/lg_module.c",
      },
      incdirs = { "src/include", "src/core", "src/lua" },
      defines = { "_POSIX_C_SOURCE=200809L" },
      libraries = { "pthread" },
    },
    -- lock.lease, loaded on first use (libcurl and cJSON: Debian's
    -- libcurl4-openssl-dev and libcjson-dev)
    ["luaguard.lease"] = {
      sources = { "src/core/lg_etcd.c", "src/lua/lg_lease.c", "src/lua/lg_common.c" },
      incdirs = { "src/include", "src/core", "src/lua" },
      defines = { "_POSIX_C_SOURCE=200809L" },
      libraries = { "curl", "cjson", "pthread" },
    },
  },
}
