-- wrk script: POST /orders with a JSON body (customer 1..50, book 1, qty 1).
-- wrk -s bench/wrk/post_orders.lua http://127.0.0.1:PORT
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")
dofile(dir .. "auth.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local counter = 0

function request()
   counter = counter + 1
   local body = string.format('{"customer_id": %d, "book_id": 1, "qty": 1}', 1 + counter % 50)
   return wrk.format("POST", "/orders", nil, body)
end
