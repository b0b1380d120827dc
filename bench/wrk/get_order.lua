-- wrk script: GET /orders/<id> for ids spread over FIRST..LAST (existing orders).
-- wrk -s bench/wrk/get_order.lua http://127.0.0.1:PORT -- FIRST LAST
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")
dofile(dir .. "auth.lua")

local first, last = 1, 1

function init(args)
   first = tonumber(args[1] or "1")
   last = tonumber(args[2] or tostring(first))
   math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
   return wrk.format("GET", "/orders/" .. math.random(first, last))
end
