-- Progress bars: drawn on stderr when it is a terminal, and nothing
-- otherwise. The bytes are checked under a pseudo-terminal made by
-- script(1); what a person sees is checked in a real terminal emulator
-- (tmux, read back with capture-pane) at two widths and across a resize.
local describe, it, pending, assert, after_each = describe, it, pending, assert, after_each
local _ENV = _G
local helpers = require "helpers"

local SCRIPT = [[
  local lmp = require "lmp"
  local pool <close> = lmp.Pool{processes = 2, progress = %s}
  local items = {}
  for i = 1, 30 do items[i] = i end
  local slow = function(x) local t = os.clock() while os.clock() - t < 0.01 do end return x end
  pool:map(slow, items, {chunksize = 1, progress = %s})
  for _ in pool:imap_unordered(slow, items, {chunksize = 2}) do end
  pool:starmap(function(a) return a end, {{1}, {2}, {3}})
  io.stdout:write("finished\n")
]]

local write_script = helpers.write_script

local function under_terminal(code)
  local path = write_script(code)
  -- script(1) gives the runner a pseudo-terminal for stdin, stdout, stderr.
  -- LANG=C: the plain ASCII bar.
  local status, out = helpers.run(("LANG=C LC_ALL= script -qec '%s %s' /dev/null")
    :format(helpers.runner, path))
  os.remove(path)
  return status, out
end

