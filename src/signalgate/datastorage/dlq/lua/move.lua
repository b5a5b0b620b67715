-- Reschedule letters (target = the stream again) or bury them (target = the dead stream).
-- KEYS stream, target, due, events; ARGV reason, then (stream id, event id, attempts, due)
-- per letter. The new entry keeps the old entry's `event` field byte for byte, so a letter
-- buried because it cannot be read is kept as it was for a person to look at. Like ack: the
-- old entry is deleted first and the letter moves only if it was still there.
local moved = 0
for i = 2, #ARGV, 4 do
  local id, event_id = ARGV[i], ARGV[i + 1]
  local entry = redis.call('XRANGE', KEYS[1], id, id)
  if #entry == 1 and redis.call('XDEL', KEYS[1], id) == 1 then
    local event = ''
    local fields = entry[1][2]
    for f = 1, #fields, 2 do
      if fields[f] == 'event' then event = fields[f + 1] end
    end
    redis.call('ZREM', KEYS[3], member(id))
    local new = redis.call('XADD', KEYS[2], '*', 'event', event, 'attempts', ARGV[i + 2],
                           'due', ARGV[i + 3], 'reason', ARGV[1])
    local held = redis.call('HGET', KEYS[4], event_id) == id
    if KEYS[2] == KEYS[1] then
      redis.call('ZADD', KEYS[3], ARGV[i + 3], member(new))
      if held then redis.call('HSET', KEYS[4], event_id, new) end
    elseif held then
      redis.call('HDEL', KEYS[4], event_id)
    end
    moved = moved + 1
  end
end
return moved
