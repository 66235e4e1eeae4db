-- Store a task's result meta the way Celery's Redis backend does (SETEX, or SET without
-- an expiry, then PUBLISH on the key's channel) unless the stored meta already says
-- SUCCESS (Celery's guard against a late duplicate hiding the outcome, here in the same
-- round trip as the write); then release the leases the task gave up, each with
-- release.lua, which the loader prepends as the function release(KEYS, ARGV).
-- KEYS[1] the result key, then per lease: lease, holder, status hash, active index
-- ARGV[1] the meta (JSON), ARGV[2] seconds to live ('0': none), then per lease:
-- release.lua's ARGV (token, index member, published flag)
-- Returns 1 when the meta was written, 0 when a SUCCESS was kept.
local stored = 0
local current = redis.call('GET', KEYS[1])
local success = false
if current then
  local ok, meta = pcall(cjson.decode, current)
  success = ok and type(meta) == 'table' and meta['status'] == 'SUCCESS'
end
if not success then
  if tonumber(ARGV[2]) > 0 then
    redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
  else
    redis.call('SET', KEYS[1], ARGV[1])
  end
  redis.call('PUBLISH', KEYS[1], ARGV[1])
  stored = 1
end
for i = 0, (#KEYS - 1) / 4 - 1 do
  local k, a = 1 + 4 * i, 2 + 3 * i
  release({KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]},
    {ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]})
end
return stored
