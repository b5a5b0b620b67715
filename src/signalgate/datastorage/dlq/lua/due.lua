-- The letters due by now. KEYS stream, due; ARGV now, limit.
-- Returns {stream length, index size, entries}. An index member whose entry is gone (deleted
-- by a version that kept no index) is dropped.
local found = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local id = stream_id(m)
  local entry = redis.call('XRANGE', KEYS[1], id, id)
  if #entry == 0 then
    redis.call('ZREM', KEYS[2], m)
  else
    found[#found + 1] = entry[1]
  end
end
return {redis.call('XLEN', KEYS[1]), redis.call('ZCARD', KEYS[2]), found}
