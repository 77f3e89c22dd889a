-- wrk script: rotates requests over N signed-in sessions (one per line: "COOKIE CSRF").
-- wrk ... -s web-load.lua URL -- SESSIONS_FILE products|prepare [THINK_MS [PRODUCT VERSION]]
-- THINK_MS > 0: each connection waits a random 0.5-1.5 x THINK_MS between requests, like
-- a person reading the page (wrk's latency excludes that wait). PRODUCT VERSION: what
-- prepare asks for (default alpha 2.1, the test stack's release).
local sessions = {}
local idx = 0
local mode = "products"
local think = 0
local product = "alpha"
local version = "2.1"

function init(args)
  for line in io.lines(args[1]) do
    local c, t = line:match("^(%S+)%s+(%S+)$")
    if c then table.insert(sessions, { c, t }) end
  end
  mode = args[2] or "products"
  think = tonumber(args[3] or "0") or 0
  product = args[4] or product
  version = args[5] or version
  idx = math.random(#sessions)
end

function delay()
  if think <= 0 then return 0 end
  return math.floor(think * (0.5 + math.random()))
end

function request()
  idx = idx + 1
  local s = sessions[(idx % #sessions) + 1]
  local h = { ["Cookie"] = "ffs_session=" .. s[1] }
  if mode == "prepare" then
    h["Content-Type"] = "application/x-www-form-urlencoded"
    return wrk.format("POST", "/prepare", h, "csrf=" .. s[2] .. "&product=" .. product .. "&version=" .. version)
  end
  return wrk.format("GET", "/products", h)
end
