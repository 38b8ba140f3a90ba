-- Shared pieces of the peer specs (CPython's multiprocessing and
-- concurrent.futures tests translated to lmp): functions that run in
-- workers and a gate that holds tasks until the test opens it.
local lmp = require "lmp"

local common = {}

-- Sleeps in a worker without burning its CPU, then returns x.
function common.sleepy(x, seconds)
  require("lmp").sleep(seconds or 0)
  return x
end

function common.sqr(x, seconds)
  if seconds then require("lmp").sleep(seconds) end
  return x * x
end

function common.mul(x, y) return x * y end

-- Integer power, as Python's pow on ints.
function common.pow(x, y)
  local r = 1
  for _ = 1, y do r = r * x end
  return r
end

-- A gate is one byte of named shared memory: tasks in pool workers (or
-- lmp.Process children) wait on it until the test opens it. Python's
-- tests hold their tasks on an Event; lmp's Event goes to lmp.Process
-- children only, shared memory goes everywhere.
local Gate = {}
Gate.__index = Gate

function common.gate()
  return setmetatable({shm = lmp.shared_memory.SharedMemory{create = true, size = 1}}, Gate)
end

function Gate:open()
  if not self.closed then self.shm:write(0, "\1") end
end

function Gate:close()
  if self.closed then return end
  self.closed = true
  self.shm:close()
  self.shm:unlink()
end

-- As a to-be-closed variable declared after the executor or pool, a gate
-- opens and goes away before they shut down, even when a test fails
-- half-way: nothing waits on it forever.
function Gate:__close()
  self:open()
  self:close()
end

-- Runs in the worker: waits until the gate is open, then returns value.
function common.wait_gate(shm, value)
  local l = require "lmp"
  while shm:read(0, 1) ~= "\1" do l.sleep(0.002) end
  return value
end

-- The pids of this process's children.
common.children = require("helpers").children

return common