-- Runs `code` in a tmux terminal of `width` x `height` (LANG=C.UTF-8), calls
-- during(session) while it runs if given, and returns the screen's lines
-- once the script has ended.
local function on_screen(code, width, height, during)
  local path = write_script(code)
  local done = os.tmpname()
  local socket = "lmp-test-" .. require("lmp.core").getpid()
  local tmux = "tmux -L " .. socket .. " "
  local status = helpers.run(("%s new-session -d -s bar -x %d -y %d "
    .. "'LANG=C.UTF-8 LC_ALL= %s %s; echo $? > %s; sleep 60'")
    :format(tmux, width, height, helpers.runner, path, done))
  assert.equal(0, status)
  if during then during(tmux) end
  local deadline = os.time() + 30
  while (helpers.read_file(done) or "") == "" and os.time() < deadline do
    os.execute("sleep 0.1")
  end
  -- tmux may not yet have read the last bytes the script wrote before it
  -- ended: the screen is read until two reads a moment apart agree.
  local _, screen = helpers.run(tmux .. "capture-pane -p -t bar")
  for _ = 1, 50 do
    os.execute("sleep 0.1")
    local _, again = helpers.run(tmux .. "capture-pane -p -t bar")
    if again == screen then break end
    screen = again
  end
  helpers.run(tmux .. "kill-server")
  local exit_status = tonumber(helpers.read_file(done))
  os.remove(path)
  os.remove(done)
  assert.equal(0, exit_status)
  local lines = {}
  for line in (screen .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  return lines
end

local PRINTING = [[
  local lmp = require "lmp"
  local pool <close> = lmp.Pool{processes = 2}
  print("before the map")
  local items = {}
  for i = 1, 40 do items[i] = i end
  pool:map(function(x)
    local t = os.clock() while os.clock() - t < 0.03 do end
    if x % 10 == 0 then print("worker says " .. x) end
    return x
  end, items, {chunksize = 1, progress = true})
  print("after the map")
]]

local function utf8_length(s) return utf8.len(s) or #s end

describe("progress bars", function()
  after_each(function() assert.is_true(helpers.no_children()) end)

  it("map(..., {progress = true}) draws 0/N at once, then done/total, rate, elapsed and eta", function()
    local status, out = under_terminal(SCRIPT:format("false", "true"))
    assert.equal(0, status)
    -- The first state is drawn before any item is done.
    assert.matches("map:   0%%|[ #]*| 0/30 %[00:00<%?, %?it/s%]", out)
    assert.matches("map: +%d+%%|[# ]+| %d+/30 %[00:%d%d<00:%d%d, [%d.]+it/s%]", out)
    assert.matches("\rmap: 100%%|#+| 30/30 %[00:%d%d<00:00, [%d.]+it/s%]\27%[K\r?\n", out)
    -- only the map asked for one: the imap_unordered and starmap draw nothing
    assert.not_matches("imap_unordered", out)
    assert.not_matches("starmap", out)
    assert.matches("finished", out)
  end)

  it("Pool{progress = true} draws one for every map and imap", function()
    local status, out = under_terminal(SCRIPT:format("true", "nil"))
    assert.equal(0, status)
    assert.matches("\rmap: 100%%|#+| 30/30", out)
    assert.matches("\rimap_unordered: 100%%|#+| 30/30", out)
    assert.matches("\rstarmap: 100%%|#+| 3/3", out)
  end)

  it("shows seconds per item for slow tasks", function()
    local status, out = under_terminal([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(1)
      pool:map(function() local t = os.clock() while os.clock() - t < 1.2 do end end,
               {1, 2}, {chunksize = 1, progress = true})
    ]])
    assert.equal(0, status)
    assert.matches("| 1/2 %[00:%d%d<00:%d%d, %d+%.%d%ds/it%]", out)
  end)

  it("as_completed(futures, {progress = true}) counts the futures as they come", function()
    local status, out = under_terminal([[
      local lmp = require "lmp"
      local ex <close> = lmp.ProcessPoolExecutor{max_workers = 2}
      local futures = {}
      for i = 1, 6 do futures[i] = ex:submit(function(x) return x end, i) end
      local n = 0
      for f in lmp.as_completed(futures, {progress = true, timeout = 60}) do n = n + f:result() end
      io.stdout:write("sum ", n, "\n")
    ]])
    assert.equal(0, status)
    assert.matches("as_completed:   0%%|[ #]*| 0/6 ", out)
    assert.matches("\ras_completed: 100%%|#+| 6/6 %[", out)
    assert.matches("sum 21", out)
  end)

  it("draws nothing when stderr is not a terminal", function()
    local status, out, err = helpers.run_lua(SCRIPT:format("true", "true"), helpers.runner)
    assert.equal(0, status)
    assert.equal("finished\n", out)
    assert.equal("", err)
  end)

  for _, width in ipairs{50, 100} do
    it(("fits a %d-column terminal, with everything printed above it"):format(width), function()
      local lines = on_screen(PRINTING, width, 15)
      local text = table.concat(lines, "\n")
      -- What the script and its workers printed, in order, then the final
      -- bar as a line of its own that stayed, then what came after it.
      assert.matches("^before the map\nworker says 10\nworker says 20\nworker says 30\n"
        .. "worker says 40\nmap: 100%%|[^|]+| 40/40 %[[%d:]+<00:00, [%d.]+it/s%]\nafter the map\n", text)
      for _, line in ipairs(lines) do
        assert(utf8_length(line) < width, "a line wider than the terminal: " .. line)
      end
      -- No stale copy of the bar was left anywhere on the screen.
      local bars = 0
      for _, line in ipairs(lines) do
        if line:find("^map:") then bars = bars + 1 end
      end
      assert.equal(1, bars)
      assert.equal(width - 1, utf8_length(lines[6]))
    end)
  end

  -- Workers print on the terminal the bar draws on, each line in one
  -- write. A drawing made of several writes (move to the bottom row, the
  -- line, move back) let a worker's line in between: it landed on the bar's
  -- row and was drawn over. strace shows each write of the main process.
  it("draws each state of the bar in one write, so no worker's line lands on the bar's row", function()
    if helpers.run("strace -o /dev/null true") ~= 0 then
      pending("strace cannot trace here")
      return
    end
    local path, trace = write_script(PRINTING), os.tmpname()
    local status = helpers.run(("LANG=C LC_ALL= script -qec 'stty rows 15 cols 100 && "
      .. "strace -qq -e trace=write -e signal=none -s 4096 -o %s %s %s' /dev/null")
      :format(trace, helpers.runner, path))
    local log = helpers.read_file(trace) or ""
    os.remove(path)
    os.remove(trace)
    assert.equal(0, status)
    local drawings = 0
    for text in log:gmatch('write%(2, "(.-)", %d+%)') do
      local saves, restores = text:find("^\\0337") ~= nil, text:find("\\338$") ~= nil
      assert(saves == restores, "a move to the bar's row and back split across writes: " .. text)
      if text:find("map:", 1, true) then
        drawings = drawings + 1
        assert((text:find("^\\0337") or text:find("^\\r")) and text:find("\\33[K", 1, true),
               "a state of the bar split across writes: " .. text)
      end
    end
    assert(drawings >= 2, "the bar was drawn " .. drawings .. " times:\n" .. log)
  end)

  it("follows a resize of the terminal", function()
    local lines = on_screen((PRINTING:gsub("0%.03", "0.06")), 100, 15, function(tmux)
      os.execute("sleep 0.8")
      helpers.run(tmux .. "resize-window -t bar -x 60 -y 12")
    end)
    local final
    for _, line in ipairs(lines) do
      if line:find("^map: 100%%") then final = line end
    end
    assert.truthy(final, table.concat(lines, "\n"))
    assert.equal(59, utf8_length(final))
  end)

  it("refuses a progress option that is not a boolean", function()
    local status, _, err = helpers.run_lua([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(1)
      pool:map(print, {1}, {progress = "yes"})
    ]], helpers.runner)
    assert.equal(1, status)
    assert.matches("bad argument #3 to 'map' %(progress must be a boolean%)", err)
  end)
end)
