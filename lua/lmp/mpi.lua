-- The MPI transport's Lua side (the C side, runtime/mpi.c, is built with
-- `make MPI=1`). Under mpiexec the runner calls enter() before the script:
-- rank 0 goes on to run the script, with pools whose workers are the other
-- ranks; every other rank serves as a worker until the job ends.
local core = require "lmp.core"
local workers = require "lmp.workers"

local mpi = {rank = nil, size = nil}

-- Whether this process was started by an MPI launcher (Open MPI, MPICH's
-- Hydra, PMIx under Slurm).
local function launched_by_mpi()
  for _, name in ipairs {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"} do
    if os.getenv(name) then return true end
  end
  return false
end

-- Whether this build has the MPI transport.
function mpi.available()
  return core.mpi_init ~= nil
end

-- Joins the MPI job when there is one. Returns true on a worker rank once
-- the job has ended (the runner then exits without running the script).
function mpi.enter()
  if not mpi.available() or not launched_by_mpi() or os.getenv("LMP_NO_MPI") then
    return false
  end
  mpi.rank, mpi.size = core.mpi_init()
  if mpi.rank ~= 0 then
    local exe = workers.executable()
    core.mpi_serve {exe, core.worker_flag, tostring(core.getpid())}
    return true
  end
  if mpi.size > 1 then
    -- The worker ranks, as a transport under the pool's scheduler.
    workers.register_transport("mpi", function(on_message, on_exit)
      return core.mpi_start(on_message, on_exit)
    end)
    require("lmp.pool").settings.start_method = "mpi"
  end
  return false
end

-- Whether pools can have MPI workers: this is rank 0 of a job of two or
-- more ranks.
function mpi.active()
  return mpi.rank == 0 and mpi.size > 1
end

-- How many worker ranks no pool holds now.
function mpi.free_ranks()
  if not mpi.active() then return 0 end
  return core.mpi_free_ranks()
end

return mpi
