-- wrk script: 50% GET / 50% PUT of 256-byte values over 10,000 keys (the cluster issue's mix).
-- Writes go to the `sessions` bucket (last-write-wins in `quorumkv dev`), so blind writes
-- replace each other instead of piling up siblings. Set PRELOAD=1 to write the keys in order
-- instead (run it first, so that GETs find their keys; with one thread, `-t1`, each key is
-- written exactly once and then the thread only reads). KEYS sets the key count.
-- Usage: wrk -t2 -c64 -d20s --latency -s scripts/wrk-mixed.lua http://127.0.0.1:8101
local value = string.rep("v", 256)
local keys = tonumber(os.getenv("KEYS") or "10000")
local headers = { ["Content-Type"] = "application/octet-stream" }
local preload = os.getenv("PRELOAD") == "1"
local next_key = 0

init = function(args)
  -- Each thread's Lua state starts with the same seed; give each its own sequence.
  local address = tonumber(tostring({}):match("0x(%x+)"), 16) or 0
  math.randomseed(os.time() + address % 1000003)
end

request = function()
  if preload then
    next_key = next_key + 1
    if next_key <= keys then
      return wrk.format("PUT", "/kv/sessions/k" .. next_key, headers, value)
    end
    return wrk.format("GET", "/kv/sessions/k" .. math.random(1, keys))
  end
  local path = "/kv/sessions/k" .. math.random(1, keys)
  if math.random() < 0.5 then
    return wrk.format("GET", path)
  end
  return wrk.format("PUT", path, headers, value)
end
