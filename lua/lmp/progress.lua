-- Progress bars for long calls, drawn on stderr as tqdm draws them:
--
--   map:  45%|███████████▋              | 45/100 [00:02<00:03, 21.30it/s]
--
-- The bar fits the terminal's width, read at every redraw so that it
-- follows a resize; it shows 0/N as soon as the call starts, a rate in
-- it/s or s/it (slow tasks), the elapsed time and the time left; its last
-- state stays as a line of its own when the call ends. While a bar is up,
-- the terminal's bottom row is kept for it (a scroll region): whatever the
-- script or its workers print scrolls above the bar instead of landing on
-- it. Nothing is drawn when stderr is not a terminal.
local core = require "lmp.core"

local progress = {}

local Bar = {}
Bar.__index = Bar

local FD = 2         -- stderr
local REDRAW = 0.1   -- seconds between redraws
local live = 0       -- bars not yet finished
local region = nil   -- rows of the terminal when the region was set

local function utf8_terminal()
  for _, name in ipairs{"LC_ALL", "LC_CTYPE", "LANG"} do
    local value = os.getenv(name)
    if value and value ~= "" then return value:upper():find("UTF%-?8") ~= nil end
  end
  return false
end
local UTF8 = utf8_terminal()
-- Eighths of a cell, for a smooth bar on terminals that can show them.
local PARTIAL = {"▏", "▎", "▍", "▌", "▋", "▊", "▉"}

local function clock(seconds)
  seconds = math.floor(seconds + 0.5)
  if seconds >= 3600 then
    return ("%d:%02d:%02d"):format(seconds // 3600, seconds % 3600 // 60, seconds % 60)
  end
  return ("%02d:%02d"):format(seconds // 60, seconds % 60)
end

local function rate_text(done, elapsed)
  if done == 0 or elapsed <= 0 then return "?it/s" end
  local rate = done / elapsed
  if rate < 1 then return ("%.2fs/it"):format(1 / rate) end
  if rate < 100 then return ("%.2fit/s"):format(rate) end
  return ("%.0fit/s"):format(rate)
end

local function bar_cells(fraction, width)
  if not UTF8 then
    local filled = math.floor(fraction * width)
    return ("#"):rep(filled) .. (" "):rep(width - filled)
  end
  local eighths = math.floor(fraction * width * 8)
  local full, part = eighths // 8, eighths % 8
  local cells = ("█"):rep(full)
  if full < width then
    cells = cells .. (part > 0 and PARTIAL[part] or " ") .. (" "):rep(width - full - 1)
  end
  return cells
end

-- The bar's line for a terminal `columns` wide (one column is left free:
-- writing the last one makes some terminals wrap).
function Bar:line(columns)
  local elapsed = core.hrtime() - self.started
  local done, total = self.done, self.total
  local rate = rate_text(done, elapsed)
  local room = math.max(columns - 1, 1)
  if not total then
    return (("%s: %d [%s, %s]"):format(self.label, done, clock(elapsed), rate)):sub(1, room)
  end
  local fraction = total > 0 and math.min(1, done / total) or 1
  local left_time = "?"
  if done >= total then
    left_time = clock(0)
  elseif done > 0 then
    left_time = clock((total - done) * elapsed / done)
  end
  local left = ("%s: %3d%%|"):format(self.label, math.floor(fraction * 100))
  local right = ("| %d/%d [%s<%s, %s]"):format(done, total, clock(elapsed), left_time, rate)
  local width = room - #left - #right
  if width >= 4 then return left .. bar_cells(fraction, width) .. right end
  return (left:sub(1, -2) .. " " .. right:sub(3)):sub(1, room)
end

-- Writes one drawing to the terminal in one write(2). stderr is
-- unbuffered: io.stderr:write(a, b, c) makes a write for each argument, and
-- a worker's line printed between them (after the cursor moved to the
-- bottom row, before it moved back) landed on the bar's row, where the bar
-- overwrote it. The terminal takes each write whole.
local function emit(...)
  io.stderr:write(table.concat({...}))
  io.stderr:flush()
end

-- Keeps the bottom row for the bars: a new line first, then back up one,
-- so that the cursor stays inside the rows that scroll.
local function reserve_bottom_row(rows)
  emit("\n\27[1A")
  if core.terminal_region(FD, rows) then region = rows end
end

local function release_bottom_row()
  if not region then return end
  -- Clear the bar's row, then give the whole terminal back.
  emit("\0277\27[", region, ";1H\27[2K\0278")
  core.terminal_region(FD, nil)
  region = nil
end

-- The terminal's size; a terminal that does not say (a pseudo-terminal
-- made without one) is taken as 80 columns, with no region.
local function terminal_size()
  local columns, rows = core.terminal_size(FD)
  if not columns then return 80, 0 end
  return columns, rows
end

function Bar:draw()
  local columns, rows = terminal_size()
  if rows ~= region then
    release_bottom_row() -- resized: the region must match the new height
    if rows >= 3 then reserve_bottom_row(rows) end
  end
  local line = self:line(columns)
  if region then
    -- Save the cursor, draw on the bottom row, put the cursor back.
    emit("\0277\27[", region, ";1H", line, "\27[K\0278")
  else
    emit("\r", line, "\27[K")
  end
  self.drawn = core.hrtime()
end

-- progress.new(label, total) -> a bar, drawn at once at 0, or nil when
-- stderr is no terminal. total may be nil (an iterator of unknown length)
-- and set later (bar.total = n).
function progress.new(label, total)
  if not core.isatty(FD) then return nil end
  local bar = setmetatable({label = label, total = total, done = 0,
                            started = core.hrtime(), drawn = 0}, Bar)
  live = live + 1
  bar:draw()
  return bar
end

-- Counts n more items done; redraws at most every REDRAW seconds.
function Bar:advance(n)
  if self.finished then return end
  self.done = self.done + n
  local now = core.hrtime()
  if now - self.drawn >= REDRAW or (self.total and self.done >= self.total) then
    self:draw()
  end
end

-- Ends the bar: its last state stays as a line of its own, above where
-- output goes on; the bottom row is given back with the last bar.
function Bar:finish()
  if self.finished then return end
  self.finished = true
  live = live - 1
  if live == 0 then release_bottom_row() end
  emit("\r", self:line((terminal_size())), "\27[K\n")
end

return progress
