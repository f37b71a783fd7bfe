-- wrk script for the soak (test/soak/soak.sh): a varied mix of paths, methods, tenants and
-- headers against test/app.py's endpoints, so one wrk run walks through most of sluice's
-- request paths (admitted, rate-limited, queued, bypass route, capped route, bodies in and
-- out, 2xx/3xx/4xx/5xx from the backend, big heads).
--
--   wrk -t1 -c16 -d600s --timeout 10s -s test/soak/mixed.lua http://127.0.0.1:PORT/
--   wrk ... -s test/soak/mixed.lua http://127.0.0.1:PORT/ -- close   (Connection: close)
--
-- At the end it prints one line "soak-lua status 200=N 429=N ..." with the responses by
-- status over all threads (wrk's own summary counts only non-2xx/3xx).

local threads = {}
local close = false
counts = {}  -- global: done() reads it from each thread with thread:get
local serial = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  close = args[1] == "close"
  -- a different sequence per thread and run
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

local tenants = {
  {w = 40, v = "gold"},
  {w = 15, v = nil},        -- no X-Tenant: tenant default
  {w = 15, v = "bronze"},   -- a low rate: many 429 rate / tenant-queue
  {w = 20, v = "unnamed"},  -- a random unnamed key: its own limiter with default's limits
  {w = 5,  v = "silver"},   -- named only in the second configuration
  {w = 5,  v = "GOLD"},     -- names match case-insensitively
}

local function pick(list)
  local total = 0
  for _, e in ipairs(list) do total = total + e.w end
  local r = math.random(total)
  for _, e in ipairs(list) do
    r = r - e.w
    if r <= 0 then return e end
  end
  return list[#list]
end

local pad4k = string.rep("p", 4000)
local bodies = {}
for _, n in ipairs({16, 700, 3000, 9000, 40000}) do
  bodies[#bodies + 1] = string.rep("b", n)
end

-- {weight, method, path (function or string), body?, extra headers?}
local reqs = {
  {w = 20, m = "GET", p = "/"},
  {w = 10, m = "GET", p = function() return "/echo?i=" .. serial end},
  {w = 8,  m = "POST", p = "/echo", body = true},
  {w = 4,  m = "PUT", p = "/upload", body = true},
  {w = 5,  m = "GET", p = "/bytes?n=65536"},
  {w = 3,  m = "GET", p = "/bytes?n=300000&cl=1"},
  {w = 1,  m = "GET", p = "/bytes?n=2000000"},
  {w = 3,  m = "GET", p = "/status/404"},
  {w = 2,  m = "GET", p = "/status/500"},
  {w = 2,  m = "GET", p = "/status/204"},
  {w = 1,  m = "GET", p = "/status/503"},
  {w = 3,  m = "GET", p = function() return "/slow?ms=" .. math.random(5, 40) end},
  {w = 5,  m = "GET", p = "/health"},
  {w = 2,  m = "GET", p = "/redirect"},
  {w = 2,  m = "GET", p = "/cookie"},
  {w = 5,  m = "GET", p = function() return "/concurrent?ms=" .. math.random(1, 10) end},
  {w = 2,  m = "GET", p = "/api/v1/chart/data?q=" .. string.rep("x", 2000)},
  {w = 2,  m = "GET", p = "/echo", hdr = {["X-Pad"] = pad4k, ["X-Pad-2"] = pad4k}},
  {w = 2,  m = "DELETE", p = "/echo?del=1"},
  {w = 1,  m = "OPTIONS", p = "/echo"},
}

request = function()
  serial = serial + 1
  local r = pick(reqs)
  local path = type(r.p) == "function" and r.p() or r.p
  local headers = {}
  local t = pick(tenants).v
  if t == "unnamed" then
    headers["X-Tenant"] = "u" .. math.random(1, 3000)
  elseif t then
    headers["X-Tenant"] = t
  end
  if math.random(10) == 1 then
    headers["X-Request-ID"] = "soak-" .. serial .. "-" .. math.random(1000000)
  end
  if math.random(8) == 1 then
    headers["Cookie"] = "session=" .. math.random(1000000) .. "; theme=dark"
  end
  if math.random(6) == 1 then
    headers["X-Forwarded-For"] = "10.0." .. math.random(0, 255) .. "." .. math.random(1, 254)
  end
  if r.hdr then
    for k, v in pairs(r.hdr) do headers[k] = v end
  end
  if close then headers["Connection"] = "close" end
  local body = nil
  if r.body then
    body = bodies[math.random(#bodies)]
    headers["Content-Type"] = "application/octet-stream"
  end
  return wrk.format(r.m, path, headers, body)
end

response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    if c then
      for k, v in pairs(c) do all[k] = (all[k] or 0) + v end
    end
  end
  local keys = {}
  for k in pairs(all) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. all[k] end
  io.write("soak-lua status " .. table.concat(out, " ") .. "\n")
end
