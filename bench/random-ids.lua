-- wrk script: GET a random product from the hot set (P0000001 .. P<HOT>), optionally
-- a batch of BATCH random ids. Settings come from the environment.
local hot = tonumber(os.getenv("HOT") or "10000")
local batch = tonumber(os.getenv("BATCH") or "0")
local prefix = os.getenv("PREFIX") or "/products/"
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))

request = function()
  if batch > 0 then
    local ids = {}
    for i = 1, batch do ids[i] = string.format("P%07d", math.random(1, hot)) end
    return wrk.format("GET", "/products?ids=" .. table.concat(ids, ","))
  end
  return wrk.format("GET", string.format("%sP%07d", prefix, math.random(1, hot)))
end
