-- The property test, long: random nested values (shared references,
-- cycles, metatables, closures sharing upvalues, every kind of number and
-- string) through pool:apply, pool:map and an lmp.Queue, each checked
-- where it arrives and when it comes back.
--   build/bin/lmp tests/soak/values.lua [seconds [seed]]
-- (LMP_SEED=seed reruns a failure; run from the repository's root, with
-- tests/ on LUA_PATH: see README "Checks").
local lmp = require "lmp"
local contract = require "contract"

local seconds = tonumber(arg[1]) or tonumber(os.getenv("LMP_PROPERTY_SECONDS")) or 600
local seed = tonumber(arg[2]) or tonumber(os.getenv("LMP_SEED")) or os.time()
for _, method in ipairs{"spawn", "fork"} do
  local pool <close> = lmp.Pool{processes = 2, start_method = method}
  print(("values soak: %s pool, %d s, LMP_SEED=%d"):format(method, seconds // 2, seed))
  local started = os.time()
  local ok, values, rounds = pcall(contract.run_property, lmp, {pool = pool, seed = seed,
    seconds = seconds // 2, log = function(round, values)
      if round % 10000 == 0 then
        io.write(("  %d rounds, %d values, %d s\n"):format(round, values, os.time() - started))
        io.flush()
      end
    end})
  if not ok then
    print(values)
    print("values soak: FAIL")
    os.exit(1)
  end
  print(("  %d values in %d rounds, all equal on arrival and back"):format(values, rounds))
end
print("values soak: PASS")
