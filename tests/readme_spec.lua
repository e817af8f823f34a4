-- Every code block of README.md marked runnable (an HTML comment
-- "<!-- runnable -->" on the line before it) runs and succeeds: Lua blocks
-- through the host in a scratch directory, sh blocks with bash from the root.
local H = require "tests.helpers"

local function runnable_blocks()
  local text = assert(H.read(H.root .. "/README.md"))
  local blocks = {}
  for marker_line, lang, body in text:gmatch("()<!%-%- runnable %-%->\n```(%w+)\n(.-)\n```") do
    local line = select(2, text:sub(1, marker_line):gsub("\n", "")) + 1
    blocks[#blocks + 1] = { lang = lang, body = body, line = line }
  end
  return blocks
end

describe("README.md", function()
  teardown(H.cleanup_tmp)
  local blocks = runnable_blocks()

  it("has runnable blocks (a Lua one and the first command)", function()
    local langs = {}
    for _, b in ipairs(blocks) do langs[b.lang] = true end
    assert.is_true(langs.lua and langs.sh)
  end)

  for _, block in ipairs(blocks) do
    it(("runs its %s block at line %d"):format(block.lang, block.line), function()
      local r
      if block.lang == "lua" then
        r = H.run_script(block.body, {}, { dir = H.tmpdir(), env = { TMPDIR = H.tmpdir() } })
      elseif block.lang == "sh" then
        -- (a block may build: scripts/build can take minutes from scratch)
        r = H.run({ "bash", "-euo", "pipefail", "-c", block.body },
                  { dir = H.root, env = { TMPDIR = H.tmpdir() }, limit = 600 })
      else
        error("no runner for " .. block.lang)
      end
      assert.are.equal(0, r.status, block.body .. "\n--- stderr:\n" .. (r.stderr or ""))
    end)
  end
end)
