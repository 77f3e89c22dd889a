-- wrk script: rotates requests over N signed-in sessions (one per line: "COOKIE CSRF").
-- wrk ... -s web-load.lua URL -- SESSIONS_FILE products|prepare
local sessions = {}
local idx = 0
local mode = "products"

function init(args)
  for line in io.lines(args[1]) do
    local c, t = line:match("^(%S+)%s+(%S+)$")
    if c then table.insert(sessions, { c, t }) end
  end
  mode = args[2] or "products"
  idx = math.random(#sessions)
end

function request()
  idx = idx + 1
  local s = sessions[(idx % #sessions) + 1]
  local h = { ["Cookie"] = "ffs_session=" .. s[1] }
  if mode == "prepare" then
    h["Content-Type"] = "application/x-www-form-urlencoded"
    return wrk.format("POST", "/prepare", h, "csrf=" .. s[2] .. "&product=alpha&version=2.1")
  end
  return wrk.format("GET", "/products", h)
end
