-- Index one page of entries that have no index entry yet (written by an earlier version).
-- KEYS stream, due, events; ARGV start, count. Atomic per page, so a replica acting on the
-- same entries meanwhile cannot leave an index entry behind for a deleted letter.
-- Returns {last id read ('' at the end), how many were indexed}.
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local added = 0
for _, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  local m = member(id)
  if not redis.call('ZSCORE', KEYS[2], m) then
    local due, event = '0', nil
    for f = 1, #fields, 2 do
      if fields[f] == 'due' then due = fields[f + 1] end
      if fields[f] == 'event' then event = fields[f + 1] end
    end
    local number = tonumber(due)
    if not number or number ~= number then due = '0' end
    redis.call('ZADD', KEYS[2], due, m)
    if event then
      local ok, decoded = pcall(cjson.decode, event)
      if ok and type(decoded) == 'table' and type(decoded['event_id']) == 'string' then
        redis.call('HSETNX', KEYS[3], decoded['event_id'], id)
      end
    end
    added = added + 1
  end
end
if #entries == 0 then return {'', added} end
return {entries[#entries][1], added}
