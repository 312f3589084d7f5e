-- wrk request script for load-tests/edge.sh: one POST, body and headers
-- from the environment (WRK_BODY, WRK_KEY, WRK_CHUNKS). No per-request Lua
-- (no `request` function), so wrk's own cost stays that of a static request.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer " .. os.getenv("WRK_KEY")
local chunks = os.getenv("WRK_CHUNKS")
if chunks and chunks ~= "" then
  wrk.headers["x-mock-chunks"] = chunks
end
