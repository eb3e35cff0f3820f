-- wrk script: the prototype's 5:3:2 read mix over REST (GetReconciliationStatus : ListOpenPositions :
-- GetGuardStatus), each request for a random benchmark user with that user's own token.
--   TOKENS=tokens.txt wrk -t2 -c100 -d30s --latency -s scripts/wrk-mix.lua http://127.0.0.1:8080
local tokens = {}
local paths = { "/v1/users/me/reconciliationStatus", "/v1/users/me/positions", "/v1/users/me/guardStatus" }

function init(args)
  for line in io.lines(os.getenv("TOKENS")) do
    tokens[#tokens + 1] = "Bearer " .. line
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  local op = math.random(0, 9)
  local path = op < 5 and paths[1] or (op < 8 and paths[2] or paths[3])
  return wrk.format("GET", path, { ["Authorization"] = tokens[math.random(#tokens)] })
end
