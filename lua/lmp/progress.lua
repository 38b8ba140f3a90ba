-- A progress bar on stderr for long maps: done/total, rate, elapsed and
-- ETA on one line redrawn in place. Drawn only when stderr is a terminal.
local core = require "lmp.core"

local progress = {}

local Bar = {}
Bar.__index = Bar

local REDRAW = 0.1 -- seconds between redraws
local WIDTH = 24   -- characters of the bar itself

local function clock(seconds)
  seconds = math.floor(seconds + 0.5)
  if seconds >= 3600 then
    return ("%d:%02d:%02d"):format(seconds // 3600, seconds % 3600 // 60, seconds % 60)
  end
  return ("%d:%02d"):format(seconds // 60, seconds % 60)
end

-- progress.new(label, total) -> bar, or nil when stderr is no terminal.
-- total may be nil (an iterator of unknown length).
function progress.new(label, total)
  if not core.isatty(2) then return nil end
  return setmetatable({label = label, total = total, done = 0,
                       started = core.hrtime(), drawn = 0}, Bar)
end

function Bar:line(now)
  local elapsed = now - self.started
  local rate = elapsed > 0 and self.done / elapsed or 0
  local parts = {self.label}
  if self.total and self.total > 0 then
    local fraction = math.min(1, self.done / self.total)
    local filled = math.floor(fraction * WIDTH + 0.5)
    parts[#parts + 1] = ("[%s%s] %d/%d %3d%%"):format(("#"):rep(filled),
      ("."):rep(WIDTH - filled), self.done, self.total, math.floor(fraction * 100))
  else
    parts[#parts + 1] = ("%d done"):format(self.done)
  end
  parts[#parts + 1] = ("%.0f/s"):format(rate)
  parts[#parts + 1] = "elapsed " .. clock(elapsed)
  if self.total and rate > 0 and self.done < self.total then
    parts[#parts + 1] = "eta " .. clock((self.total - self.done) / rate)
  end
  return table.concat(parts, "  ")
end

function Bar:draw(now)
  -- \r and clear-to-end: the line is redrawn in place.
  io.stderr:write("\r", self:line(now), "\27[K")
  io.stderr:flush()
  self.drawn = now
end

-- Counts n more items done; redraws at most every REDRAW seconds.
function Bar:advance(n)
  if self.finished then return end
  self.done = self.done + n
  local now = core.hrtime()
  if now - self.drawn >= REDRAW or (self.total and self.done >= self.total) then
    self:draw(now)
  end
end

-- Draws the final state and ends the line.
function Bar:finish()
  if self.finished then return end
  self:draw(core.hrtime())
  io.stderr:write("\n")
  io.stderr:flush()
  self.finished = true
end

return progress
