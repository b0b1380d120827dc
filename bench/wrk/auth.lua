-- Shared by post_orders.lua and get_order.lua: every request carries the run's API token (BOOKMARKET_TOKEN, set by
-- bench/common.py's base_env), as wrk.format uses wrk.headers.
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BOOKMARKET_TOKEN") or "")
